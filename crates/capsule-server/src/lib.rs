//! The Capsule server's front doors. Each parses and validates at the edge
//! and calls the engine; no business rule lives here.

mod health;
mod rpc;
mod terminal;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use capsule_engine::Engine;

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The largest request body `/rpc` accepts.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            // A 64 MiB file as base64 plus the envelope.
            max_body_bytes: 96 << 20,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<ServerConfig>,
}

/// The application: every route of the server.
pub fn app(engine: Arc<Engine>, config: ServerConfig) -> Router {
    let state = AppState {
        engine,
        config: Arc::new(config),
    };
    Router::new()
        .route("/rpc", post(rpc::handle))
        .route("/terminal/{id}", get(terminal::handle))
        .route("/health", get(health::handle))
        .with_state(state)
}

/// True for addresses only this machine can reach.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

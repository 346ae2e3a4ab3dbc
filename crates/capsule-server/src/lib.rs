//! The Capsule server's front doors. Each parses and validates at the edge
//! and calls the engine; no business rule lives here.

mod auth;
mod e2b;
mod guard;
mod health;
pub mod mcp;
mod rpc;
mod terminal;

/// The parsers of request input, for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::auth::presented_key;
    pub use crate::e2b::{metadata_filter, query_pairs, signed_query};
}

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
    /// Accept any `Host` header at `/mcp` (the server is reachable under
    /// other names); otherwise only local names, against DNS rebinding.
    pub any_host: bool,
    /// Browser origins allowed besides the server's own (and local ones on
    /// loopback); see `guard.rs`.
    pub allowed_origins: Vec<String>,
    /// Cancelled when the server shuts down, to end long-lived streams.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            // A 64 MiB file as base64 plus the envelope.
            max_body_bytes: 96 << 20,
            any_host: false,
            allowed_origins: Vec::new(),
            shutdown: tokio_util::sync::CancellationToken::new(),
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
    let mcp = mcp::http_service(
        state.clone(),
        state.config.shutdown.child_token(),
        state.config.any_host,
    );
    Router::new()
        .route_service("/mcp", mcp)
        .layer(axum::middleware::map_response(mcp::session_deleted))
        .route("/rpc", post(rpc::handle))
        .route("/terminal/{id}", get(terminal::handle))
        .route("/health", get(health::handle))
        .merge(e2b::routes())
        .fallback(e2b::no_route)
        .method_not_allowed_fallback(e2b::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        // In-sandbox traffic is authenticated by each sandbox's own tokens.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            e2b::intercept,
        ))
        // Outermost: DNS rebinding and cross-site requests never get in.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::browser_guard,
        ))
        .with_state(state)
}

/// True for addresses only this machine can reach.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

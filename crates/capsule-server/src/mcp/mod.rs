//! The MCP front door: Capsule's sandboxes as Model Context Protocol tools,
//! resources and prompts, for agents that speak MCP (Claude Code, Claude
//! Desktop, Cursor, ...).
//!
//! Served as streamable HTTP at `/mcp` on the server, and over stdio by
//! `capsule mcp`. Either way the tools make the same JSON-RPC calls as every
//! other client, through a [`Backend`]: in process on the server, over HTTP
//! when `capsule mcp` talks to a running server.

mod tools;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capsule_api::ApiError;
use capsule_engine::Principal;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use tools::{Caller, CapsuleMcp};

use crate::AppState;

/// Where the tools send their calls: `sandbox.v1.*` method and params in,
/// result or error out.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Calls `method` as `who` (a remote backend acts as its own API key,
    /// whatever `who` says).
    async fn call(&self, who: &Principal, method: &str, params: Value) -> Result<Value, ApiError>;
}

/// The server's own engine, called in process.
pub struct LocalBackend {
    state: AppState,
}

impl LocalBackend {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }

    /// A backend over `engine` alone (for `capsule mcp` with an embedded engine).
    pub fn for_engine(engine: Arc<capsule_engine::Engine>, config: crate::ServerConfig) -> Self {
        Self::new(AppState {
            engine,
            config: Arc::new(config),
        })
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn call(&self, who: &Principal, method: &str, params: Value) -> Result<Value, ApiError> {
        crate::rpc::dispatch(&self.state, who, method, params).await
    }
}

/// How long an MCP session may stay silent before it ends (and its default
/// sandbox with it). Longer than the longest command, which sends nothing
/// while it runs unless the client asked for progress.
const SESSION_IDLE: Duration = Duration::from_secs(65 * 60);

/// Resolves at SIGTERM, SIGINT or SIGHUP. The handlers stay installed, so
/// signals that follow while the session cleans up are absorbed.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        // Without handlers the default actions apply; wait forever.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}

/// The streamable HTTP service mounted at `/mcp`.
pub(crate) fn http_service(
    state: AppState,
    shutdown: CancellationToken,
    any_host: bool,
) -> StreamableHttpService<CapsuleMcp, LocalSessionManager> {
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(SESSION_IDLE);
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(state.config.max_body_bytes);
    if any_host {
        // Served beyond loopback (behind API keys): any Host header is fine.
        // On loopback only local names are, which defeats DNS rebinding.
        config = config.disable_allowed_hosts();
    }
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(state));
    StreamableHttpService::new(
        move || Ok(CapsuleMcp::new(backend.clone(), None)),
        Arc::new(sessions),
        config,
    )
}

/// Ending a session answers 200 (rmcp says 202 Accepted, which clients
/// such as the Python SDK report as a failed termination).
pub(crate) async fn session_deleted(
    method: axum::http::Method,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    if method == axum::http::Method::DELETE && resp.status() == axum::http::StatusCode::ACCEPTED {
        *resp.status_mut() = axum::http::StatusCode::OK;
    }
    resp
}

/// Serves MCP over standard input and output until the client closes
/// them; the session's default sandbox is deleted before this returns.
pub async fn serve_stdio(backend: Arc<dyn Backend>, caller: Caller) -> Result<(), String> {
    let handler = CapsuleMcp::new(backend, Some(caller));
    let session = handler.session();
    let result = match handler.serve(rmcp::transport::stdio()).await {
        Ok(running) => {
            // Clients end a stdio server by closing its input and, two
            // seconds later, with SIGTERM: either way the session ends
            // here and its sandboxes go with it (with the default action
            // the process would die with its sandboxes still running).
            let cancel = running.cancellation_token();
            let mut waiting = std::pin::pin!(running.waiting());
            tokio::select! {
                done = &mut waiting => done
                    .map(|_| ())
                    .map_err(|e| format!("the MCP session failed: {e}")),
                () = termination() => {
                    cancel.cancel();
                    let _ = waiting.await;
                    Ok(())
                }
            }
        }
        Err(e) => Err(format!(
            "the MCP client did not initialize the session: {e}"
        )),
    };
    session.end().await;
    result
}

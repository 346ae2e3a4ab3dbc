//! `capsule mcp`: the Model Context Protocol over stdio, for MCP clients
//! that start their servers as commands. With `--url` it works through
//! that Capsule server; otherwise it runs an embedded engine for the
//! session, whose sandboxes end with it.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use capsule_api::{ApiError, ErrorKind};
use capsule_engine::Principal;
use capsule_server::ServerConfig;
use capsule_server::mcp::{Backend, Caller, LocalBackend, serve_stdio};
use serde_json::{Value, json};

use super::serve::{default_state_dir, init_logging, start_engine};
use crate::args::McpArgs;
use crate::client::{CallError, Client};

/// A running Capsule server, over its JSON-RPC API.
struct RemoteBackend(Client);

#[async_trait]
impl Backend for RemoteBackend {
    async fn call(&self, _who: &Principal, method: &str, params: Value) -> Result<Value, ApiError> {
        self.0
            .call::<Value>(method, params)
            .await
            .map_err(|e| match e {
                CallError::Api(api) => api,
                CallError::Other(other) => ApiError::new(ErrorKind::Unavailable, other.to_string()),
            })
    }
}

pub async fn run(
    url: Option<&str>,
    api_key: Option<String>,
    a: McpArgs,
) -> anyhow::Result<ExitCode> {
    // Standard output carries the protocol: logs go to standard error.
    init_logging("text", "warn");
    let caller = Caller::new(api_key.as_deref(), a.user.as_deref(), a.group.as_deref());
    match url {
        Some(url) => {
            let client = Client::new(url, api_key)?;
            // Fail now, with a clear message, rather than on the first tool call.
            client
                .call::<Value>("sandbox.v1.templates", json!({}))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            serve_stdio(Arc::new(RemoteBackend(client)), caller)
                .await
                .map_err(|e| anyhow!(e))?;
        }
        None => {
            let root = a.engine.state_dir.clone().unwrap_or_else(default_state_dir);
            std::fs::create_dir_all(&root)
                .with_context(|| format!("cannot create {}", root.display()))?;
            let dir = tempfile::Builder::new()
                .prefix("mcp-")
                .tempdir_in(&root)
                .with_context(|| {
                    format!("cannot make a session directory in {}", root.display())
                })?;
            // Sandbox processes run as other ids and must reach their files.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            let (engine, lock) = start_engine(&a.engine, dir.path(), Vec::new(), None).await?;
            let backend = Arc::new(LocalBackend::for_engine(
                engine.clone(),
                ServerConfig::default(),
            ));
            let result = serve_stdio(backend, caller).await;
            // Nothing of an embedded session outlives it.
            engine.shutdown_destroying_all().await;
            drop(lock);
            if let Err(e) = dir.close() {
                tracing::warn!("removing the session directory failed: {e}");
            }
            result.map_err(|e| anyhow!(e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The boundary between the engine and whatever isolates a sandbox.
//!
//! A backend's whole job: start a sandbox with the agent inside, hand over a
//! connection to that agent, notice when it dies, and stop it (later: pause
//! and snapshot). Exec, files and terminals never go through backend code;
//! they talk to the agent. New operations get a default that answers
//! "unsupported by this backend", so backends grow independently.

pub mod native;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use capsule_api::SandboxId;
use capsule_protocol::client::AgentClient;
use serde::{Deserialize, Serialize};

/// What a template asks of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateSpec {
    pub name: String,
    pub description: String,
    /// Environment every process in the sandbox starts with.
    pub env: BTreeMap<String, String>,
    /// Programs that must exist for the template to work (e.g. `python3`).
    pub requires: Vec<String>,
    /// Host directories bound read-only at the same path, beyond the
    /// system directories every sandbox gets.
    pub extra_binds: Vec<PathBuf>,
}

/// Everything a backend needs to start one sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub template: TemplateSpec,
    /// The environment processes start with (template env, then create env).
    pub env: BTreeMap<String, String>,
    pub cpu: f64,
    pub memory_mb: u64,
    pub pids: u64,
}

/// Why the sandbox's init is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReason(pub String);

/// A future that completes when the sandbox's init process ends.
pub type ExitFuture = Pin<Box<dyn Future<Output = ExitReason> + Send>>;

/// A running sandbox as the engine holds it.
pub struct Attached {
    pub agent: AgentClient,
    pub exited: ExitFuture,
}

/// Resource use of a sandbox; `None` where the backend cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_ns: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub disk_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The host cannot run this sandbox (a template's program is missing, a
    /// limit cannot be applied).
    #[error("{0}")]
    Unavailable(String),
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        operation: &'static str,
        backend: &'static str,
    },
    #[error("sandbox {id} failed to start: {reason}")]
    StartFailed { id: SandboxId, reason: String },
    #[error("{context}")]
    Sys {
        context: String,
        #[source]
        source: capsule_sys::SysError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn sys(context: impl Into<String>, source: capsule_sys::SysError) -> Self {
        RuntimeError::Sys {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// An isolation backend.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// A short name (`native`, `oci`).
    fn name(&self) -> &'static str;

    /// Things the operator should know about how this host runs sandboxes
    /// (degraded isolation, missing limits), said once at start.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Ok when this host can serve `template`, else the reason.
    fn check_template(&self, template: &TemplateSpec) -> std::result::Result<(), String>;

    /// Starts a sandbox and returns once its agent accepts connections.
    async fn create(&self, spec: &SandboxSpec) -> Result<Attached>;

    /// Finds a sandbox that survived a restart of the server. `None` when it
    /// is gone (or cannot be trusted); the caller then destroys what is left.
    async fn attach(&self, id: SandboxId) -> Result<Option<Attached>>;

    /// Stops a sandbox and removes everything it held on the host. Succeeds
    /// when there was nothing left to remove.
    async fn destroy(&self, id: SandboxId) -> Result<()>;

    /// Ids of sandboxes that still hold something on the host.
    fn leftovers(&self) -> Vec<SandboxId>;

    async fn usage(&self, _id: SandboxId) -> Result<Usage> {
        Err(RuntimeError::Unsupported {
            operation: "usage",
            backend: self.name(),
        })
    }

    /// Bytes free for sandboxes' files, when the backend can tell.
    fn disk_capacity(&self) -> Option<u64> {
        None
    }

    /// Releases what the backend holds for itself (not the sandboxes, which
    /// keep running) before the server exits.
    async fn shutdown(&self) {}

    async fn pause(&self, _id: SandboxId) -> Result<()> {
        Err(RuntimeError::Unsupported {
            operation: "pause",
            backend: self.name(),
        })
    }

    async fn resume(&self, _id: SandboxId) -> Result<()> {
        Err(RuntimeError::Unsupported {
            operation: "resume",
            backend: self.name(),
        })
    }
}

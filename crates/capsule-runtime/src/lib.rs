//! The boundary between the engine and whatever isolates a sandbox.
//!
//! A backend's whole job: start a sandbox with the agent inside, hand over a
//! connection to that agent, notice when it dies, and stop it (later: pause
//! and snapshot). Exec, files and terminals never go through backend code;
//! they talk to the agent. New operations get a default that answers
//! "unsupported by this backend", so backends grow independently.

pub mod multi;
pub mod native;
pub mod oci;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use capsule_api::SandboxId;
use capsule_protocol::client::AgentClient;
use serde::{Deserialize, Serialize};

/// What a template asks of a backend.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    /// Disk limit of the sandbox's writable layer, in MiB, where the
    /// backend can enforce one.
    pub disk_mb: Option<u64>,
    /// Start from this snapshot's files (see [`Runtime::snapshot`]).
    pub snapshot: Option<String>,
    /// Volumes to mount (see [`Runtime::create_volume`]).
    pub volumes: Vec<VolumeSpec>,
    /// A way out to the network; `None`: loopback only.
    pub network: Option<NetworkSpec>,
    /// The backend to run it with (see [`multi::Runtimes`]); `None`: the
    /// server's default.
    pub runtime: Option<String>,
    /// Made ahead of demand (a warm pool's): it runs at the lowest CPU
    /// priority the backend has until [`Runtime::set_foreground`], so that
    /// making it never slows a sandbox in use.
    pub background: bool,
}

impl SandboxSpec {
    /// A spec with the defaults every field but these has.
    pub fn new(id: SandboxId, template: TemplateSpec) -> Self {
        Self {
            id,
            template,
            env: BTreeMap::new(),
            cpu: 1.0,
            memory_mb: 512,
            pids: 256,
            disk_mb: None,
            snapshot: None,
            volumes: Vec::new(),
            network: None,
            runtime: None,
            background: false,
        }
    }
}

/// Sizes of a sandbox's `/tmp` and `/dev/shm` (in that order) for
/// `memory_bytes` of memory and a `/tmp` of at most `tmp_cap`. Together they
/// hold half the memory at most: tmpfs pages count against the sandbox's
/// memory and cannot be reclaimed, so full ones must leave room for the
/// agent (or the out-of-memory killer ends the sandbox).
pub(crate) fn tmpfs_sizes(memory_bytes: u64, tmp_cap: u64) -> (u64, u64) {
    let shm = (64u64 << 20).min(memory_bytes / 8).max(4 << 20);
    let tmp = tmp_cap
        .min((memory_bytes / 2).saturating_sub(shm))
        .max(8 << 20);
    (tmp, shm)
}

#[cfg(test)]
mod tmpfs_tests {
    #[test]
    fn tmp_and_shm_together_stay_within_half_the_memory() {
        for mb in [128u64, 256, 512, 4096] {
            let mem = mb << 20;
            let (tmp, shm) = super::tmpfs_sizes(mem, 1 << 30);
            assert!(tmp + shm <= mem / 2, "{mb} MiB: {tmp} + {shm}");
            assert!(shm >= 4 << 20 && tmp >= 8 << 20);
        }
        // The cap wins when it is the smaller.
        assert_eq!(super::tmpfs_sizes(4096 << 20, 64 << 20).0, 64 << 20);
    }
}

// ---- network (see docs/network.md) ----

/// Egress through Capsule's proxy: the sandbox reaches the destinations of
/// `allow` over HTTP(S) through a proxy the backend runs on the host side,
/// and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Host names, `*.suffix` wildcards and CIDRs, checked by the engine.
    pub allow: Vec<String>,
    /// Headers the proxy adds to requests for a host.
    #[serde(default)]
    pub secrets: Vec<SecretHeader>,
}

/// A header added by the proxy to every request for `host`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHeader {
    pub host: String,
    pub header: String,
    pub value: String,
}

impl std::fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is a credential: never in logs.
        f.debug_struct("SecretHeader")
            .field("host", &self.host)
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

// ---- end network ----

/// A volume mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The backend's name for the volume (unique across tenants).
    pub key: String,
    /// Where it appears inside the sandbox (absolute, normalized).
    pub path: String,
    pub read_only: bool,
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
    pub network_rx_bytes: Option<u64>,
    pub network_tx_bytes: Option<u64>,
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
    /// A request this backend cannot serve, with the reason.
    #[error("{0}")]
    Refused(String),
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

    /// The backend a create asking for `requested` (`None`: the default)
    /// runs on, or why there is none.
    fn select(&self, requested: Option<&str>) -> std::result::Result<&'static str, String> {
        match requested {
            None => Ok(self.name()),
            Some(name) if name == self.name() => Ok(self.name()),
            Some(name) => Err(format!(
                "runtime {name:?} is not enabled on this server (it runs {})",
                self.name()
            )),
        }
    }

    /// Things the operator should know about how this host runs sandboxes
    /// (degraded isolation, missing limits), said once at start.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Ok when this host can serve `template`, else the reason.
    fn check_template(&self, template: &TemplateSpec) -> std::result::Result<(), String>;

    /// Ok when this backend can give a sandbox `network`, else why not.
    fn check_network(&self, _network: &NetworkSpec) -> Result<()> {
        Err(RuntimeError::Unsupported {
            operation: "egress networking",
            backend: self.name(),
        })
    }

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

    /// Gives a sandbox created with `background` the normal CPU priority
    /// (when it is handed to a user). Backends without priorities do
    /// nothing.
    async fn set_foreground(&self, _id: SandboxId) -> Result<()> {
        Ok(())
    }

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

    /// How sandbox files are stored (`btrfs`, `dir`), for operators.
    fn storage(&self) -> &'static str {
        "none"
    }

    /// Captures the files of a running sandbox as `snapshot`, which later
    /// sandboxes can start from; returns the bytes it holds.
    async fn snapshot(&self, _id: SandboxId, _snapshot: &str) -> Result<u64> {
        Err(RuntimeError::Unsupported {
            operation: "snapshot",
            backend: self.name(),
        })
    }

    async fn delete_snapshot(&self, _snapshot: &str) -> Result<()> {
        Err(RuntimeError::Unsupported {
            operation: "deleting snapshots",
            backend: self.name(),
        })
    }

    /// Makes a persistent volume that sandboxes can mount.
    async fn create_volume(&self, _key: &str, _bytes: u64) -> Result<()> {
        Err(RuntimeError::Unsupported {
            operation: "volumes",
            backend: self.name(),
        })
    }

    async fn delete_volume(&self, _key: &str) -> Result<()> {
        Err(RuntimeError::Unsupported {
            operation: "volumes",
            backend: self.name(),
        })
    }
}

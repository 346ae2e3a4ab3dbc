//! The host side of an egress sandbox (see `docs/network.md`): a proxy
//! listener made inside the sandbox's network namespace, on its loopback,
//! and served from the server's own namespace. The sandbox has no route
//! anywhere else, so the proxy is its only way out.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;

use capsule_api::SandboxId;
use capsule_net::{DenyList, Egress, Policy};
use tokio_util::sync::CancellationToken;

use crate::{NetworkSpec, Result, RuntimeError};

/// Where the proxy listens, inside the sandbox.
pub const PROXY_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 3128);

/// The file in a sandbox's directory that keeps its network spec (secrets
/// included) so that a restarted server can serve its proxy again. The
/// directory is outside the sandbox's root; the file is the server's, 0600.
pub const SPEC_FILE: &str = "network.json";

/// The environment that points programs in the sandbox at the proxy.
pub fn proxy_env() -> [(&'static str, String); 6] {
    let url = format!("http://{PROXY_ADDR}");
    [
        ("HTTP_PROXY", url.clone()),
        ("HTTPS_PROXY", url.clone()),
        ("http_proxy", url.clone()),
        ("https_proxy", url),
        ("NO_PROXY", "localhost,127.0.0.1,::1".to_owned()),
        ("no_proxy", "localhost,127.0.0.1,::1".to_owned()),
    ]
}

/// The proxies this server runs, one per egress sandbox.
#[derive(Default)]
pub struct Proxies {
    running: Mutex<HashMap<SandboxId, CancellationToken>>,
}

fn policy_of(spec: &NetworkSpec) -> Result<Policy> {
    let secrets: Vec<(String, String, String)> = spec
        .secrets
        .iter()
        .map(|s| (s.host.clone(), s.header.clone(), s.value.clone()))
        .collect();
    Policy::new(&spec.allow, &secrets).map_err(|e| RuntimeError::Unavailable(e.to_string()))
}

impl Proxies {
    /// Writes the spec beside the sandbox, for [`Proxies::restore`].
    pub fn save(dir: &Path, spec: &NetworkSpec) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(SPEC_FILE);
        let json = serde_json::to_vec(spec).expect("network specs serialize");
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&json))
            .map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e))
    }

    /// The spec saved for a sandbox, if it has one.
    pub fn load(dir: &Path) -> Option<NetworkSpec> {
        let text = std::fs::read(dir.join(SPEC_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Starts serving the proxy of sandbox `id`, whose init is `init_pid`.
    /// Call inside a Tokio runtime.
    pub fn start(&self, id: SandboxId, init_pid: i32, spec: &NetworkSpec) -> Result<()> {
        let policy = policy_of(spec)?;
        let ns_path = format!("/proc/{init_pid}/ns/net");
        let ns: OwnedFd = std::fs::File::open(&ns_path)
            .map_err(|e| RuntimeError::io(format!("opening {ns_path}"), e))?
            .into();
        // The socket belongs to the namespace it was made in, whichever
        // thread uses it later.
        let listener = capsule_sys::net::in_netns(ns, || std::net::TcpListener::bind(PROXY_ADDR))
            .map_err(|e| RuntimeError::sys(format!("entering the network namespace of {id}"), e))?
            .map_err(|e| RuntimeError::io(format!("listening on {PROXY_ADDR} inside {id}"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| RuntimeError::io("making the proxy listener non-blocking", e))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| RuntimeError::io("registering the proxy listener", e))?;
        let stop = CancellationToken::new();
        let egress = Egress::new(policy, DenyList::new(Vec::new()));
        tokio::spawn(capsule_net::serve(listener, egress, stop.clone()));
        let old = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, stop);
        if let Some(old) = old {
            old.cancel();
        }
        Ok(())
    }

    /// Stops a sandbox's proxy and every connection through it.
    pub fn stop(&self, id: SandboxId) {
        let token = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(token) = token {
            token.cancel();
        }
    }

    /// Stops every proxy (the server is exiting; sandboxes keep running
    /// and get their proxy back on attach).
    pub fn stop_all(&self) {
        let all: Vec<CancellationToken> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, t)| t)
            .collect();
        for token in all {
            token.cancel();
        }
    }
}

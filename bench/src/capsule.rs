//! Capsule itself: a real server started for the run, driven over its
//! JSON-RPC API by a keep-alive HTTP client, as an SDK would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub struct Server {
    child: Child,
    pub url: String,
    _state: tempfile::TempDir,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets the server shut down; sandboxes were deleted before.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    pub async fn start(binary: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new()
            .prefix("capsule-bench")
            .tempdir_in("/tmp")?;
        let port = free_port()?;
        let child = Command::new(binary)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--state-dir",
            ])
            .arg(state.path())
            .args(["--max-sandboxes", "5000", "--default-memory-mb", "128"])
            .args(extra)
            .env("CAPSULE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _state: state,
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .call("sandbox.v1.templates", json!({}))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the server did not come up within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the launcher pool fill before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(server)
    }

    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        )?;
        let req = http::Request::post(format!("{}/rpc", self.url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = self.http.request(req).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes)?;
        if let Some(e) = v.get("error") {
            return Err(anyhow!("{method}: {e}"));
        }
        Ok(v["result"].clone())
    }

    pub async fn create(&self) -> anyhow::Result<String> {
        let r = self
            .call("sandbox.v1.create", json!({"template": "base"}))
            .await?;
        Ok(r["id"].as_str().context("no id")?.to_owned())
    }

    pub async fn exec_echo(&self, id: &str) -> anyhow::Result<()> {
        let r = self
            .call("sandbox.v1.exec", json!({"id": id, "cmd": ["echo", "hi"]}))
            .await?;
        if r["stdout"] != "hi\n" {
            bail!("unexpected exec result {r}");
        }
        Ok(())
    }

    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.call("sandbox.v1.delete", json!({"id": id}))
            .await
            .map(|_| ())
    }

    /// Pids of the sandbox inits this server runs.
    pub fn agent_pids(&self) -> Vec<u32> {
        let me = self.child.id();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            // Sandbox inits live in pid namespaces of their own; the
            // launchers waiting in the pool do not.
            let own_ns = std::fs::read_link("/proc/self/ns/pid").ok();
            let its_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            if ppid == Some(me) && its_ns.is_some() && its_ns != own_ns {
                pids.push(pid);
            }
        }
        pids
    }
}

/// Create + first exec, then delete (not timed), `runs` times.
pub async fn create_and_exec(server: &Server, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let id = server.create().await?;
        server.exec_echo(&id).await?;
        samples.push(t.elapsed());
        server.delete(&id).await?;
        // Give the launcher pool time to refill, as between real requests.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    Ok(samples)
}

pub async fn exec_round_trip(server: &Server, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let id = server.create().await?;
    for _ in 0..10 {
        server.exec_echo(&id).await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        server.exec_echo(&id).await?;
        samples.push(t.elapsed());
    }
    server.delete(&id).await?;
    Ok(samples)
}

/// Memory per idle sandbox: the host's used memory before and after
/// starting `count` sandboxes, divided by `count`; and the mean PSS of the
/// sandbox inits.
pub async fn idle_memory(server: &Server, count: usize) -> anyhow::Result<(f64, f64)> {
    let before = crate::memory::settled_used_bytes();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(server.create().await?);
    }
    let after = crate::memory::settled_used_bytes();
    let pss: Vec<u64> = server
        .agent_pids()
        .into_iter()
        .filter_map(crate::memory::pss_bytes)
        .collect();
    let mean_pss = if pss.is_empty() {
        f64::NAN
    } else {
        pss.iter().sum::<u64>() as f64 / pss.len() as f64
    };
    for id in ids {
        server.delete(&id).await?;
    }
    Ok((after.saturating_sub(before) as f64 / count as f64, mean_pss))
}

/// The release binary, built by `bench/run`.
pub fn default_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/capsule")
}

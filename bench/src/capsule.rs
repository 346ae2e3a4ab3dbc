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

use crate::stats::{Summary, Throughput, summarize};

/// The template every figure uses (and the one the warm pool keeps).
pub const TEMPLATE: &str = "base";

/// A `capsule serve` process with a state directory of its own.
pub struct Server {
    child: Child,
    pub api: Api,
    state: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets the server shut down; sandboxes were deleted before.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        // The server leaves its btrfs storage mounted; unmount it (deepest
        // first) so the state directory can go.
        let state = self.state.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&state))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount_point in ours {
            let _ = Command::new("umount").args(["-l", mount_point]).status();
        }
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
            api: Api {
                url: format!("http://127.0.0.1:{port}"),
                http: Client::builder(TokioExecutor::new()).build_http(),
            },
            state,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .api
            .call("sandbox.v1.templates", json!({}))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the server did not come up within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the launchers (and warm pools) fill before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.api.wait_for_pools().await?;
        Ok(server)
    }

    /// The server and every process under it (launchers, sandboxes).
    pub fn process_tree(&self) -> Vec<u32> {
        let mut parents: Vec<(u32, u32)> = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parents.push((pid, ppid));
            }
        }
        let mut tree = vec![self.child.id()];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(
                parents
                    .iter()
                    .filter(|(_, pp)| *pp == parent)
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        tree
    }

    /// Summed proportional set size of the server's process tree.
    pub fn tree_pss_bytes(&self) -> u64 {
        self.process_tree()
            .into_iter()
            .filter_map(crate::memory::pss_bytes)
            .sum()
    }
}

/// A JSON-RPC client of one server; cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
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

    /// A sandbox of the default shape (the one warm pools serve).
    pub async fn create(&self) -> anyhow::Result<String> {
        self.create_with(json!({"template": TEMPLATE})).await
    }

    pub async fn create_with(&self, params: Value) -> anyhow::Result<String> {
        let r = self.call("sandbox.v1.create", params).await?;
        Ok(r["id"].as_str().context("no id")?.to_owned())
    }

    pub async fn exec(&self, id: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let r = self
            .call(
                "sandbox.v1.exec",
                json!({"id": id, "cmd": cmd, "timeout_ms": 600_000}),
            )
            .await?;
        if r["exit_code"] != 0 {
            bail!("{cmd:?} failed: {r}");
        }
        Ok(r["stdout"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn exec_echo(&self, id: &str) -> anyhow::Result<()> {
        let out = self.exec(id, &["echo", "hi"]).await?;
        if out != "hi\n" {
            bail!("unexpected exec output {out:?}");
        }
        Ok(())
    }

    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.call("sandbox.v1.delete", json!({"id": id}))
            .await
            .map(|_| ())
    }

    /// Ready sandboxes in the warm pool of [`TEMPLATE`] (0 without one).
    pub async fn pool_ready(&self) -> anyhow::Result<(u64, u64)> {
        let r = self.call("sandbox.v1.pools", json!({})).await?;
        let pool = r["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["template"] == TEMPLATE);
        Ok(pool.map_or((0, 0), |p| {
            (
                p["ready"].as_u64().unwrap_or(0),
                p["size"].as_u64().unwrap_or(0),
            )
        }))
    }

    async fn wait_for_pools(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (ready, size) = self.pool_ready().await?;
            if ready >= size {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the warm pool did not fill within 60s ({ready} of {size} ready)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Create + first exec `runs` times, deleting each sandbox untimed. Also
/// counts the runs that found a ready sandbox in the warm pool.
pub async fn create_and_exec(api: &Api, runs: usize) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut samples = Vec::with_capacity(runs);
    let mut pool_hits = 0;
    for _ in 0..runs {
        if api.pool_ready().await?.0 > 0 {
            pool_hits += 1;
        }
        let t = Instant::now();
        let id = api.create().await?;
        api.exec_echo(&id).await?;
        samples.push(t.elapsed());
        api.delete(&id).await?;
        // Leave the server a moment between requests, as real clients do.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    Ok((samples, pool_hits))
}

pub async fn exec_round_trip(api: &Api, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let id = api.create().await?;
    for _ in 0..10 {
        api.exec_echo(&id).await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        api.exec_echo(&id).await?;
        samples.push(t.elapsed());
    }
    api.delete(&id).await?;
    Ok(samples)
}

/// `clients` concurrent clients, each creating a sandbox and deleting it
/// again, back to back, for `duration`. Only creates are timed; the rate
/// counts the whole loop, deletes included.
pub async fn throughput(
    api: &Api,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let api = api.clone();
        tasks.spawn(async move {
            let mut samples = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                let id = api.create().await?;
                samples.push(t.elapsed());
                api.delete(&id).await?;
            }
            Ok::<_, anyhow::Error>(samples)
        });
    }
    let mut samples = Vec::new();
    while let Some(client) = tasks.join_next().await {
        samples.extend(client??);
    }
    Ok(Throughput::new(clients, start.elapsed(), &samples))
}

/// Host memory taken by idle sandboxes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleMemory {
    pub count: usize,
    /// Growth of MemTotal - MemAvailable, per sandbox; at or below zero
    /// when the host's other work freed more than the sandboxes took.
    pub host_bytes_per_sandbox: f64,
    /// Growth of the PSS of the server and every process under it, per
    /// sandbox (None for tools without a server).
    pub pss_bytes_per_sandbox: Option<f64>,
}

pub async fn idle_memory(server: &Server, count: usize) -> anyhow::Result<IdleMemory> {
    let before = crate::memory::settled_used_bytes();
    let pss_before = server.tree_pss_bytes();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(
            server
                .api
                .create()
                .await
                .with_context(|| format!("creating idle sandbox {}", i + 1))?,
        );
    }
    let after = crate::memory::settled_used_bytes();
    let pss_after = server.tree_pss_bytes();
    for id in ids {
        server.api.delete(&id).await?;
    }
    Ok(IdleMemory {
        count,
        host_bytes_per_sandbox: (after as f64 - before as f64) / count as f64,
        pss_bytes_per_sandbox: Some(pss_after.saturating_sub(pss_before) as f64 / count as f64),
    })
}

/// Snapshot and create-from-snapshot times of a sandbox with `data_mb`
/// MiB written to its files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotTimes {
    pub data_mb: u64,
    pub snapshot: Summary,
    /// `create` with `snapshot` until it returns (the sandbox is running).
    pub create_from_snapshot: Summary,
}

pub async fn snapshot_times(api: &Api, data_mb: u64, runs: usize) -> anyhow::Result<SnapshotTimes> {
    let disk_mb = (2 * data_mb + 1024).max(2048);
    let id = api
        .create_with(json!({"template": TEMPLATE, "disk_mb": disk_mb, "memory_mb": 512}))
        .await?;
    if data_mb > 0 {
        // Random data, so nothing can be deduplicated or compressed away;
        // synced, so the snapshot does not pay for writeback.
        let write = format!("head -c {data_mb}M /dev/urandom > /workspace/data && sync");
        api.exec(&id, &["sh", "-c", &write]).await?;
    }
    let tag = format!("{}-{data_mb}", std::process::id());
    let mut names = Vec::new();
    let mut snapshot = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("bench-{tag}-{i}");
        let t = Instant::now();
        api.call("sandbox.v1.snapshot", json!({"id": id, "name": name}))
            .await?;
        snapshot.push(t.elapsed());
        names.push(name);
    }
    api.delete(&id).await?;
    let mut create_from = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        let copy = api.create_with(json!({"snapshot": names[0]})).await?;
        create_from.push(t.elapsed());
        if i == 0 {
            let size = api
                .exec(
                    &copy,
                    &["sh", "-c", "wc -c < /workspace/data 2>/dev/null || echo 0"],
                )
                .await?;
            let want = data_mb * 1024 * 1024;
            if size.trim().parse::<u64>().ok() != Some(want) {
                bail!(
                    "a sandbox made from the snapshot has {} bytes of data, not {want}",
                    size.trim()
                );
            }
        }
        api.delete(&copy).await?;
    }
    for name in names {
        api.call("sandbox.v1.deleteSnapshot", json!({"snapshot": name}))
            .await?;
    }
    Ok(SnapshotTimes {
        data_mb,
        snapshot: summarize(&snapshot),
        create_from_snapshot: summarize(&create_from),
    })
}

/// The release binary: `$CARGO_TARGET_DIR/release/capsule` when that is
/// set (as `bench/run` does), else the workspace's `target/`.
pub fn default_binary() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("release/capsule")
}

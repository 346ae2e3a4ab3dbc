//! The test harness: a real `capsule serve` on a free port with its own
//! state directory, a blocking JSON-RPC client, and checks that nothing is
//! left behind on the host.

#![allow(dead_code)]

pub mod attack;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_capsule");

/// The unprivileged account rootless tests run the server as.
pub fn test_user() -> String {
    std::env::var("CAPSULE_TEST_USER").unwrap_or_else(|_| "capsuletest".into())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange on a fresh connection; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    http_with(port, method, path, &[], body)
}

/// [`http`] with extra request headers.
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub state: PathBuf,
    _tmp: tempfile::TempDir,
    pub user: Option<String>,
    args: Vec<String>,
    pub log: PathBuf,
    /// The first of the `--api-keys` the server was started with: the
    /// harness's own calls use it.
    pub admin_key: Option<String>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Self {
        Self::launch(None, args)
    }

    /// Starts the server as an unprivileged user (rootless mode).
    pub fn start_as(user: &str, args: &[&str]) -> Self {
        assert!(
            is_root(),
            "rootless tests start the server through setpriv and must run as root"
        );
        let exists = Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            exists,
            "the test user {user:?} does not exist; create it with `useradd -m {user}` (scripts/test does) or set CAPSULE_TEST_USER"
        );
        Self::launch(Some(user.to_owned()), args)
    }

    fn launch(user: Option<String>, args: &[&str]) -> Self {
        // /tmp is traversable by every user, so rootless servers reach it too.
        let tmp = tempfile::Builder::new()
            .prefix("capsule-test")
            .tempdir_in("/tmp")
            .unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        if let Some(u) = &user {
            assert!(
                Command::new("chown")
                    .args([format!("{u}:"), state.display().to_string()])
                    .status()
                    .unwrap()
                    .success()
            );
            assert!(
                Command::new("chmod")
                    .args(["755", &tmp.path().display().to_string()])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let mut server = Self {
            child: None,
            port: free_port(),
            state,
            log: tmp.path().join("server.log"),
            _tmp: tmp,
            user,
            args: args.iter().map(|s| s.to_string()).collect(),
            admin_key: args
                .iter()
                .position(|a| *a == "--api-keys")
                .and_then(|i| args.get(i + 1))
                .map(|k| k.split(',').next().unwrap_or_default().to_owned()),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={u}"),
                    format!("--regid={u}"),
                    "--init-groups".into(),
                    "--".into(),
                    BIN.into(),
                ]);
                let home = format!("/home/{u}");
                c.env("HOME", home).env("USER", u);
                c
            }
            None => Command::new(BIN),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--state-dir",
        ])
        .arg(&self.state)
        .args(&self.args)
        .env("CAPSULE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        self.child = Some(cmd.spawn().expect("starting capsule serve"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(self.port, "GET", "/health", b"") {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("capsule serve exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends a raw body to /rpc; returns (status, parsed JSON or Null).
    pub fn post_rpc_raw(&self, body: &[u8]) -> (u16, Value) {
        let auth = self.admin_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let (status, body) = http_with(self.port, "POST", "/rpc", &headers, body).expect("request");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Calls `method`; the whole response, or None when the server does
    /// not answer.
    pub fn try_rpc(&self, method: &str, params: Value) -> Option<Value> {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let auth = self.admin_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let body = serde_json::to_vec(&req).ok()?;
        let (_, body) = http_with(self.port, "POST", "/rpc", &headers, &body).ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Calls `method`; the whole JSON-RPC response.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post_rpc_raw(&serde_json::to_vec(&req).unwrap()).1
    }

    /// Calls `method`; the result, or panics with the error.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        let resp = self.rpc(method, params.clone());
        if resp.get("error").is_some() {
            panic!(
                "{method} {params} failed: {resp}\nserver log:\n{}",
                self.log_text()
            );
        }
        resp["result"].clone()
    }

    /// Calls `method` expecting an error; returns the error object.
    pub fn err(&self, method: &str, params: Value) -> Value {
        let resp = self.rpc(method, params.clone());
        assert!(
            resp.get("result").is_none(),
            "{method} {params} should fail: {resp}"
        );
        resp["error"].clone()
    }

    /// Calls made with an API key.
    pub fn with_key<'a>(&'a self, key: &'a str) -> Keyed<'a> {
        Keyed { server: self, key }
    }

    pub fn create(&self, template: &str) -> String {
        self.ok("sandbox.v1.create", json!({"template": template}))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn exec(&self, id: &str, cmd: Value) -> Value {
        self.ok("sandbox.v1.exec", json!({"id": id, "cmd": cmd}))
    }

    pub fn sh(&self, id: &str, script: &str) -> Value {
        self.exec(id, json!(["sh", "-c", script]))
    }

    /// The `capsule` CLI pointed at this server.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("CAPSULE_URL", self.url());
        c
    }

    /// Kills the server with SIGKILL (sandboxes keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill takes integers; the pid is our own child's.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(c.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same state directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn instance(&self) -> String {
        std::fs::read_to_string(self.state.join("native/instance-id"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Directories of this server's cgroups (parent per hierarchy), if any.
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        let name = format!("capsule-{}", self.instance());
        let mut out = Vec::new();
        for entry in walk_cgroups(Path::new("/sys/fs/cgroup"), 0) {
            if entry.file_name().is_some_and(|n| n == name.as_str()) {
                out.push(entry);
            }
        }
        out
    }

    /// Sandbox directories left in the state directory.
    pub fn sandbox_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("native/sandboxes"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes every sandbox, stops the server, and asserts that nothing
    /// of it is left: no sandbox directories, no cgroups, no processes.
    pub fn shutdown_and_check_clean(mut self) {
        let list = self.ok("sandbox.v1.list", json!({}));
        for sb in list["sandboxes"].as_array().unwrap() {
            if sb["state"] == "running" || sb["state"] == "paused" {
                self.ok("sandbox.v1.delete", json!({"id": sb["id"]}));
            }
        }
        let parents = self.cgroup_parents();
        self.stop();
        assert!(
            self.sandbox_dirs().is_empty(),
            "sandbox directories left: {:?}",
            self.sandbox_dirs()
        );
        for p in parents {
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
        let procs = sandbox_processes(&self.state);
        assert!(procs.is_empty(), "processes left: {procs:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(self.state.to_str().unwrap()),
            "mounts left on the host"
        );
    }
}

fn walk_cgroups(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if depth > 4 {
        return out;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
            out.extend(walk_cgroups(&e.path(), depth + 1));
        }
    }
    out
}

/// Processes whose command line mentions `state` or that run the capsule
/// binary inside a sandbox of this state directory.
pub fn sandbox_processes(state: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let needle = state.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(root) = std::fs::read_link(format!("/proc/{pid}/root")) else {
            continue;
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if root.to_string_lossy().contains(&needle)
            || cwd.to_string_lossy().contains(&needle)
            || String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            out.push(pid);
        }
    }
    out
}

impl Drop for Server {
    fn drop(&mut self) {
        // Best effort: delete what the test left, then stop. Sandboxes of a
        // server that is already dead are killed through their pid files.
        // Nothing here may panic: a panic while a failed test unwinds
        // aborts the whole test binary.
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if alive {
            let list = self.try_rpc("sandbox.v1.list", json!({}));
            if let Some(items) = list
                .as_ref()
                .and_then(|l| l["result"]["sandboxes"].as_array())
            {
                for sb in items {
                    let _ = self.try_rpc("sandbox.v1.delete", json!({"id": sb["id"]}));
                }
            }
        }
        self.stop();
        // Paused sandboxes are frozen, and a frozen process does not die of
        // SIGKILL until it is thawed.
        for parent in self.cgroup_parents() {
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let _ = std::fs::write(child.path().join("freezer.state"), "THAWED");
                let _ = std::fs::write(child.path().join("cgroup.freeze"), "0");
            }
        }
        for dir in self.sandbox_dirs() {
            let pid_file = self
                .state
                .join("native/sandboxes")
                .join(&dir)
                .join("init.pid");
            if let Ok(text) = std::fs::read_to_string(pid_file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(pid) = v["pid"].as_i64()
            {
                // SAFETY: kill takes integers; the pid is a sandbox this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for parent in self.cgroup_parents() {
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
        // A server killed or left with sandboxes keeps its storage mounted
        // (sandboxes outlive it); detach what is left so that the
        // directory can go and no mount outlives the test.
        let prefix = format!("{}/", self._tmp.path().display());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for point in ours {
            let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// A server, called with one API key.
pub struct Keyed<'a> {
    pub server: &'a Server,
    pub key: &'a str,
}

impl Keyed<'_> {
    /// The whole JSON-RPC response and the HTTP status.
    pub fn rpc(&self, method: &str, params: Value) -> (u16, Value) {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let auth = format!("Bearer {}", self.key);
        let (status, body) = http_with(
            self.server.port,
            "POST",
            "/rpc",
            &[("Authorization", &auth)],
            &serde_json::to_vec(&req).unwrap(),
        )
        .expect("request");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub fn ok(&self, method: &str, params: Value) -> Value {
        let (_, resp) = self.rpc(method, params.clone());
        if resp.get("error").is_some() || resp.is_null() {
            panic!(
                "{method} {params} failed: {resp}\nserver log:\n{}",
                self.server.log_text()
            );
        }
        resp["result"].clone()
    }

    pub fn err(&self, method: &str, params: Value) -> Value {
        let (_, resp) = self.rpc(method, params.clone());
        assert!(
            resp.get("result").is_none(),
            "{method} {params} should fail: {resp}"
        );
        resp["error"].clone()
    }

    pub fn create(&self, template: &str) -> String {
        self.ok("sandbox.v1.create", json!({"template": template}))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

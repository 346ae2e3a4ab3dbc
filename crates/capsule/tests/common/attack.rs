//! Helpers for the adversarial suite (`tests/adversarial.rs`): a recorder
//! that turns every attack into a row of the security results table, raw
//! HTTP for requests no well-behaved client would send, the E2B and MCP
//! doors spoken by hand, and canaries on the host that must never change.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Server;

// --- the results table ------------------------------------------------------------------

/// Where every test appends its rows (one JSON object per line).
pub fn results_file() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`; the rows live beside it.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("adversarial/results.jsonl")
}

/// The generated table, in the repository's docs.
pub fn results_page() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md")
}

/// How an attack turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attack failed, as it must.
    Pass,
    /// The attack worked: an escape or a broken promise.
    Fail,
    /// A documented limit: the attack is contained but not prevented.
    KnownLimit,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::KnownLimit => "known limit",
        }
    }
}

/// Records the attacks of one test. A failed check is written to the
/// results file at once and fails the test at `finish` (or on drop), so
/// that one escape does not hide the attacks after it.
pub struct Recorder {
    category: &'static str,
    test: &'static str,
    failures: Vec<String>,
    finished: bool,
}

impl Recorder {
    pub fn new(category: &'static str, test: &'static str) -> Self {
        Self {
            category,
            test,
            failures: Vec::new(),
            finished: false,
        }
    }

    /// Records `attack`: `refused` is true when the attack failed.
    pub fn check(
        &mut self,
        attack: &str,
        expected: &str,
        observed: impl AsRef<str>,
        refused: bool,
    ) -> bool {
        let outcome = if refused {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        self.row(attack, expected, observed.as_ref(), outcome);
        if !refused {
            self.failures.push(format!(
                "{attack}: expected {expected}, observed {}",
                observed.as_ref()
            ));
        }
        refused
    }

    /// Records a documented limit: contained, not prevented. Never fails.
    pub fn known_limit(&mut self, attack: &str, expected: &str, observed: impl AsRef<str>) {
        self.row(attack, expected, observed.as_ref(), Outcome::KnownLimit);
    }

    fn row(&self, attack: &str, expected: &str, observed: &str, outcome: Outcome) {
        let row = json!({
            "category": self.category,
            "test": self.test,
            "attack": attack,
            "expected": expected,
            "observed": one_line(observed, 240),
            "outcome": outcome.as_str(),
            "at": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        });
        append_row(&row);
    }

    /// Fails the test if any attack succeeded.
    pub fn finish(mut self) {
        self.finished = true;
        let failures = std::mem::take(&mut self.failures);
        assert!(
            failures.is_empty(),
            "{} attack(s) succeeded in {}:\n  {}",
            failures.len(),
            self.test,
            failures.join("\n  ")
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.finished && !self.failures.is_empty() && !std::thread::panicking() {
            panic!(
                "attacks succeeded in {}:\n  {}",
                self.test,
                self.failures.join("\n  ")
            );
        }
    }
}

/// Appends one row with a single `write` on an `O_APPEND` descriptor, so
/// rows of tests running in parallel processes never interleave.
fn append_row(row: &Value) {
    let path = results_file();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut line = row.to_string();
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let written = file.write(line.as_bytes()).expect("appending a result row");
    assert_eq!(written, line.len(), "a result row was written in part");
}

/// `text` on one line, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| {
            if c.is_control() || c == char::REPLACEMENT_CHARACTER {
                ' '
            } else {
                c
            }
        })
        .collect();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// Renders the rows of `jsonl` as the markdown page at `page`. The latest
/// row of each (test, attack) wins, so reruns replace earlier rows.
pub fn render_results(jsonl: &Path, page: &Path) -> std::io::Result<usize> {
    let text = std::fs::read_to_string(jsonl)?;
    let mut latest: std::collections::BTreeMap<(String, String, String), Value> =
        std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(row) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let key = (
            row["category"].as_str().unwrap_or("").to_owned(),
            row["attack"].as_str().unwrap_or("").to_owned(),
            row["test"].as_str().unwrap_or("").to_owned(),
        );
        let newer = latest
            .get(&key)
            .is_none_or(|old| old["at"].as_u64() <= row["at"].as_u64());
        if newer {
            latest.insert(key, row);
        }
    }
    // Rows more than an hour older than the newest are from earlier runs
    // (tests or attacks since renamed or removed).
    let newest = latest
        .values()
        .filter_map(|r| r["at"].as_u64())
        .max()
        .unwrap_or(0);
    let rows: Vec<&Value> = latest
        .values()
        .filter(|r| r["at"].as_u64().unwrap_or(0) + 3600 >= newest)
        .collect();
    let count = |o: &str| rows.iter().filter(|r| r["outcome"] == o).count();
    let cell = |v: &Value| one_line(v.as_str().unwrap_or(""), 400).replace('|', "\\|");
    let mut md = String::new();
    md.push_str(
        "### Results\n\n\
         Written by the suite; do not edit by hand. `pass`: the attack failed and the host was\n\
         unchanged; `FAIL`: an open vulnerability with a failing test; `known limit`: contained\n\
         but not prevented yet.\n\n",
    );
    let _ = writeln!(md, "- **Date:** {}", format_utc(newest));
    let _ = writeln!(md, "- **Machine:** {}", machine());
    let _ = writeln!(
        md,
        "- **Attacks:** {} ({} pass, {} FAIL, {} known limit)\n",
        rows.len(),
        count("pass"),
        count("FAIL"),
        count("known limit")
    );
    let failing: Vec<&&Value> = rows.iter().filter(|r| r["outcome"] == "FAIL").collect();
    if !failing.is_empty() {
        md.push_str("#### Failing (open vulnerabilities)\n\n");
        for r in &failing {
            let _ = writeln!(
                md,
                "- **{}** / {}: {} (`{}`)",
                cell(&r["category"]),
                cell(&r["attack"]),
                cell(&r["observed"]),
                cell(&r["test"])
            );
        }
        md.push('\n');
    }
    md.push_str("#### All attacks\n\n");
    md.push_str("| category | attack | expected | observed | result | test |\n");
    md.push_str("|---|---|---|---|---|---|\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | `{}` |",
            cell(&r["category"]),
            cell(&r["attack"]),
            cell(&r["expected"]),
            cell(&r["observed"]),
            cell(&r["outcome"]),
            cell(&r["test"])
        );
    }
    // The table goes between the markers of the hand-written page.
    const BEGIN: &str = "<!-- adversarial-results:begin -->";
    const END: &str = "<!-- adversarial-results:end -->";
    let current = std::fs::read_to_string(page)?;
    let (Some(start), Some(end)) = (current.find(BEGIN), current.find(END)) else {
        return Err(std::io::Error::other(format!(
            "{} has no {BEGIN} ... {END} markers",
            page.display()
        )));
    };
    let spliced = format!("{}{BEGIN}\n{md}{}", &current[..start], &current[end..]);
    let tmp = page.with_extension("md.tmp");
    std::fs::write(&tmp, spliced)?;
    std::fs::rename(&tmp, page)?;
    Ok(rows.len())
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// The machine the suite ran on: host name, kernel, CPU and memory.
pub fn machine() -> String {
    // SAFETY: uname fills the struct it is given; a zeroed utsname is valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    unsafe { libc::uname(&mut uts) };
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    format!(
        "{} ({} {} {}), {cores} × {cpu}, {mem_gib:.0} GiB RAM",
        field(&uts.nodename),
        field(&uts.sysname),
        field(&uts.release),
        field(&uts.machine)
    )
}

// --- host canaries --------------------------------------------------------------------

/// A directory on the host with a secret file in it. Sandboxes must never
/// read the secret, change it, or create anything beside it.
pub struct HostCanary {
    dir: tempfile::TempDir,
    pub secret: PathBuf,
    pub secret_text: String,
}

impl HostCanary {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("capsule-adv-canary")
            .tempdir_in("/tmp")
            .unwrap();
        let secret_text = format!("host-secret-{}", random_hex(8));
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, &secret_text).unwrap();
        Self {
            dir,
            secret,
            secret_text,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in the canary directory that must never come to exist.
    pub fn forbidden(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Whether the directory still holds exactly the secret, unchanged.
    pub fn intact(&self) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.secret).map_err(|e| format!("secret: {e}"))?;
        if text != self.secret_text {
            return Err(format!("the secret changed to {text:?}"));
        }
        let names: Vec<String> = std::fs::read_dir(self.dir.path())
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names != ["secret.txt"] {
            return Err(format!("the canary directory now holds {names:?}"));
        }
        Ok(())
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host's IPv4 and IPv6 addresses, loopback excluded.
pub fn host_addresses() -> Vec<String> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its size.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    out.push(ip.to_string());
                }
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    out.push(ip.to_string());
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out.sort();
    out.dedup();
    out
}

// --- running code inside --------------------------------------------------------------

/// Runs `code` with python3 inside `id` as `user` and parses the JSON it
/// prints last. Panics with the output when there is none.
pub fn py(server: &Server, id: &str, user: &str, code: &str) -> Value {
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": ["python3", "-c", code], "user": user, "timeout_ms": 60000}),
    );
    let stdout = r["stdout"].as_str().unwrap_or("");
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON from the probe: {r}"))
}

/// Helpers every in-sandbox probe starts with: `row(...)` records an
/// attack, `tryit(f)` returns `(succeeded, value or error text)`, `rd(p)`
/// reads a file, and `P` holds the parameters the test passed in.
const PY_PRELUDE: &str = r#"
import os, sys, json, errno, socket, ctypes, time
ROWS = []
def row(attack, expected, observed, escaped):
    ROWS.append({"attack": attack, "expected": expected, "observed": str(observed)[:400], "escaped": bool(escaped)})
def tryit(fn):
    try:
        return True, fn()
    except BaseException as e:
        return False, f"{type(e).__name__}: {e}"
def rd(p, n=65536):
    with open(p, "rb") as f:
        return f.read(n).decode("utf-8", "replace")
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys_call(nr, *args):
    ctypes.set_errno(0)
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(nr, *conv)
    e = ctypes.get_errno()
    return r, ("OK" if r >= 0 else errno.errorcode.get(e, str(e)))
"#;

/// Runs a probe: `body` is Python that calls `row(...)` for each attack;
/// `params` arrives as `P`. Returns the rows it recorded.
pub fn probe(server: &Server, id: &str, user: &str, params: &Value, body: &str) -> Vec<Value> {
    let code = format!(
        "{PY_PRELUDE}\nP = json.loads({})\n{body}\nprint(json.dumps(ROWS))\n",
        serde_json::to_string(&params.to_string()).unwrap()
    );
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": ["python3", "-c", code], "user": user, "timeout_ms": 60000}),
    );
    let stdout = r["stdout"].as_str().unwrap_or("");
    let rows = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Vec<Value>>(l).ok());
    rows.unwrap_or_else(|| panic!("the probe printed no rows: {r}"))
}

/// Records a probe's rows, each attack marked with who ran it.
pub fn record_probe(rec: &mut Recorder, who: &str, rows: &[Value]) {
    for r in rows {
        rec.check(
            &format!("{} (as {who})", r["attack"].as_str().unwrap_or("?")),
            r["expected"].as_str().unwrap_or("?"),
            r["observed"].as_str().unwrap_or(""),
            r["escaped"] == false,
        );
    }
}

/// Runs a shell script as `user`; the exec result.
pub fn sh_as(server: &Server, id: &str, user: &str, script: &str) -> Value {
    server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": ["sh", "-c", script], "user": user, "timeout_ms": 60000}),
    )
}

/// The sandbox's own directory on the host (the one holding `name`,
/// e.g. `agent.log`), found under the state directory whatever its layout.
pub fn sandbox_file(server: &Server, id: &str, name: &str) -> PathBuf {
    fn walk(dir: &Path, id: &str, name: &str, depth: usize) -> Option<PathBuf> {
        if depth > 5 {
            return None;
        }
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == id && p.join(name).exists() {
                return Some(p.join(name));
            }
            if let Some(found) = walk(&p, id, name, depth + 1) {
                return Some(found);
            }
        }
        None
    }
    walk(&server.state, id, name, 0)
        .unwrap_or_else(|| panic!("no {name} of sandbox {id} under {}", server.state.display()))
}

/// The host path of the sandbox's writable layer, as its overlay mount
/// names it.
pub fn upper_dir(server: &Server, id: &str) -> PathBuf {
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": ["sh", "-c", "grep -o 'upperdir=[^,]*' /proc/self/mountinfo | head -1"]}),
    );
    let line = r["stdout"].as_str().unwrap_or("").trim().to_owned();
    let path = line
        .strip_prefix("upperdir=")
        .unwrap_or_else(|| panic!("no upperdir in the sandbox's mountinfo: {r}"));
    PathBuf::from(path)
}

// --- raw HTTP -------------------------------------------------------------------------

/// An HTTP response, headers as sent (names lowercased).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Status and the start of the body, for the results table.
    pub fn brief(&self) -> String {
        format!("{} {}", self.status, one_line(&self.text(), 120))
    }
}

/// Sends raw bytes and reads until the server closes. `None` when the
/// server closed without a response (a dropped connection).
pub fn raw_exchange(port: u16, bytes: &[u8]) -> Option<Resp> {
    parse_response(&raw_bytes(port, bytes, Duration::from_secs(60)))
}

/// Sends raw bytes; everything the server sent until it closed or
/// `timeout` passed without a byte.
pub fn raw_bytes(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut raw = Vec::new();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return raw;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// The responses in raw bytes (status lines at the start of a line).
pub fn response_count(raw: &[u8]) -> usize {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("HTTP/1.")
        .filter(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
        .count()
}

pub fn parse_response(raw: &[u8]) -> Option<Resp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
    {
        body = dechunk(&body);
    }
    Some(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 || data.len() < end + 2 + size {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[(end + 4 + size).min(data.len())..];
    }
}

/// A request built by hand: headers exactly as given (plus `Host`,
/// `Content-Length` and `Connection: close` unless given).
pub struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn headers(mut self, pairs: &[(String, String)]) -> Self {
        self.headers.extend(pairs.iter().cloned());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn json(self, value: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(serde_json::to_vec(value).unwrap())
    }

    pub fn bytes(&self) -> Vec<u8> {
        let has = |n: &str| self.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !has("host") {
            head.push_str("Host: 127.0.0.1\r\n");
        }
        for (n, v) in &self.headers {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        if !has("content-length") && !has("transfer-encoding") {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        if !has("connection") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub fn send(&self, port: u16) -> Resp {
        raw_exchange(port, &self.bytes()).unwrap_or(Resp {
            status: 0,
            headers: Vec::new(),
            body: b"(connection closed without a response)".to_vec(),
        })
    }
}

/// Whether the server still answers `/health` and runs commands.
pub fn server_healthy(server: &Server) -> bool {
    Req::new("GET", "/health").send(server.port).status == 200
}

/// Stops the server and asserts nothing of it is left on the host, for
/// servers whose API the harness cannot call without a key (every sandbox
/// must already be deleted).
pub fn stop_and_check_clean(mut server: Server) {
    let parents = server.cgroup_parents();
    server.stop();
    assert!(
        server.sandbox_dirs().is_empty(),
        "sandbox directories left: {:?}",
        server.sandbox_dirs()
    );
    for p in parents {
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
    let procs = super::sandbox_processes(&server.state);
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

// --- E2B ------------------------------------------------------------------------------

/// A sandbox made through the E2B control plane, with its tokens.
#[derive(Debug, Clone)]
pub struct E2bSandbox {
    pub id: String,
    pub envd_token: String,
    pub traffic_token: String,
}

impl E2bSandbox {
    /// The headers E2B's SDKs send with in-sandbox traffic.
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("E2b-Sandbox-Id".into(), self.id.clone()),
            ("E2b-Sandbox-Port".into(), "49983".into()),
            ("X-Access-Token".into(), self.envd_token.clone()),
        ]
    }
}

pub fn e2b_create(server: &Server, api_key: Option<&str>) -> E2bSandbox {
    let mut req =
        Req::new("POST", "/sandboxes").json(&json!({"templateID": "python", "timeout": 300}));
    if let Some(k) = api_key {
        req = req.header("X-API-Key", k);
    }
    let resp = req.send(server.port);
    assert_eq!(resp.status, 201, "E2B create: {}", resp.brief());
    let v = resp.json();
    E2bSandbox {
        id: v["sandboxID"].as_str().unwrap().to_owned(),
        envd_token: v["envdAccessToken"].as_str().unwrap().to_owned(),
        traffic_token: v["trafficAccessToken"].as_str().unwrap().to_owned(),
    }
}

/// A unary Connect call to the sandbox's envd, as `user`.
pub fn envd_call(server: &Server, sb: &E2bSandbox, procedure: &str, body: &Value) -> Resp {
    Req::new("POST", &format!("/{procedure}"))
        .headers(&sb.headers())
        .header("Connect-Protocol-Version", "1")
        .json(body)
        .send(server.port)
}

/// Percent-encodes a query component (everything but unreserved bytes).
pub fn qenc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The signature E2B's SDKs put on file URLs:
/// `v1_` + base64(sha256("path:operation:user:token[:expiration]")), unpadded.
pub fn file_signature(
    path: &str,
    operation: &str,
    user: &str,
    token: &str,
    expiration: Option<u64>,
) -> String {
    use base64::Engine as _;
    let mut raw = format!("{path}:{operation}:{user}:{token}");
    if let Some(exp) = expiration {
        let _ = write!(raw, ":{exp}");
    }
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha256(raw.as_bytes()))
    )
}

/// SHA-256 (FIPS 180-4); the test crate has no hashing dependency.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

// --- MCP ------------------------------------------------------------------------------

/// A streamable-HTTP MCP session spoken by hand.
pub struct Mcp {
    port: u16,
    session: String,
    headers: Vec<(String, String)>,
    next_id: u64,
}

impl Mcp {
    /// Initializes a session with `headers` (identity, API key, Host).
    pub fn open(server: &Server, headers: &[(&str, &str)]) -> Result<Self, Resp> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "capsule-adversarial", "version": "0"}}});
        let resp = Self::post(server.port, &headers, None, &init);
        let Some(session) = resp.header("mcp-session-id").map(str::to_owned) else {
            return Err(resp);
        };
        let mcp = Self {
            port: server.port,
            session,
            headers,
            next_id: 1,
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        Self::post(mcp.port, &mcp.headers, Some(&mcp.session), &note);
        Ok(mcp)
    }

    fn post(port: u16, headers: &[(String, String)], session: Option<&str>, body: &Value) -> Resp {
        let mut req = Req::new("POST", "/mcp")
            .header("Accept", "application/json, text/event-stream")
            .headers(headers);
        if let Some(s) = session {
            req = req.header("Mcp-Session-Id", s);
        }
        req.json(body).send(port)
    }

    /// Sends a request; its JSON-RPC response (from JSON or an event stream).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let resp = Self::post(self.port, &self.headers, Some(&self.session), &body);
        let text = resp.text();
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            return v;
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v["id"] == json!(id))
            .unwrap_or_else(|| json!({"transport_error": resp.brief()}))
    }

    /// Calls a tool: `Ok(structured result)` or `Err(error text)`.
    pub fn tool(&mut self, name: &str, args: Value) -> Result<Value, String> {
        let v = self.request("tools/call", json!({"name": name, "arguments": args}));
        let result = &v["result"];
        if result.is_null() {
            return Err(one_line(&v.to_string(), 300));
        }
        let text = result["content"][0]["text"].as_str().unwrap_or("");
        if result["isError"] == true {
            return Err(text.to_owned());
        }
        if !result["structuredContent"].is_null() {
            return Ok(result["structuredContent"].clone());
        }
        Ok(serde_json::from_str(text).unwrap_or(Value::String(text.to_owned())))
    }

    /// Replaces a header for the session's later requests (an identity
    /// switch in mid-session).
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
    }

    /// Ends the session (its default sandbox goes with it).
    pub fn close(self) {
        let _ = Req::new("DELETE", "/mcp")
            .headers(&self.headers)
            .header("Mcp-Session-Id", &self.session)
            .send(self.port);
    }
}

//! One kernel process and the runs it carries out.
//!
//! A kernel starts below a shim like every other process (so ending it ends
//! whatever it started), as the requesting user, with requests on stdin,
//! the user's output on stdout and stderr and events as JSON lines on fd 3.
//! A run is over once the kernel said `done` for it and both output streams
//! carried its end marker, so no output of a run leaks into the next one.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use capsule_protocol::ConnectError;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::init::{Reaper, end_fields};
use crate::process::spawn::{self, SpawnDefaults};
use crate::process::tree;
use crate::users::Identity;

const PYTHON: &str = include_str!("kernel.py");
const JAVASCRIPT: &str = include_str!("kernel.js");
const BASH: &str = include_str!("kernel.sh");

/// How long output may still arrive after the kernel reported a run done:
/// user code that redirected its own stdout keeps the marker from ever
/// arriving there.
const MARKER_GRACE: Duration = Duration::from_secs(2);
/// How long output may still arrive after the kernel exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// The languages a context can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    JavaScript,
    Bash,
}

impl Language {
    /// Parses a language name as E2B's SDKs send it.
    pub fn parse(name: &str) -> Result<Language, ConnectError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "python" | "python3" | "py" => Ok(Language::Python),
            "javascript" | "js" | "node" | "nodejs" => Ok(Language::JavaScript),
            "bash" | "sh" | "shell" => Ok(Language::Bash),
            _ => Err(ConnectError::invalid_argument(format!(
                "language {name:?} is not supported; use python, javascript or bash"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::Bash => "bash",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::JavaScript => "node",
            Language::Bash => "bash",
        }
    }
}

/// What a run produced next.
#[derive(Debug)]
pub enum RunEvent {
    Stdout(String),
    Stderr(String),
    /// An event line from the kernel (a result, an error).
    Message(Value),
    Done {
        execution_count: u64,
    },
    /// The kernel ended (or broke its protocol) before the run was over.
    Died(String),
}

/// One of the kernel's output streams, with what was read but not yet
/// handed out (a possible start of the end marker, an unfinished UTF-8
/// character).
struct Output {
    pipe: Option<pipe::Receiver>,
    pending: Vec<u8>,
}

impl Output {
    fn new(pipe: pipe::Receiver) -> Self {
        Self {
            pipe: Some(pipe),
            pending: Vec::new(),
        }
    }
}

/// A running kernel.
pub struct Kernel {
    language: Language,
    /// The shim's pid: the root of the kernel's process tree.
    pid: i32,
    stdin: pipe::Sender,
    stdout: Output,
    stderr: Output,
    events: Option<BufReader<pipe::Receiver>>,
    event_line: Vec<u8>,
    exit: Option<oneshot::Receiver<capsule_sys::process::ExitStatus>>,
    ended: Option<String>,
    next_id: u64,
    /// Bash's start-up lines, sent ahead of the first request.
    prelude: Option<&'static str>,
}

/// A run in progress.
pub struct Run {
    id: u64,
    marker: Vec<u8>,
    stdout_over: bool,
    stderr_over: bool,
    done: Option<u64>,
    done_at: Option<Instant>,
    exited_at: Option<Instant>,
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), ConnectError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ConnectError::internal(format!("cannot create a pipe: {e}")))
}

/// Moves `fd` to a number of 10 or more, so placing descriptors at 3 and 4
/// in the child cannot overwrite one another.
fn high_fd(fd: OwnedFd) -> Result<OwnedFd, ConnectError> {
    rustix::io::fcntl_dupfd_cloexec(&fd, 10)
        .map_err(|e| ConnectError::internal(format!("cannot duplicate a pipe: {e}")))
}

fn receiver(fd: OwnedFd) -> Result<pipe::Receiver, ConnectError> {
    pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| ConnectError::internal(format!("kernel pipe: {e}")))
}

/// Quotes `s` for bash as `$'...'`, byte by byte.
fn bash_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("$'");
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('\'');
    out
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Where in `pending` to stop handing out text: before a possible start of
/// `marker` at the end, and before an unfinished UTF-8 character.
fn safe_len(pending: &[u8], marker: &[u8]) -> usize {
    let mut keep = 0;
    for k in (1..marker.len().min(pending.len() + 1)).rev() {
        if pending.ends_with(&marker[..k]) {
            keep = k;
            break;
        }
    }
    let end = pending.len() - keep;
    match std::str::from_utf8(&pending[..end]) {
        Ok(_) => end,
        // An incomplete character at the end: hold it back (at most 3 bytes).
        Err(e) if e.error_len().is_none() && end - e.valid_up_to() < 4 => e.valid_up_to(),
        Err(_) => end,
    }
}

/// Takes the text `out` may hand out for the run whose end is `marker`;
/// true as well when the marker arrived.
fn take_text(out: &mut Output, marker: &[u8]) -> (String, bool) {
    if let Some(at) = out.pending.windows(marker.len()).position(|w| w == marker) {
        let text = String::from_utf8_lossy(&out.pending[..at]).into_owned();
        out.pending.drain(..at + marker.len());
        return (text, true);
    }
    let n = safe_len(&out.pending, marker);
    let text = String::from_utf8_lossy(&out.pending[..n]).into_owned();
    out.pending.drain(..n);
    (text, false)
}

async fn read_some(pipe: &mut Option<pipe::Receiver>, buf: &mut Vec<u8>) -> usize {
    let Some(p) = pipe else {
        return std::future::pending().await;
    };
    let mut chunk = [0u8; 32 * 1024];
    match p.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

impl Kernel {
    /// Starts a kernel for `language` in `cwd` as `user`.
    pub fn start(
        language: Language,
        cwd: &str,
        user: &Identity,
        defaults: &SpawnDefaults,
        reaper: &Reaper,
    ) -> Result<Kernel, ConnectError> {
        let cwd_c = CString::new(std::path::Path::new(cwd).as_os_str().as_bytes())
            .map_err(|_| ConnectError::invalid_argument("cwd contains a NUL byte"))?;
        let env = spawn::environment(defaults, user, &BTreeMap::new(), false);
        let mut cmd = Command::new(language.program());
        match language {
            Language::Python => cmd.args(["-u", "-c", PYTHON]),
            Language::JavaScript => cmd.args(["-e", JAVASCRIPT]),
            Language::Bash => cmd.args(["--norc", "--noprofile", "--noediting", "+m", "-i"]),
        };
        cmd.env_clear().envs(&env).current_dir(cwd);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());

        let (events_rx, events_tx) = pipe_pair()?;
        let events_tx = high_fd(events_tx)?;
        // Bash writes job-control complaints on start-up: its real standard
        // error goes to fd 4 and is put in place by the start-up lines.
        let mut extra = vec![(events_tx, 3)];
        let mut stderr_rx = None;
        if language == Language::Bash {
            let (rx, tx) = pipe_pair()?;
            extra.push((high_fd(tx)?, 4));
            stderr_rx = Some(rx);
            cmd.stderr(Stdio::null());
        } else {
            cmd.stderr(Stdio::piped());
        }
        let targets: Vec<(i32, i32)> = extra.iter().map(|(fd, to)| (fd.as_raw_fd(), *to)).collect();
        // SAFETY: runs in the child between fork and exec and only calls
        // dup2, which is async-signal-safe, on descriptors that stay open
        // in the parent (`extra` lives until after the spawn).
        unsafe {
            cmd.pre_exec(move || {
                for &(from, to) in &targets {
                    if libc::dup2(from, to) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        spawn::under_shim(&mut cmd, false, spawn::switch_to(user), cwd_c);
        let mut child = cmd.spawn().map_err(|e| {
            let err = spawn::start_error(language.program(), &e);
            ConnectError::new(
                err.code,
                format!(
                    "cannot start the {} kernel: {}",
                    language.name(),
                    err.message
                ),
            )
        })?;
        drop(extra);
        let pid = child.id() as i32;
        let exit = reaper.register(pid);
        let stdin: OwnedFd = child.stdin.take().expect("stdin is piped").into();
        let stdout: OwnedFd = child.stdout.take().expect("stdout is piped").into();
        let stderr: OwnedFd = match stderr_rx {
            Some(rx) => rx,
            None => child.stderr.take().expect("stderr is piped").into(),
        };
        drop(child);
        let pipes = (|| {
            Ok::<_, ConnectError>((
                pipe::Sender::from_owned_fd(stdin)
                    .map_err(|e| ConnectError::internal(format!("kernel pipe: {e}")))?,
                receiver(stdout)?,
                receiver(stderr)?,
                receiver(events_rx)?,
            ))
        })();
        let (stdin, stdout, stderr, events) = match pipes {
            Ok(p) => p,
            Err(e) => {
                tokio::spawn(tree::kill_tree(pid));
                return Err(e);
            }
        };
        let kernel = Kernel {
            language,
            pid,
            stdin,
            stdout: Output::new(stdout),
            stderr: Output::new(stderr),
            events: Some(BufReader::new(events)),
            event_line: Vec::new(),
            exit: Some(exit),
            ended: None,
            next_id: 1,
            prelude: (language == Language::Bash).then_some(BASH),
        };
        Ok(kernel)
    }

    /// False once the kernel process has ended.
    pub fn alive(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        if let Some(exit) = &mut self.exit {
            match exit.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return true,
                Ok(status) => self.ended = Some(end_fields(status).1),
                Err(oneshot::error::TryRecvError::Closed) => self.ended = Some("ended".to_owned()),
            }
            self.exit = None;
        }
        false
    }

    /// Sends `code` to the kernel; the run's events come from `Run::next`.
    pub async fn begin(
        &mut self,
        code: &str,
        env: Option<&BTreeMap<String, String>>,
    ) -> Result<Run, String> {
        if code.contains('\0') {
            return Err("the code contains a NUL byte".to_owned());
        }
        let env = env.cloned().unwrap_or_default();
        if let Some(bad) = env.keys().find(|k| !valid_env_name(k)) {
            return Err(format!("invalid environment variable name {bad:?}"));
        }
        if let Some((k, _)) = env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(format!("environment variable {k:?} contains a NUL byte"));
        }
        let id = self.next_id;
        self.next_id += 1;
        let request = match self.language {
            Language::Python | Language::JavaScript => {
                let mut line =
                    serde_json::to_string(&json!({"id": id, "code": code, "env_vars": env}))
                        .expect("json values serialize");
                line.push('\n');
                line
            }
            Language::Bash => {
                let mut line = String::from("__capsule_status=130; __capsule_env");
                for (k, v) in &env {
                    let _ = write!(line, " {k} {}", bash_quote(v));
                }
                let _ = write!(
                    line,
                    "; eval {} </dev/null; __capsule_status=$?\n__capsule_finish {id}\n",
                    bash_quote(code)
                );
                line
            }
        };
        if let Some(prelude) = self.prelude.take() {
            self.stdin
                .write_all(prelude.as_bytes())
                .await
                .map_err(|e| format!("cannot set up the bash kernel: {e}"))?;
        }
        self.stdin
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("the kernel is not reading requests: {e}"))?;
        Ok(Run {
            id,
            marker: format!("\x1ecapsule-end-{id}\x1e\n").into_bytes(),
            stdout_over: false,
            stderr_over: false,
            done: None,
            done_at: None,
            exited_at: None,
        })
    }

    /// Asks the kernel to stop what it runs (as Ctrl-C would).
    pub fn interrupt(&self) {
        // The shim ignores SIGINT; the kernel and whatever it started in
        // its process group get it.
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(self.pid).expect("kernel pids are positive"),
            rustix::process::Signal::INT,
        );
    }

    /// Ends the kernel and everything it started.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if self.pid > 0 {
            let pid = self.pid;
            self.pid = 0;
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(tree::kill_tree(pid));
            } else {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid).expect("kernel pids are positive"),
                    rustix::process::Signal::KILL,
                );
            }
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.kill_now();
    }
}

impl Run {
    /// The run's next event; after `Done` or `Died` the run is over.
    pub async fn next(&mut self, k: &mut Kernel) -> RunEvent {
        loop {
            if self.stdout_over
                && self.stderr_over
                && let Some(execution_count) = self.done
            {
                return RunEvent::Done { execution_count };
            }
            // Output the kernel still owes after the run or the kernel ended.
            if let Some(at) = self.done_at
                && at.elapsed() >= MARKER_GRACE
            {
                self.stdout_over = true;
                self.stderr_over = true;
                continue;
            }
            if let Some(at) = self.exited_at
                && (at.elapsed() >= DRAIN_AFTER_EXIT
                    || (k.stdout.pipe.is_none() && k.stderr.pipe.is_none()))
            {
                let (out, _) = take_text_all(&mut k.stdout);
                if !out.is_empty() {
                    return RunEvent::Stdout(out);
                }
                let (err, _) = take_text_all(&mut k.stderr);
                if !err.is_empty() {
                    return RunEvent::Stderr(err);
                }
                return RunEvent::Died(format!(
                    "the {} kernel ended ({}); its state is lost and the next run starts a new one",
                    k.language.name(),
                    k.ended.as_deref().unwrap_or("ended")
                ));
            }
            let timer = match (self.done_at, self.exited_at) {
                (_, Some(at)) => Some(at + DRAIN_AFTER_EXIT),
                (Some(at), None) => Some(at + MARKER_GRACE),
                _ => None,
            };
            let Kernel {
                stdout,
                stderr,
                events,
                event_line,
                exit,
                ended,
                ..
            } = k;
            tokio::select! {
                biased;
                n = read_some(&mut stdout.pipe, &mut stdout.pending), if !self.stdout_over => {
                    if n == 0 {
                        stdout.pipe = None;
                        self.exited_at.get_or_insert_with(Instant::now);
                    }
                    let (text, over) = take_text(stdout, &self.marker);
                    self.stdout_over |= over;
                    if !text.is_empty() {
                        return RunEvent::Stdout(text);
                    }
                }
                n = read_some(&mut stderr.pipe, &mut stderr.pending), if !self.stderr_over => {
                    if n == 0 {
                        stderr.pipe = None;
                        self.exited_at.get_or_insert_with(Instant::now);
                    }
                    let (text, over) = take_text(stderr, &self.marker);
                    self.stderr_over |= over;
                    if !text.is_empty() {
                        return RunEvent::Stderr(text);
                    }
                }
                r = async {
                    match events {
                        Some(ev) => ev.read_until(b'\n', event_line).await,
                        None => std::future::pending().await,
                    }
                }, if self.done.is_none() => {
                    match r {
                        Ok(0) | Err(_) => {
                            *events = None;
                            self.exited_at.get_or_insert_with(Instant::now);
                        }
                        Ok(_) => {
                            let raw = std::mem::take(event_line);
                            let value: Value = match serde_json::from_slice(&raw) {
                                Ok(v) => v,
                                Err(e) => return RunEvent::Message(json!({
                                    "type": "error",
                                    "name": "KernelProtocolError",
                                    "value": format!("the kernel sent a malformed event: {e}"),
                                    "traceback": "",
                                })),
                            };
                            if value.get("type").and_then(Value::as_str) == Some("done") {
                                // A `done` of an earlier, abandoned run is not this one's.
                                if value.get("id").and_then(Value::as_u64) == Some(self.id) {
                                    self.done = Some(value.get("execution_count").and_then(Value::as_u64).unwrap_or(0));
                                    self.done_at = Some(Instant::now());
                                }
                                continue;
                            }
                            return RunEvent::Message(value);
                        }
                    }
                }
                status = async {
                    match exit {
                        Some(e) => e.await,
                        None => std::future::pending().await,
                    }
                }, if exit.is_some() => {
                    *ended = Some(match status {
                        Ok(s) => end_fields(s).1,
                        Err(_) => "ended".to_owned(),
                    });
                    *exit = None;
                    self.exited_at.get_or_insert_with(Instant::now);
                }
                _ = async {
                    match timer {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

/// Everything `out` holds, for when no marker can come any more.
fn take_text_all(out: &mut Output) -> (String, bool) {
    let text = String::from_utf8_lossy(&out.pending).into_owned();
    out.pending.clear();
    (text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_by_their_usual_names() {
        assert_eq!(Language::parse("Python").unwrap(), Language::Python);
        assert_eq!(Language::parse("js").unwrap(), Language::JavaScript);
        assert_eq!(Language::parse("bash").unwrap(), Language::Bash);
        let err = Language::parse("cobol").unwrap_err();
        assert!(err.message.contains("\"cobol\""), "{}", err.message);
    }

    #[test]
    fn bash_quoting_round_trips_through_bash() {
        let tricky = "it's a \\ \"test\"\n$HOME `id` \u{1f600}\t\x01";
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf %s {}", bash_quote(tricky)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), tricky);
    }

    #[test]
    fn text_stops_at_the_marker_and_before_partial_ones() {
        let marker = b"\x1ecapsule-end-1\x1e\n";
        let mut out = Output {
            pipe: None,
            pending: b"hello\x1ecapsule-e".to_vec(),
        };
        assert_eq!(take_text(&mut out, marker), ("hello".to_owned(), false));
        out.pending.extend_from_slice(b"nd-1\x1e\nlater");
        assert_eq!(take_text(&mut out, marker), (String::new(), true));
        assert_eq!(out.pending, b"later");
    }

    #[test]
    fn unfinished_characters_wait_for_their_last_bytes() {
        let marker = b"\x1ecapsule-end-1\x1e\n";
        let smile = "\u{1f600}".as_bytes();
        let mut out = Output {
            pipe: None,
            pending: [b"a".as_slice(), &smile[..2]].concat(),
        };
        assert_eq!(take_text(&mut out, marker).0, "a");
        out.pending.extend_from_slice(&smile[2..]);
        assert_eq!(take_text(&mut out, marker).0, "\u{1f600}");
    }

    #[test]
    fn environment_names_are_checked() {
        assert!(valid_env_name("MY_VAR1"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}

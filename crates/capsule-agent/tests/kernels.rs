//! The notebook kernels (src/interpreter/kernel.py and kernel.js), started the way the
//! agent starts them: the source on the command line, requests on stdin, the user's
//! output on fds 1 and 2 (closed by end markers), events as JSON lines on fd 3.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PYTHON_KERNEL: &str = include_str!("../src/interpreter/kernel.py");
const JS_KERNEL: &str = include_str!("../src/interpreter/kernel.js");

/// How long any single step may take before the test fails (instead of hanging).
const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Lang {
    Python,
    JavaScript,
}

impl Lang {
    fn program(self) -> &'static str {
        match self {
            Lang::Python => "python3",
            Lang::JavaScript => "node",
        }
    }

    /// Exactly how the agent starts the kernel.
    fn args(self) -> &'static [&'static str] {
        match self {
            Lang::Python => &["-u", "-c", PYTHON_KERNEL],
            Lang::JavaScript => &["-e", JS_KERNEL],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
        }
    }
}

/// Bytes from one of the kernel's output pipes, read by a thread.
struct Output {
    name: &'static str,
    chunks: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl Output {
    fn new(name: &'static str, mut pipe: impl Read + Send + 'static) -> Output {
        let (tx, chunks) = mpsc::channel();
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                if tx.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Output {
            name,
            chunks,
            buf: Vec::new(),
        }
    }

    /// What has arrived so far (for failure messages).
    fn so_far(&mut self) -> String {
        while let Ok(chunk) = self.chunks.try_recv() {
            self.buf.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Everything before `needle` (which is consumed too), failing after `TIMEOUT`.
    fn read_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(at) = find(&self.buf, needle.as_bytes()) {
                let text = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + needle.len());
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for {needle:?} on {}; got so far: {:?}",
                    self.name,
                    String::from_utf8_lossy(&self.buf)
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{} closed before {needle:?} arrived; got: {:?}",
                    self.name,
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn end_marker(id: u64) -> String {
    format!("\x1ecapsule-end-{id}\x1e\n")
}

/// One execution as seen by the agent.
#[derive(Debug)]
struct Outcome {
    /// The result and error events, in order.
    events: Vec<Value>,
    done: Value,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn main_result(&self) -> Option<&Value> {
        self.events
            .iter()
            .find(|e| e["type"] == "result" && e["is_main_result"] == true)
    }

    fn main_text(&self) -> Option<&str> {
        self.main_result()
            .map(|r| r["text"].as_str().expect("result without text"))
    }

    fn displayed(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == "result" && e["is_main_result"] == false)
            .collect()
    }

    fn error(&self) -> Option<&Value> {
        self.events.iter().find(|e| e["type"] == "error")
    }

    fn execution_count(&self) -> u64 {
        self.done["execution_count"]
            .as_u64()
            .expect("done without execution_count")
    }

    /// Panics (with everything that is known) unless the execution succeeded.
    fn ok(self) -> Self {
        assert!(self.error().is_none(), "unexpected error: {self:#?}");
        self
    }

    /// The error event, which must be there.
    fn err(&self) -> &Value {
        self.error()
            .unwrap_or_else(|| panic!("expected an error: {self:#?}"))
    }
}

struct Kernel {
    lang: Lang,
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    stdout: Output,
    stderr: Output,
    next_id: u64,
    /// The kernel's working directory.
    dir: tempfile::TempDir,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kernel {
    fn start(lang: Lang) -> Kernel {
        // A missing interpreter is a failure, not a reason to skip.
        let version = Command::new(lang.program()).arg("--version").output();
        match version {
            Ok(out) if out.status.success() => {}
            other => panic!(
                "`{} --version` failed ({other:?}): the {} kernel test needs `{}` on PATH",
                lang.program(),
                lang.name(),
                lang.program()
            ),
        }

        let dir = tempfile::tempdir().unwrap();
        // Events come back on fd 3 of the kernel. Both ends are close-on-exec; in the
        // child, dup2 puts the write end on fd 3 (and clears close-on-exec there).
        let (event_reader, event_writer) = std::io::pipe().unwrap();
        let write_fd = event_writer.as_raw_fd();
        let mut command = Command::new(lang.program());
        command
            .args(lang.args())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only calls the
        // async-signal-safe dup2/fcntl on descriptors that exist there.
        unsafe {
            command.pre_exec(move || {
                let r = if write_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) // dup2(3, 3) would keep close-on-exec
                } else {
                    libc::dup2(write_fd, 3)
                };
                if r == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", lang.program()));
        drop(command);
        drop(event_writer); // the kernel holds the only write end: EOF when it exits

        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(event_reader).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line).unwrap_or_else(
                    |e| json!({"type": "unparseable", "line": line, "error": e.to_string()}),
                );
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let stdout = Output::new("stdout", child.stdout.take().unwrap());
        let stderr = Output::new("stderr", child.stderr.take().unwrap());
        let mut kernel = Kernel {
            lang,
            child,
            stdin,
            events,
            stdout,
            stderr,
            next_id: 1,
            dir,
        };
        let ready = kernel.next_event("the ready event");
        assert_eq!(ready, json!({"type": "ready", "language": lang.name()}));
        kernel
    }

    fn next_event(&mut self, what: &str) -> Value {
        match self.events.recv_timeout(TIMEOUT) {
            Ok(event) => {
                assert_ne!(event["type"], "unparseable", "bad event line: {event}");
                event
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("{:?} kernel: timed out waiting for {what}", self.lang)
            }
            Err(RecvTimeoutError::Disconnected) => {
                thread::sleep(Duration::from_millis(200)); // let it exit and its stderr arrive
                let status = self.child.try_wait();
                let stderr = self.stderr.so_far();
                panic!(
                    "{:?} kernel closed its events while we waited for {what} (exit: {status:?}, stderr so far: {stderr:?})",
                    self.lang
                )
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Sends an execution request and returns its id, without waiting.
    fn submit(&mut self, code: &str, env_vars: Option<Value>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"id": id, "code": code});
        if let Some(env) = env_vars {
            request["env_vars"] = env;
        }
        self.send_line(&request.to_string());
        id
    }

    /// Collects the events and output of request `id` up to its done event and end markers.
    fn collect(&mut self, id: u64) -> Outcome {
        let mut events = Vec::new();
        let done = loop {
            let event = self.next_event(&format!("the end of request {id}"));
            if event["type"] == "done" {
                assert_eq!(
                    event["id"],
                    json!(id),
                    "done for another request; events: {events:#?}"
                );
                break event;
            }
            events.push(event);
        };
        let stdout = self.stdout.read_until(&end_marker(id));
        let stderr = self.stderr.read_until(&end_marker(id));
        Outcome {
            events,
            done,
            stdout,
            stderr,
        }
    }

    fn run_with_env(&mut self, code: &str, env_vars: Value) -> Outcome {
        let id = self.submit(code, Some(env_vars));
        self.collect(id)
    }

    fn run(&mut self, code: &str) -> Outcome {
        let id = self.submit(code, None);
        self.collect(id)
    }

    fn sigint(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child,
        // which has not been waited for yet (so the pid cannot have been reused).
        let r = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Closes stdin and waits for the kernel to exit.
    fn close_and_wait(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} kernel did not exit after EOF on stdin",
                self.lang
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

// --- shared checks ----------------------------------------------------------------------

fn env_vars_are_set_for_one_execution(lang: Lang, read_var: &str, shell: &str) {
    let mut k = Kernel::start(lang);
    let out = k
        .run_with_env(read_var, json!({"CAPSULE_KERNEL_TEST": "v1"}))
        .ok();
    assert_eq!(out.main_text(), Some("'v1'"), "{out:#?}");
    // Child processes see it too.
    let out = k
        .run_with_env(shell, json!({"CAPSULE_KERNEL_TEST": "v2"}))
        .ok();
    assert_eq!(out.stdout, "[v2]\n", "{out:#?}");
    // And afterwards it is gone again.
    let out = k.run(read_var).ok();
    assert!(
        matches!(out.main_text(), Some("None" | "undefined") | None),
        "{out:#?}"
    );
}

fn malformed_requests_do_not_stop_the_kernel(lang: Lang, code: &str, expected: &str) {
    let mut k = Kernel::start(lang);
    k.send_line("this is not json");
    let event = k.next_event("the protocol error");
    assert_eq!(event["type"], "error", "{event}");
    assert_eq!(event["name"], "ProtocolError", "{event}");

    // With a readable id, the request is also ended properly.
    k.send_line(r#"{"id": 1000, "code": 42}"#);
    let out = k.collect(1000);
    assert_eq!(out.err()["name"], "ProtocolError", "{out:#?}");
    assert_eq!(out.events.len(), 1, "{out:#?}");
    assert_eq!(out.execution_count(), 0, "{out:#?}");

    let out = k.run(code).ok();
    assert_eq!(out.main_text(), Some(expected), "{out:#?}");
    assert_eq!(out.execution_count(), 1, "{out:#?}");

    let status = k.close_and_wait();
    assert!(
        status.success(),
        "{lang:?} kernel exited with {status} after EOF"
    );
}

fn children_get_neither_the_request_nor_the_event_pipe(lang: Lang, run_shell: &str) {
    let mut k = Kernel::start(lang);
    let out = k.run(run_shell).ok();
    assert_eq!(out.stdout, "stdin=/dev/null\nfd3=closed\n", "{out:#?}");
}

/// Run by `sh -c`: what the shell got as stdin, and whether it has an fd 3.
const FD_CHECK: &str = "echo stdin=`readlink /proc/$$/fd/0`; test -e /proc/$$/fd/3 && echo fd3=open || echo fd3=closed";

// --- Python -----------------------------------------------------------------------------

#[test]
fn python_keeps_state_and_shows_the_last_expression() {
    let mut k = Kernel::start(Lang::Python);
    let out = k
        .run("x = 40\ndef add(a, b):\n    return a + b\nclass Point:\n    pass")
        .ok();
    assert!(out.events.is_empty(), "{out:#?}");
    assert_eq!(out.execution_count(), 1);

    let out = k.run("import math\nadd(x, 2)").ok();
    assert_eq!(out.main_text(), Some("42"), "{out:#?}");
    assert_eq!(out.main_result().unwrap()["is_main_result"], true);
    assert_eq!(out.execution_count(), 2);

    let out = k.run("p = Point()\nadd(x, 2);").ok();
    assert!(
        out.main_result().is_none(),
        "a trailing ; hides the result: {out:#?}"
    );
    let out = k.run("type(p).__name__, math.pi > 3  # a comment").ok();
    assert_eq!(out.main_text(), Some("('Point', True)"), "{out:#?}");
    let out = k.run("None").ok();
    assert!(out.events.is_empty(), "{out:#?}");
    let out = k.run("__name__").ok();
    assert_eq!(out.main_text(), Some("'__main__'"), "{out:#?}");
    assert_eq!(out.execution_count(), 6);
}

#[test]
fn python_output_goes_to_fds_1_and_2_before_the_end_marker() {
    let mut k = Kernel::start(Lang::Python);
    let code = "import os, subprocess, sys\n\
                print('hello')\n\
                print('oops', file=sys.stderr)\n\
                os.system('echo from-os-system')\n\
                subprocess.run(['sh', '-c', 'echo from-subprocess; echo err-from-subprocess >&2'])\n\
                sys.stdout.write('no newline')";
    let out = k.run(code).ok();
    assert_eq!(
        out.stdout, "hello\nfrom-os-system\nfrom-subprocess\nno newline",
        "{out:#?}"
    );
    assert_eq!(out.stderr, "oops\nerr-from-subprocess\n", "{out:#?}");
    assert_eq!(
        out.main_text(),
        Some("10"),
        "write() returns the length: {out:#?}"
    );
}

#[test]
fn python_rich_results_and_display() {
    let mut k = Kernel::start(Lang::Python);
    let out = k
        .run(
            "class Rich:\n    def _repr_html_(self):\n        return '<b>rich</b>'\n    \
             def _repr_png_(self):\n        return b'\\x89PNG'\n    def _repr_json_(self):\n        \
             return {'a': [1, 2]}\n    def __repr__(self):\n        return 'Rich()'\nRich()",
        )
        .ok();
    let main = out.main_result().unwrap_or_else(|| panic!("{out:#?}"));
    assert_eq!(main["text"], "Rich()");
    assert_eq!(main["html"], "<b>rich</b>");
    assert_eq!(main["png"], "iVBORw==", "base64 of the PNG bytes");
    assert_eq!(main["json"], json!({"a": [1, 2]}));
    assert!(main.get("markdown").is_none(), "{main}");

    let out = k.run("display(1, 'two')\ndisplay(Rich())\n3").ok();
    let shown = out.displayed();
    assert_eq!(shown.len(), 3, "{out:#?}");
    assert_eq!(shown[0]["text"], "1");
    assert_eq!(shown[1]["text"], "'two'");
    assert_eq!(shown[2]["html"], "<b>rich</b>");
    assert_eq!(out.main_text(), Some("3"));
    // Non-main results come before the main one, in order.
    assert_eq!(out.events.last().unwrap()["is_main_result"], true);
}

/// A stand-in for matplotlib (not installed here), importable from the kernel's directory.
const FAKE_MATPLOTLIB: [(&str, &str); 3] = [
    ("matplotlib/__init__.py", ""),
    (
        "matplotlib/figure.py",
        "class Figure:\n    def savefig(self, buf, format=None, **kwargs):\n        buf.write(b'PNG')\n    \
         def __repr__(self):\n        return '<Figure size 640x480 with 1 Axes>'\n",
    ),
    (
        "matplotlib/pyplot.py",
        "from matplotlib.figure import Figure\n_figs = {}\ndef figure(num=None):\n    \
         num = num or max(_figs, default=0) + 1\n    return _figs.setdefault(num, Figure())\n\
         def get_fignums():\n    return sorted(_figs)\ndef close(which='all'):\n    _figs.clear()\n\
         def plot(*args):\n    figure()\n    return ['line']\n",
    ),
];

#[test]
fn python_shows_open_matplotlib_figures() {
    let mut k = Kernel::start(Lang::Python);
    for (path, text) in FAKE_MATPLOTLIB {
        let path = k.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let out = k.run("import os\nos.environ['MPLBACKEND']").ok();
    assert_eq!(out.main_text(), Some("'Agg'"), "{out:#?}");

    let out = k
        .run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.figure(5);")
        .ok();
    let figures = out.displayed();
    assert_eq!(figures.len(), 2, "{out:#?}");
    for figure in figures {
        assert_eq!(figure["text"], "<Figure size 640x480 with 1 Axes>");
        assert_eq!(figure["png"], "UE5H", "base64 of the saved bytes");
    }
    // They were closed; a figure that is the cell's value is shown once, as the main result.
    let out = k.run("fig = plt.figure()\nfig").ok();
    assert_eq!(out.main_result().unwrap()["png"], "UE5H", "{out:#?}");
    assert!(out.displayed().is_empty(), "{out:#?}");
    assert_eq!(k.run("plt.get_fignums()").ok().main_text(), Some("[]"));
}

#[test]
fn python_errors_point_at_the_cell() {
    let mut k = Kernel::start(Lang::Python);
    k.run("def f():\n    return 1 / 0").ok();
    let out = k.run("y = 1\nf()");
    let err = out.err();
    assert_eq!(err["name"], "ZeroDivisionError");
    assert_eq!(err["value"], "division by zero");
    let tb = err["traceback"].as_str().unwrap();
    assert!(
        tb.contains("File \"<cell>\", line 2, in <module>\n    f()"),
        "{tb}"
    );
    assert!(
        tb.contains("File \"<cell>\", line 2, in f\n    return 1 / 0"),
        "{tb}"
    );
    assert!(
        !tb.contains("<string>") && !tb.contains("run_cell"),
        "kernel frames in: {tb}"
    );
    assert!(out.main_result().is_none());

    let out = k.run("x = (1,\n");
    let err = out.err();
    assert_eq!(err["name"], "SyntaxError", "{out:#?}");
    let tb = err["traceback"].as_str().unwrap();
    assert!(tb.contains("<cell>") && !tb.contains("ast.py"), "{tb}");

    let out = k.run("raise KeyError('k')");
    assert_eq!(out.err()["name"], "KeyError");
    // SystemExit does not end the kernel; the state is still there.
    assert_eq!(k.run("import sys; sys.exit(3)").err()["name"], "SystemExit");
    assert_eq!(k.run("y").ok().main_text(), Some("1"));
    assert_eq!(k.run("1").execution_count(), 7);
}

#[test]
fn python_shell_lines_and_magics() {
    let mut k = Kernel::start(Lang::Python);
    let out = k
        .run("!echo hi\nfor i in range(2):\n    !echo loop\ntext = '''\n!not a command\n'''\ntext")
        .ok();
    assert_eq!(out.stdout, "hi\nloop\nloop\n", "{out:#?}");
    assert_eq!(out.main_text(), Some("'\\n!not a command\\n'"));

    let out = k.run("print('before')\n%timeit 1 + 1");
    let err = out.err();
    assert_eq!(err["name"], "UsageError", "{out:#?}");
    assert!(err["value"].as_str().unwrap().contains("%timeit"), "{err}");
    assert_eq!(
        out.stdout, "",
        "an unsupported magic stops the whole cell: {out:#?}"
    );

    // `python3 -m pip` runs (whether or not pip is installed here).
    let out = k.run("%pip --version").ok();
    assert!(
        out.stdout.starts_with("pip ") || out.stderr.contains("No module named pip"),
        "{out:#?}"
    );
}

#[test]
fn python_env_vars() {
    env_vars_are_set_for_one_execution(
        Lang::Python,
        "import os\nos.environ.get('CAPSULE_KERNEL_TEST')",
        "import os\nos.system('echo \"[$CAPSULE_KERNEL_TEST]\"');",
    );
}

#[test]
fn python_sigint_interrupts_and_keeps_state() {
    let mut k = Kernel::start(Lang::Python);
    k.run("x = 7").ok();
    // Idle: nothing happens.
    k.sigint();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(k.run("x").ok().main_text(), Some("7"));

    let id = k.submit(
        "import time\nprint('sleeping', flush=True)\ntime.sleep(30)\nx = 8",
        None,
    );
    k.stdout.read_until("sleeping\n");
    let started = Instant::now();
    k.sigint();
    let out = k.collect(id);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let err = out.err();
    assert_eq!(err["name"], "KeyboardInterrupt", "{out:#?}");
    let tb = err["traceback"].as_str().unwrap();
    assert!(
        tb.contains("File \"<cell>\", line ") && !tb.contains("_on_sigint"),
        "{tb}"
    );

    assert_eq!(k.run("x").ok().main_text(), Some("7"));
    assert_eq!(k.run("x").execution_count(), 5);
}

#[test]
fn python_child_processes_get_neither_protocol_pipe() {
    children_get_neither_the_request_nor_the_event_pipe(
        Lang::Python,
        &format!("import os\nos.system({FD_CHECK:?});"),
    );
}

#[test]
fn python_malformed_requests_and_eof() {
    malformed_requests_do_not_stop_the_kernel(Lang::Python, "6 * 7", "42");
}

// --- JavaScript -------------------------------------------------------------------------

#[test]
fn javascript_keeps_state_and_shows_the_last_expression() {
    let mut k = Kernel::start(Lang::JavaScript);
    let out = k.run("let a = 40;\nconst b = 2;\nvar c = 'c';\nfunction add(x, y) { return x + y }\nclass Point {}").ok();
    assert!(out.events.is_empty(), "{out:#?}");
    assert_eq!(out.execution_count(), 1);

    let out = k.run("add(a, b)").ok();
    assert_eq!(out.main_text(), Some("42"), "{out:#?}");
    let out = k
        .run("[c, new Point() instanceof Point, typeof require('fs').readFileSync]")
        .ok();
    assert_eq!(
        out.main_text(),
        Some("[ 'c', true, 'function' ]"),
        "{out:#?}"
    );
    let out = k.run("undefined").ok();
    assert!(out.events.is_empty(), "{out:#?}");
    // Re-running a cell that declares let/const works, as in a notebook.
    let out = k.run("let a = 1; a").ok();
    assert_eq!(out.main_text(), Some("1"), "{out:#?}");
    assert_eq!(out.execution_count(), 5);
}

#[test]
fn javascript_top_level_await() {
    let mut k = Kernel::start(Lang::JavaScript);
    let out = k.run("await new Promise(r => setTimeout(r, 100)); 42").ok();
    assert_eq!(out.main_text(), Some("42"), "{out:#?}");
    let out = k
        .run("const v = await Promise.resolve(21);\nlet w = v * 2;")
        .ok();
    assert!(out.main_result().is_none(), "{out:#?}");
    let out = k.run("[v, w]").ok();
    assert_eq!(out.main_text(), Some("[ 21, 42 ]"), "{out:#?}");
    // A promise as the last value is awaited.
    let out = k.run("Promise.resolve('later')").ok();
    assert_eq!(out.main_text(), Some("'later'"), "{out:#?}");
    let out =
        k.run("new Promise((_, reject) => setTimeout(() => reject(new RangeError('nope')), 10))");
    assert_eq!(out.err()["name"], "RangeError", "{out:#?}");
}

#[test]
fn javascript_output_goes_to_fds_1_and_2_before_the_end_marker() {
    let mut k = Kernel::start(Lang::JavaScript);
    let code = "console.log('hello');\n\
                console.error('oops');\n\
                require('child_process').execSync('echo from-child; echo err-from-child >&2', {stdio: 'inherit'});\n\
                process.stdout.write('no newline');";
    let out = k.run(code).ok();
    assert_eq!(out.stdout, "hello\nfrom-child\nno newline", "{out:#?}");
    assert_eq!(out.stderr, "oops\nerr-from-child\n", "{out:#?}");
}

#[test]
fn javascript_rich_results_and_display() {
    let mut k = Kernel::start(Lang::JavaScript);
    let out = k
        .run("({ _repr_html_() { return '<b>rich</b>' }, _repr_png_() { return Buffer.from([0x89, 0x50, 0x4e, 0x47]) } })")
        .ok();
    let main = out.main_result().unwrap_or_else(|| panic!("{out:#?}"));
    assert_eq!(main["html"], "<b>rich</b>");
    assert_eq!(main["png"], "iVBORw==");

    let out = k.run("display(1, 'two'); display.html('<i>x</i>'); 3").ok();
    let shown = out.displayed();
    assert_eq!(shown.len(), 3, "{out:#?}");
    assert_eq!(shown[0]["text"], "1");
    assert_eq!(shown[1]["text"], "'two'");
    assert_eq!(shown[2]["html"], "<i>x</i>");
    assert_eq!(out.main_text(), Some("3"));
}

#[test]
fn javascript_errors() {
    let mut k = Kernel::start(Lang::JavaScript);
    k.run("function f() {\n  throw new TypeError('bad');\n}")
        .ok();
    let out = k.run("let before = 1;\nf();");
    let err = out.err();
    assert_eq!(err["name"], "TypeError");
    assert_eq!(err["value"], "bad");
    let tb = err["traceback"].as_str().unwrap();
    assert!(tb.starts_with("TypeError: bad\n"), "{tb}");
    assert!(tb.contains("<cell>:2:"), "{tb}");
    assert!(
        !tb.contains("[eval]") && !tb.contains("node:inspector"),
        "kernel frames in: {tb}"
    );

    let out = k.run("let = ;");
    assert_eq!(out.err()["name"], "SyntaxError", "{out:#?}");
    assert!(
        out.err()["traceback"]
            .as_str()
            .unwrap()
            .contains("<cell>:1"),
        "{out:#?}"
    );

    let out = k.run("throw 5");
    assert_eq!(out.err()["name"], "Error");
    assert_eq!(out.err()["value"], "5");

    let out = k.run("await Promise.reject(new Error('async'))");
    assert_eq!(out.err()["value"], "async", "{out:#?}");
    assert_eq!(k.run("1").execution_count(), 6);
}

#[test]
fn javascript_env_vars() {
    env_vars_are_set_for_one_execution(
        Lang::JavaScript,
        "process.env.CAPSULE_KERNEL_TEST",
        "require('child_process').execSync('echo \"[$CAPSULE_KERNEL_TEST]\"', {stdio: 'inherit'}); undefined",
    );
}

#[test]
fn javascript_sigint_interrupts_awaits_and_loops_and_keeps_state() {
    let mut k = Kernel::start(Lang::JavaScript);
    k.run("let x = 7").ok();
    // Idle: nothing happens.
    k.sigint();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(k.run("x").ok().main_text(), Some("7"));

    // An awaited promise...
    let id = k.submit(
        "console.log('waiting');\nawait new Promise(r => setTimeout(r, 30000));\nx = 8",
        None,
    );
    k.stdout.read_until("waiting\n");
    let started = Instant::now();
    k.sigint();
    let out = k.collect(id);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.err()["name"], "KeyboardInterrupt", "{out:#?}");

    // ...and synchronous code.
    let id = k.submit("console.log('spinning');\nwhile (true) {}", None);
    k.stdout.read_until("spinning\n");
    let started = Instant::now();
    k.sigint();
    let out = k.collect(id);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.err()["name"], "KeyboardInterrupt", "{out:#?}");

    assert_eq!(k.run("x").ok().main_text(), Some("7"));
    assert_eq!(k.run("x").execution_count(), 6);
}

#[test]
fn javascript_child_processes_get_neither_protocol_pipe() {
    children_get_neither_the_request_nor_the_event_pipe(
        Lang::JavaScript,
        &format!(
            "require('child_process').execSync({FD_CHECK:?}, {{stdio: 'inherit'}}); undefined"
        ),
    );
}

#[test]
fn javascript_malformed_requests_and_eof() {
    malformed_requests_do_not_stop_the_kernel(Lang::JavaScript, "6 * 7", "42");
}

//! The stand-alone agent binary, driven through the same client the server
//! uses: processes, terminals, deadlines, input, files and watching.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use capsule_protocol::client::{AgentClient, CallOptions, full_body};
use capsule_protocol::filesystem::{EntryResponse, ListDirRequest, ListDirResponse, PathRequest};
use capsule_protocol::paths;
use capsule_protocol::process::{
    CloseStdinRequest, DataEvent, Empty, EventMessage, ListResponse, ProcessConfig, ProcessEvent,
    ProcessInput, ProcessSelector, Pty, PtySize, SendInputRequest, SendSignalRequest, Signal,
    StartRequest, UpdateRequest,
};
use capsule_protocol::{Code, ConnectError};

struct AgentProcess {
    child: Child,
    client: AgentClient,
    dir: tempfile::TempDir,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent binary under test: the static build when `CAPSULE_AGENT_BIN`
/// names one (scripts/test does), else this workspace's build.
fn agent_binary() -> PathBuf {
    std::env::var_os("CAPSULE_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_capsule-agent")))
}

/// True when the ELF file has no program interpreter (is statically linked).
fn is_static_elf(path: &std::path::Path) -> bool {
    let data = std::fs::read(path).unwrap();
    assert_eq!(
        &data[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| u32_at(phoff + i * phentsize) != PT_INTERP)
}

#[test]
fn the_agent_under_test_is_static_when_asked_to_be() {
    if std::env::var_os("CAPSULE_AGENT_BIN").is_some() {
        assert!(
            is_static_elf(&agent_binary()),
            "{} is dynamically linked",
            agent_binary().display()
        );
    } else {
        // The plain workspace build links dynamically; the check itself must work.
        assert!(!is_static_elf(&agent_binary()));
    }
}

async fn start_agent() -> AgentProcess {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let child = Command::new(agent_binary())
        .args(["--socket", socket.to_str().unwrap(), "--user", "root"])
        .spawn()
        .unwrap();
    let client = AgentClient::unix(&socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.health().await.is_err() {
        assert!(Instant::now() < deadline, "agent never became healthy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    AgentProcess { child, client, dir }
}

fn shell(script: &str) -> StartRequest {
    StartRequest {
        process: ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            envs: Default::default(),
            cwd: Some("/tmp".into()),
        },
        ..Default::default()
    }
}

struct Collected {
    pid: u32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    pty: Vec<u8>,
    exit_code: i32,
    status: String,
    error: Option<ConnectError>,
}

async fn run(client: &AgentClient, req: StartRequest, opts: CallOptions) -> Collected {
    let mut stream = client
        .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &opts)
        .await
        .unwrap();
    let mut out = Collected {
        pid: 0,
        stdout: vec![],
        stderr: vec![],
        pty: vec![],
        exit_code: i32::MIN,
        status: String::new(),
        error: None,
    };
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(EventMessage { event }) => match event {
                ProcessEvent::Start(s) => out.pid = s.pid,
                ProcessEvent::Data(DataEvent::Stdout(b)) => out.stdout.extend(b),
                ProcessEvent::Data(DataEvent::Stderr(b)) => out.stderr.extend(b),
                ProcessEvent::Data(DataEvent::Pty(b)) => out.pty.extend(b),
                ProcessEvent::End(end) => {
                    out.exit_code = end.exit_code;
                    out.status = end.status;
                }
                ProcessEvent::Keepalive(_) => {}
            },
            Err(capsule_protocol::client::ClientError::Connect(e)) => out.error = Some(e),
            Err(e) => panic!("stream failed: {e}"),
        }
    }
    out
}

#[tokio::test]
async fn runs_a_command_and_streams_both_outputs() {
    let agent = start_agent().await;
    let out = run(
        &agent.client,
        shell("echo out; echo err >&2; exit 3"),
        CallOptions::default(),
    )
    .await;
    assert!(out.pid > 0);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.status, "exit status 3");
    assert!(out.error.is_none());
}

#[tokio::test]
async fn missing_programs_and_bad_directories_are_clear_errors() {
    let agent = start_agent().await;
    let mut req = shell("true");
    req.process.cmd = "/no/such/program".into();
    let err = agent
        .client
        .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &CallOptions::default())
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let mut req = shell("true");
    req.process.cwd = Some("/definitely/not/here".into());
    let err = agent
        .client
        .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &CallOptions::default())
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("/definitely/not/here"), "{err}");
}

#[tokio::test]
async fn deadline_kills_the_whole_tree_and_keeps_partial_output() {
    let agent = start_agent().await;
    let marker = agent.dir.path().join("survivor");
    // A grandchild in a session of its own, orphaned by a double fork,
    // tries to outlive the deadline.
    let script = format!(
        "echo started; (setsid sh -c 'sleep 2; touch {}' &); sleep 30",
        marker.display()
    );
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let started = Instant::now();
    let out = run(&agent.client, shell(&script), opts).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.stdout, b"started\n");
    assert_eq!(
        out.error.as_ref().map(|e| e.code),
        Some(Code::DeadlineExceeded)
    );
    assert_eq!(out.status, "signal: killed");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !marker.exists(),
        "a process of the tree survived the deadline"
    );
}

#[tokio::test]
async fn stdin_input_and_close() {
    let agent = start_agent().await;
    let mut req = shell("cat; echo done");
    req.stdin = Some(true);
    let client = agent.client.clone();
    let mut stream = client
        .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &CallOptions::default())
        .await
        .unwrap();
    let pid = match stream.next().await.unwrap().unwrap().event {
        ProcessEvent::Start(s) => s.pid,
        other => panic!("expected start, got {other:?}"),
    };
    let sel = ProcessSelector::Pid(pid);
    let listed: ListResponse = client
        .unary(paths::PROCESS_LIST, &Empty {}, &CallOptions::default())
        .await
        .unwrap();
    assert!(listed.processes.iter().any(|p| p.pid == pid));
    let _: Empty = client
        .unary(
            paths::PROCESS_SEND_INPUT,
            &SendInputRequest {
                process: sel.clone(),
                input: ProcessInput::Stdin(b"hello\n".to_vec()),
            },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let _: Empty = client
        .unary(
            paths::PROCESS_CLOSE_STDIN,
            &CloseStdinRequest { process: sel },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let mut stdout = Vec::new();
    let mut code = None;
    while let Some(Ok(msg)) = stream.next().await {
        match msg.event {
            ProcessEvent::Data(DataEvent::Stdout(b)) => stdout.extend(b),
            ProcessEvent::End(e) => code = Some(e.exit_code),
            _ => {}
        }
    }
    assert_eq!(stdout, b"hello\ndone\n");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn terminal_processes_echo_input_and_resize() {
    let agent = start_agent().await;
    let mut req = shell("stty size; read line; echo got:$line; stty size");
    req.pty = Some(Pty {
        size: PtySize {
            cols: 100,
            rows: 30,
        },
    });
    let client = agent.client.clone();
    let mut stream = client
        .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &CallOptions::default())
        .await
        .unwrap();
    let pid = match stream.next().await.unwrap().unwrap().event {
        ProcessEvent::Start(s) => s.pid,
        other => panic!("expected start, got {other:?}"),
    };
    let mut pty = Vec::new();
    // Wait for the first size line before resizing.
    while !String::from_utf8_lossy(&pty).contains("30 100") {
        match stream.next().await.unwrap().unwrap().event {
            ProcessEvent::Data(DataEvent::Pty(b)) => pty.extend(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    let sel = ProcessSelector::Pid(pid);
    let _: Empty = client
        .unary(
            paths::PROCESS_UPDATE,
            &UpdateRequest {
                process: sel.clone(),
                pty: Some(Pty {
                    size: PtySize {
                        cols: 120,
                        rows: 40,
                    },
                }),
            },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let _: Empty = client
        .unary(
            paths::PROCESS_SEND_INPUT,
            &SendInputRequest {
                process: sel,
                input: ProcessInput::Pty(b"abc\n".to_vec()),
            },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    while let Some(Ok(msg)) = stream.next().await {
        if let ProcessEvent::Data(DataEvent::Pty(b)) = msg.event {
            pty.extend(b);
        }
    }
    let text = String::from_utf8_lossy(&pty);
    assert!(text.contains("got:abc"), "{text}");
    assert!(text.contains("40 120"), "{text}");
}

#[tokio::test]
async fn sigkill_through_the_api() {
    let agent = start_agent().await;
    let client = agent.client.clone();
    let mut stream = client
        .server_stream::<_, EventMessage>(
            paths::PROCESS_START,
            &shell("sleep 60"),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let pid = match stream.next().await.unwrap().unwrap().event {
        ProcessEvent::Start(s) => s.pid,
        other => panic!("{other:?}"),
    };
    let _: Empty = client
        .unary(
            paths::PROCESS_SEND_SIGNAL,
            &SendSignalRequest {
                process: ProcessSelector::Pid(pid),
                signal: Signal::Sigkill,
            },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let mut status = String::new();
    while let Some(Ok(msg)) = stream.next().await {
        if let ProcessEvent::End(e) = msg.event {
            status = e.status;
        }
    }
    assert_eq!(status, "signal: killed");
    let err = client
        .unary::<_, Empty>(
            paths::PROCESS_SEND_SIGNAL,
            &SendSignalRequest {
                process: ProcessSelector::Pid(pid),
                signal: Signal::Sigkill,
            },
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn files_round_trip_and_listing() {
    let agent = start_agent().await;
    let base: PathBuf = agent.dir.path().join("data");
    let file = base.join("sub/hello.txt");
    let written = agent
        .client
        .write_file(
            file.to_str().unwrap(),
            None,
            Some(0o600),
            full_body(&b"hi there"[..]),
        )
        .await
        .unwrap();
    assert_eq!(written[0].path, file.display().to_string());
    let bytes = agent
        .client
        .read_file(file.to_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"hi there");
    let stat: EntryResponse = agent
        .client
        .unary(
            paths::FS_STAT,
            &PathRequest {
                path: file.display().to_string(),
            },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(stat.entry.size, 8);
    assert_eq!(stat.entry.mode & 0o777, 0o600);
    let listed: ListDirResponse = agent
        .client
        .unary(
            paths::FS_LIST_DIR,
            &ListDirRequest {
                path: base.display().to_string(),
                depth: 2,
            },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let names: Vec<_> = listed.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["sub", "hello.txt"]);
    let err = agent
        .client
        .read_file(base.join("missing").to_str().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // No temporary upload files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(base.join("sub"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

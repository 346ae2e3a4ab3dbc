//! The `capsule` command line, as a user runs it from a shell.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn run(server: &Server, args: &[&str]) -> Output {
    server.cli().args(args).output().expect("running capsule")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn create(server: &Server, template: &str) -> String {
    let o = run(server, &["create", template]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 8, "create prints the id: {id:?}");
    id
}

#[test]
fn create_exec_run_ls_inspect_timeout_rm() {
    let server = Server::start();
    let id = create(&server, "python");
    // exec: stdout and stderr pass through, the exit code is the command's.
    let o = run(
        &server,
        &[
            "exec",
            &id,
            "--",
            "python3",
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)",
        ],
    );
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(o.status.code(), Some(4));
    let o = run(
        &server,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo $X in $(pwd)",
            "ignored",
        ],
    );
    assert_eq!(stdout(&o), "in /workspace\n");
    let o = run(
        &server,
        &[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            &id,
            "--",
            "sh",
            "-c",
            "echo $X in $(pwd)",
        ],
    );
    assert_eq!(stdout(&o), "1 in /tmp\n");
    let o = run(&server, &["exec", "--root", &id, "--", "id", "-u"]);
    assert_eq!(stdout(&o), "0\n");
    let o = server
        .cli()
        .args(["exec", "-i", &id, "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map(|mut c| {
            c.stdin.take().unwrap().write_all(b"12345").unwrap();
            c.wait_with_output().unwrap()
        })
        .unwrap();
    assert_eq!(stdout(&o).trim(), "5");
    let o = run(
        &server,
        &["exec", "--timeout", "300ms", &id, "--", "sleep", "30"],
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    // run, with the template's interpreter; `-` reads the code from stdin.
    let o = run(&server, &["run", &id, "print(sum(range(10)))"]);
    assert_eq!(stdout(&o), "45\n");
    let mut child = server
        .cli()
        .args(["run", &id, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"print('from stdin')")
        .unwrap();
    assert_eq!(stdout(&child.wait_with_output().unwrap()), "from stdin\n");
    // --json gives the whole result.
    let o = run(&server, &["--json", "exec", &id, "--", "echo", "hi"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["exit_code"], 0);
    // ls, inspect, timeout, templates.
    let o = run(&server, &["ls"]);
    assert!(
        stdout(&o).contains(&id) && stdout(&o).contains("python") && stdout(&o).contains("running"),
        "{}",
        stdout(&o)
    );
    let o = run(&server, &["--json", "ls"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sandboxes"][0]["id"], id.as_str());
    let o = run(&server, &["inspect", &id]);
    assert!(stdout(&o).contains("template:   python"), "{}", stdout(&o));
    let o = run(&server, &["timeout", &id, "2h"]);
    assert!(
        o.status.success() && stdout(&o).contains("expires at"),
        "{}",
        stderr(&o)
    );
    let o = run(&server, &["templates"]);
    assert!(
        stdout(&o).contains("python") && stdout(&o).contains("python3 -c"),
        "{}",
        stdout(&o)
    );
    // rm, and errors say what went wrong.
    let o = run(&server, &["rm", &id]);
    assert!(o.status.success());
    let o = run(&server, &["exec", &id, "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not found") && stderr(&o).contains(&id),
        "{}",
        stderr(&o)
    );
    let o = run(&server, &["--json", "inspect", &id]);
    let v: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(v["error"]["kind"], "sandbox_not_found");
    let o = run(&server, &["create", "--ttl", "soon", "base"]);
    assert!(stderr(&o).contains("soon"), "{}", stderr(&o));
    server.shutdown_and_check_clean();
}

#[test]
fn cp_moves_files_and_directories_both_ways() {
    let server = Server::start();
    let id = create(&server, "base");
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("proj/src")).unwrap();
    std::fs::write(local.path().join("proj/src/main.sh"), "echo built\n").unwrap();
    std::fs::write(local.path().join("proj/README"), "readme").unwrap();
    let bin: Vec<u8> = (0..=255).collect();
    std::fs::write(local.path().join("blob.bin"), &bin).unwrap();
    let p = |rel: &str| local.path().join(rel).display().to_string();
    // Into the sandbox: a file, a directory, standard input.
    assert!(
        run(
            &server,
            &["cp", &p("blob.bin"), &format!("{id}:/workspace/")]
        )
        .status
        .success()
    );
    let o = run(&server, &["cp", &p("proj"), &format!("{id}:/workspace")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &server,
        &["exec", &id, "--", "sh", "/workspace/proj/src/main.sh"],
    );
    assert_eq!(stdout(&o), "built\n");
    let mut child = server
        .cli()
        .args(["cp", "-", &format!("{id}:/workspace/piped.txt")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped").unwrap();
    assert!(child.wait().unwrap().success());
    // Out of the sandbox.
    let out = tempfile::tempdir().unwrap();
    let o = run(
        &server,
        &[
            "cp",
            &format!("{id}:/workspace/blob.bin"),
            &out.path().display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.path().join("blob.bin")).unwrap(), bin);
    let o = run(
        &server,
        &[
            "cp",
            &format!("{id}:/workspace/proj"),
            &out.path().join("copy").display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.path().join("copy/src/main.sh")).unwrap(),
        "echo built\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("copy/README")).unwrap(),
        "readme"
    );
    let o = run(&server, &["cp", &format!("{id}:/workspace/piped.txt"), "-"]);
    assert_eq!(stdout(&o), "piped");
    // ls of a sandbox directory.
    let o = run(&server, &["ls", &format!("{id}:/workspace")]);
    assert!(
        stdout(&o).contains("blob.bin") && stdout(&o).contains("proj"),
        "{}",
        stdout(&o)
    );
    // Mistakes are explained.
    let o = run(&server, &["cp", &format!("{id}:/workspace/missing"), "."]);
    assert!(
        !o.status.success() && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
    let o = run(&server, &["cp", "a", "b"]);
    assert!(stderr(&o).contains("ID:PATH"), "{}", stderr(&o));
    server.shutdown_and_check_clean();
}

#[test]
fn the_cli_explains_an_unreachable_server() {
    let o = std::process::Command::new(common::BIN)
        .args(["--url", "http://127.0.0.1:9", "ls"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot reach the Capsule server at http://127.0.0.1:9"),
        "{}",
        stderr(&o)
    );
}

/// Opens a pseudo-terminal pair.
fn openpty(cols: u16, rows: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the out pointers are valid ints; name and termios may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: openpty returned two fresh descriptors we now own.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn shell_works_in_a_real_tty_and_follows_its_size() {
    let server = Server::start();
    let id = create(&server, "base");
    let (master, slave) = openpty(90, 25);
    let mut cmd = server.cli();
    cmd.args(["shell", &id])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; the terminal becomes
    // the child's controlling terminal so it gets SIGWINCH like in a shell.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let mut writer = std::fs::File::from(master.try_clone().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |needle: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!("never saw {needle:?} in {seen:?}"),
            }
        }
    };
    writer
        .write_all(b"stty size; echo marker-$((6*7))\r")
        .unwrap();
    wait_for("marker-42", &mut seen);
    assert!(
        seen.contains("25 90"),
        "the initial size did not come through: {seen:?}"
    );
    // Resize the local terminal: the shell inside follows.
    let ws = libc::winsize {
        ws_row: 50,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize for the duration of the call.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    std::thread::sleep(Duration::from_millis(300));
    writer.write_all(b"stty size\r").unwrap();
    wait_for("50 160", &mut seen);
    // Keys go through raw: Ctrl-C interrupts the remote command, not capsule.
    writer.write_all(b"sleep 100\r").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    writer.write_all(b"\x03").unwrap();
    writer.write_all(b"echo after-$((1+1))\r").unwrap();
    wait_for("after-2", &mut seen);
    writer.write_all(b"exit 5\r").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "capsule shell did not exit: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(5));
    server.shutdown_and_check_clean();
}

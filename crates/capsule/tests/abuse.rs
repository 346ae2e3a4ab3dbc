//! Bad input and abuse from inside sandboxes and through the API: each is
//! refused or contained, the server and other sandboxes stay healthy, and
//! nothing outside the sandbox changes.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Server, b64, unb64};
use serde_json::json;

/// A file on the host the sandboxes must never see or touch.
fn host_marker() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("capsule-host")
        .tempdir_in("/tmp")
        .unwrap();
    let marker = dir.path().join("secret.txt");
    std::fs::write(&marker, "host secret").unwrap();
    (dir, marker)
}

#[test]
fn paths_never_leave_the_sandbox() {
    let server = Server::start();
    let id = server.create("base");
    let (_dir, marker) = host_marker();
    let marker_s = marker.to_str().unwrap();
    // `..` above the root is refused, with the path in the message.
    for path in [
        "/../etc/passwd",
        "../../../etc/passwd",
        "/workspace/../../../../etc",
    ] {
        let e = server.err("sandbox.v1.readFile", json!({"id": id, "path": path}));
        assert_eq!(e["data"]["kind"], "path_outside_sandbox", "{path}: {e}");
        let e = server.err(
            "sandbox.v1.writeFile",
            json!({"id": id, "path": path, "content": b64(b"x")}),
        );
        assert_eq!(e["data"]["kind"], "path_outside_sandbox", "{path}: {e}");
    }
    // Host paths mean paths inside the sandbox: the host's files are not there.
    let e = server.err("sandbox.v1.readFile", json!({"id": id, "path": marker_s}));
    assert_eq!(e["data"]["kind"], "file_not_found");
    let e = server.err(
        "sandbox.v1.readFile",
        json!({"id": id, "path": "/etc/shadow"}),
    );
    assert_eq!(e["data"]["kind"], "file_not_found");
    // Symlinks planted inside resolve inside.
    server.sh(&id, &format!("ln -s / /workspace/root; ln -s {marker_s} /workspace/to-marker; ln -s /proc/1/root /workspace/init-root"));
    let r = server.ok(
        "sandbox.v1.readFile",
        json!({"id": id, "path": "/workspace/root/etc/hostname"}),
    );
    assert_eq!(unb64(r["content"].as_str().unwrap()), b"capsule\n");
    let e = server.err(
        "sandbox.v1.readFile",
        json!({"id": id, "path": "/workspace/to-marker"}),
    );
    assert_eq!(e["data"]["kind"], "file_not_found");
    // /proc/1/root is a magic link: the file API does not follow those at
    // all (they lead to whatever the agent holds), and says so.
    let e = server.err(
        "sandbox.v1.listDir",
        json!({"id": id, "path": "/workspace/init-root/workspace"}),
    );
    assert_eq!(e["data"]["kind"], "permission_denied", "{e}");
    assert!(e["message"].as_str().unwrap().contains("magic link"), "{e}");
    // Writing through a link to a host path creates the file inside only.
    server.ok(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "/workspace/to-marker", "content": b64(b"pwned"), "user": "root"}),
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "host secret");
    let r = server.exec(&id, json!(["cat", marker_s]));
    assert_eq!(r["stdout"], "pwned");
    // The agent's own /proc entries are not readable through the API.
    for path in ["/proc/1/environ", "/proc/self/environ", "/proc/1/mem"] {
        let e = server.err(
            "sandbox.v1.readFile",
            json!({"id": id, "path": path, "user": "root"}),
        );
        assert_eq!(e["data"]["kind"], "permission_denied", "{path}: {e}");
    }
    // From inside, the host's tree is unreachable.
    let r = server.sh(
        &id,
        &format!("cat {marker_s}; ls /proc/1/root/tmp; cat /proc/1/root/etc/hostname"),
    );
    assert!(
        !r["stdout"].as_str().unwrap().contains("host secret"),
        "{r}"
    );
    // The agent's root is its own, and not even that is open to the user.
    assert!(
        r["stderr"]
            .as_str()
            .unwrap()
            .contains("/proc/1/root/tmp': Permission denied"),
        "{r}"
    );
    server.shutdown_and_check_clean();
}

#[test]
fn sandbox_root_is_not_host_root_and_cannot_reconfigure_the_kernel() {
    let server = Server::start();
    let id = server.create("base");
    let as_root = |cmd: &str| {
        server.ok(
            "sandbox.v1.exec",
            json!({"id": id, "cmd": cmd, "user": "root"}),
        )
    };
    // Root inside maps to an unprivileged host id.
    let r = as_root("cat /proc/self/uid_map");
    let fields: Vec<u64> = r["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields[0], 0);
    assert_ne!(fields[1], 0, "sandbox root must not be host root");
    as_root("touch /workspace/owned-by-root");
    // The sandbox's own files: in its btrfs subvolume, or its directory.
    let meta = ["native/store/sandboxes", "native/sandboxes"]
        .iter()
        .find_map(|d| {
            std::fs::metadata(
                server
                    .state
                    .join(d)
                    .join(&id)
                    .join("upper/workspace/owned-by-root"),
            )
            .ok()
        })
        .expect("the file is in the sandbox's upper layer");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta) as u64, fields[1]);
    // /proc/sys is read-only, mounting and new namespaces are refused.
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let flipped = if swappiness.trim() == "1" { "2" } else { "1" };
    let r = as_root(&format!(
        "echo {flipped} > /proc/sys/vm/swappiness; echo rc=$?"
    ));
    assert!(!r["stdout"].as_str().unwrap().contains("rc=0"), "{r}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        swappiness
    );
    let r = as_root("echo 1 > /proc/sysrq-trigger; echo rc=$?");
    assert!(!r["stdout"].as_str().unwrap().contains("rc=0"), "{r}");
    let r = as_root("mount -t tmpfs none /mnt; echo rc=$?");
    assert!(!r["stdout"].as_str().unwrap().contains("rc=0"), "{r}");
    let r = as_root("unshare -U true; echo rc=$?; unshare -n true; echo rc=$?");
    assert!(!r["stdout"].as_str().unwrap().contains("rc=0"), "{r}");
    let r = as_root("touch /sys/kernel/x; echo rc=$?");
    assert!(!r["stdout"].as_str().unwrap().contains("rc=0"), "{r}");
    // Capabilities: no admin, no raw network, no ptrace of the agent.
    let r = as_root("grep CapEff /proc/self/status");
    let caps = u64::from_str_radix(
        r["stdout"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    assert_eq!(caps & (1 << 21), 0, "CAP_SYS_ADMIN kept");
    assert_eq!(caps & (1 << 13), 0, "CAP_NET_RAW kept");
    assert_eq!(caps & (1 << 19), 0, "CAP_SYS_PTRACE kept");
    let r = server.exec(&id, json!("grep CapEff /proc/self/status"));
    assert!(
        r["stdout"].as_str().unwrap().contains("0000000000000000"),
        "the user has capabilities: {r}"
    );
    // no_new_privs holds for everything in the sandbox.
    assert!(
        server.exec(&id, json!("grep NoNewPrivs /proc/self/status"))["stdout"]
            .as_str()
            .unwrap()
            .contains('1')
    );
    server.shutdown_and_check_clean();
}

#[test]
fn host_loopback_services_are_unreachable() {
    let server = Server::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let id = server.create("python");
    let code = format!(
        "import socket\ns=socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('127.0.0.1',{port}))\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)"
    );
    let r = server.ok("sandbox.v1.run", json!({"id": id, "code": code}));
    assert!(r["stdout"].as_str().unwrap().starts_with("refused"), "{r}");
    assert!(
        listener.accept().is_err(),
        "the host listener saw a connection"
    );
    // Only loopback exists inside.
    let r = server.exec(
        &id,
        json!("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"),
    );
    assert_eq!(r["stdout"], "lo\n");
    // Nor can the server's own API be reached.
    let api = format!(
        "import socket\ns=socket.socket()\ns.settimeout(2)\nprint(s.connect_ex(('127.0.0.1',{})))",
        server.port
    );
    let r = server.ok("sandbox.v1.run", json!({"id": id, "code": api}));
    assert_ne!(r["stdout"], "0\n");
    server.shutdown_and_check_clean();
}

#[test]
fn a_fork_bomb_is_contained() {
    let server = Server::start_with(&["--pids", "64"]);
    let bomb = server.create("base");
    let other = server.create("base");
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": bomb, "cmd": ["bash", "-c", "f(){ f | f & }; f; sleep 60"], "timeout_ms": 4000}),
    );
    // It ran into the process limit and was ended, children and all.
    assert_eq!(r["timed_out"], true, "{r}");
    assert!(
        r["stderr"]
            .as_str()
            .unwrap()
            .contains("Resource temporarily unavailable"),
        "{r}"
    );
    // The neighbour and the server keep answering during and after.
    let t = Instant::now();
    assert_eq!(server.exec(&other, json!(["echo", "ok"]))["stdout"], "ok\n");
    assert!(t.elapsed() < Duration::from_secs(10));
    // The bomb's sandbox recovers once its processes are gone.
    let ok = common::eventually(Duration::from_secs(10), || {
        server.rpc("sandbox.v1.exec", json!({"id": bomb, "cmd": ["true"]}))["result"]["exit_code"]
            == 0
    });
    assert!(ok, "the sandbox stayed unusable");
    server.shutdown_and_check_clean();
}

#[test]
fn a_memory_hog_is_killed_and_the_sandbox_survives() {
    let server = Server::start();
    let id = server.ok(
        "sandbox.v1.create",
        json!({"template": "python", "memory_mb": 64}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = server.ok(
        "sandbox.v1.run",
        json!({"id": id, "code": "x = bytearray(512 * 1024 * 1024)\nprint('allocated')", "timeout_ms": 20000}),
    );
    assert!(!r["stdout"].as_str().unwrap().contains("allocated"), "{r}");
    assert!(r["signal"] == 9 || r["exit_code"] != 0, "{r}");
    assert_eq!(
        server.exec(&id, json!(["echo", "alive"]))["stdout"],
        "alive\n"
    );
    server.shutdown_and_check_clean();
}

#[test]
fn filling_tmp_fails_the_write_not_the_sandbox() {
    let server = Server::start();
    let id = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "memory_mb": 128}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "head -c 127M /dev/zero > /tmp/fill", "timeout_ms": 30000}),
    );
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("No space left"),
        "{r}"
    );
    // The sandbox, its agent and the files it had are all still there.
    assert_eq!(
        server.ok("sandbox.v1.get", json!({"id": id}))["state"],
        "running"
    );
    server.exec(&id, json!(["rm", "/tmp/fill"]));
    assert_eq!(
        server.exec(&id, json!(["echo", "alive"]))["stdout"],
        "alive\n"
    );
    server.shutdown_and_check_clean();
}

#[test]
fn output_floods_are_capped_and_sigterm_is_no_shield() {
    let server = Server::start_with(&["--output-limit", "1048576"]);
    let id = server.create("base");
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "yes flood", "timeout_ms": 3000}),
    );
    assert_eq!(r["timed_out"], true, "{}", &r.to_string()[..300]);
    assert_eq!(r["stdout_truncated"], true);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1 << 20);
    let t = Instant::now();
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "trap '' TERM INT HUP; echo armored; sleep 60", "timeout_ms": 800}),
    );
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["stdout"], "armored\n");
    assert!(t.elapsed() < Duration::from_secs(15));
    server.shutdown_and_check_clean();
}

#[test]
fn sandboxes_cannot_see_each_other() {
    let server = Server::start();
    let a = server.create("base");
    let b = server.create("base");
    server.sh(&a, "echo a-secret > /workspace/secret; sleep 300 &");
    let r = server.sh(&b, "ls /workspace; ps -eo comm= | grep -c sleep; cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'a-secre[t]'");
    let out = r["stdout"].as_str().unwrap();
    assert!(!out.contains("secret\n"), "{out}");
    assert!(
        out.lines().all(|l| l == "0"),
        "b sees a's processes or files: {out}"
    );
    let e = server.err(
        "sandbox.v1.readFile",
        json!({"id": b, "path": "/workspace/secret"}),
    );
    assert_eq!(e["data"]["kind"], "file_not_found");
    server.shutdown_and_check_clean();
}

#[test]
fn the_server_survives_garbage_on_the_wire() {
    let server = Server::start();
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /rpc HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{",
        b"POST /rpc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(&mut s, raw).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    let id = server.create("base");
    assert_eq!(server.exec(&id, json!(["echo", "ok"]))["stdout"], "ok\n");
    server.shutdown_and_check_clean();
}

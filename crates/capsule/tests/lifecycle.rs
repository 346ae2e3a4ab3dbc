//! Lifetimes: expiry, restarts (graceful and kill -9), sandboxes whose init
//! dies, and that nothing is ever left behind.

mod common;

use std::time::{Duration, Instant};

use common::{Server, b64, eventually};
use serde_json::json;

fn init_pid(server: &Server, id: &str) -> i32 {
    let text = std::fs::read_to_string(
        server
            .state
            .join("native/sandboxes")
            .join(id)
            .join("init.pid"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["pid"].as_i64().unwrap() as i32
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn sandboxes_are_gone_about_a_second_after_they_expire() {
    let server = Server::start();
    let r = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "ttl_ms": 2000}),
    );
    let id = r["id"].as_str().unwrap().to_owned();
    let pid = init_pid(&server, &id);
    let created = Instant::now();
    // Still there before its time.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        server.exec(&id, json!(["echo", "alive"]))["stdout"],
        "alive\n"
    );
    // Gone (processes, files) soon after it.
    let gone = eventually(Duration::from_secs(6), || {
        !alive(pid) && !server.sandbox_dirs().contains(&id)
    });
    assert!(gone, "the sandbox outlived its ttl");
    let took = created.elapsed();
    assert!(
        took < Duration::from_millis(2000 + 2500),
        "removed {took:?} after create for a 2 s ttl"
    );
    let e = server.err("sandbox.v1.exec", json!({"id": id, "cmd": ["true"]}));
    assert_eq!(e["data"]["kind"], "sandbox_expired", "{e}");
    let e = server.err("sandbox.v1.get", json!({"id": id}));
    assert_eq!(e["data"]["kind"], "sandbox_expired");
    server.shutdown_and_check_clean();
}

#[test]
fn set_timeout_extends_and_shortens_a_life() {
    let server = Server::start();
    let id = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "ttl_ms": 1500}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.ok("sandbox.v1.setTimeout", json!({"id": id, "ttl_ms": 60_000}));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.exec(&id, json!(["true"]))["exit_code"], 0);
    server.ok("sandbox.v1.setTimeout", json!({"id": id, "ttl_ms": 1000}));
    assert!(eventually(Duration::from_secs(5), || !server
        .sandbox_dirs()
        .contains(&id)));
    server.shutdown_and_check_clean();
}

#[test]
fn a_graceful_restart_keeps_sandboxes_and_their_files() {
    let mut server = Server::start();
    let id = server.create("python");
    server.ok(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "notes.txt", "content": b64(b"kept")}),
    );
    server.sh(&id, "sleep 300 >/dev/null 2>&1 &");
    let pid = init_pid(&server, &id);
    server.restart();
    assert!(alive(pid), "the sandbox died with the server");
    let list = server.ok("sandbox.v1.list", json!({}));
    assert_eq!(list["sandboxes"][0]["id"], id.as_str());
    let r = server.ok(
        "sandbox.v1.readFile",
        json!({"id": id, "path": "notes.txt"}),
    );
    assert_eq!(r["content"], b64(b"kept"));
    assert_eq!(server.exec(&id, json!("pgrep -c sleep"))["stdout"], "1\n");
    server.shutdown_and_check_clean();
}

#[test]
fn kill_9_of_the_server_loses_nothing_and_leaks_nothing() {
    let mut server = Server::start();
    let keep = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "ttl_ms": 600_000, "metadata": {"k": "v"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let short = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "ttl_ms": 1500}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dies = server.create("base");
    server.ok(
        "sandbox.v1.writeFile",
        json!({"id": keep, "path": "data.bin", "content": b64(&[1, 2, 3])}),
    );
    let short_pid = init_pid(&server, &short);
    let dies_pid = init_pid(&server, &dies);
    server.kill9();
    // While the server is down: one sandbox expires, one loses its init.
    // SAFETY: kill takes integers; the pid is a sandbox this test created.
    unsafe { libc::kill(dies_pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(2500));
    server.restart();
    // The long-lived one is back, with its file and metadata.
    let info = server.ok("sandbox.v1.get", json!({"id": keep}));
    assert_eq!(info["state"], "running");
    assert_eq!(info["metadata"]["k"], "v");
    let r = server.ok(
        "sandbox.v1.readFile",
        json!({"id": keep, "path": "data.bin"}),
    );
    assert_eq!(r["content"], b64(&[1, 2, 3]));
    assert_eq!(server.exec(&keep, json!(["echo", "ok"]))["stdout"], "ok\n");
    // The expired one is gone, processes and files.
    assert!(!alive(short_pid));
    assert!(!server.sandbox_dirs().contains(&short));
    assert_eq!(
        server.err("sandbox.v1.get", json!({"id": short}))["data"]["kind"],
        "sandbox_expired"
    );
    // The one whose init died is reported failed, and cleaned up.
    let failed = server.ok("sandbox.v1.get", json!({"id": dies}));
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("restart"),
        "{failed}"
    );
    assert!(!server.sandbox_dirs().contains(&dies));
    let e = server.err("sandbox.v1.exec", json!({"id": dies, "cmd": ["true"]}));
    assert_eq!(e["data"]["kind"], "sandbox_not_running");
    server.shutdown_and_check_clean();
}

#[test]
fn a_sandbox_whose_init_dies_is_failed_with_the_reason_and_reclaimed() {
    let server = Server::start();
    let id = server.create("base");
    let other = server.create("base");
    let pid = init_pid(&server, &id);
    // SAFETY: kill takes integers; the pid is a sandbox this test created.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let failed = eventually(Duration::from_secs(10), || {
        server.ok("sandbox.v1.get", json!({"id": id}))["state"] == "failed"
    });
    assert!(failed);
    let info = server.ok("sandbox.v1.get", json!({"id": id}));
    assert!(info["error"].as_str().unwrap().contains("killed"), "{info}");
    assert!(eventually(Duration::from_secs(10), || !server
        .sandbox_dirs()
        .contains(&id)));
    // Listing shows it, so the owner can see why; deleting forgets it.
    let list = server.ok("sandbox.v1.list", json!({}));
    assert!(
        list["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str() && s["state"] == "failed")
    );
    server.ok("sandbox.v1.delete", json!({"id": id}));
    assert_eq!(
        server.err("sandbox.v1.get", json!({"id": id}))["data"]["kind"],
        "sandbox_not_found"
    );
    // Its neighbour never noticed.
    assert_eq!(
        server.exec(&other, json!(["echo", "fine"]))["stdout"],
        "fine\n"
    );
    server.shutdown_and_check_clean();
}

#[test]
fn many_sandboxes_come_and_go_without_leaks() {
    let server = Server::start();
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = server.create(if i % 2 == 0 { "base" } else { "python" });
        server.sh(&id, "echo x > /workspace/f; sleep 100 &");
        ids.push(id);
    }
    for id in &ids[..6] {
        server.ok("sandbox.v1.delete", json!({"id": id}));
        assert_eq!(
            server.err("sandbox.v1.delete", json!({"id": id}))["data"]["kind"],
            "sandbox_not_found"
        );
    }
    server.shutdown_and_check_clean();
}

#[test]
fn a_command_cut_short_by_its_sandbox_ending_says_why() {
    let server = std::sync::Arc::new(Server::start());
    let expiring = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "ttl_ms": 2000}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = server.err(
        "sandbox.v1.exec",
        json!({"id": expiring, "cmd": "echo hi; sleep 10"}),
    );
    assert_eq!(e["data"]["kind"], "sandbox_expired", "{e}");

    let deleted = server.create("base");
    let s2 = server.clone();
    let id2 = deleted.clone();
    let running = std::thread::spawn(move || {
        s2.err("sandbox.v1.exec", json!({"id": id2, "cmd": "sleep 10"}))
    });
    std::thread::sleep(Duration::from_millis(700));
    server.ok("sandbox.v1.delete", json!({"id": deleted}));
    let e = running.join().unwrap();
    assert_eq!(e["data"]["kind"], "sandbox_not_found", "{e}");
    std::sync::Arc::try_unwrap(server)
        .ok()
        .expect("the thread is done")
        .shutdown_and_check_clean();
}

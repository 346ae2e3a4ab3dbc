//! The native backend started by an unprivileged user: sandboxes still
//! work, with subordinate ids through newuidmap, and without cgroups the
//! server says so once and goes on.

mod common;

use common::{Server, b64, test_user, unb64};
use serde_json::json;

#[test]
fn an_unprivileged_server_runs_sandboxes() {
    let user = test_user();
    let server = Server::start_as(&user, &[]);
    let id = server.create("python");
    // The sandbox user is uid 1000 inside, mapped to a subordinate id.
    let r = server.exec(&id, json!("id -u; cat /proc/self/uid_map"));
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("1000\n"), "{out}");
    let host_uid: u32 = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", &user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let first_map: Vec<u32> = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(
        first_map,
        vec![0, host_uid, 1],
        "sandbox root is the server's own user"
    );
    // Everything else works as with root: files, run, isolation.
    server.ok(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "a.txt", "content": b64(b"rootless")}),
    );
    let back = server.ok("sandbox.v1.readFile", json!({"id": id, "path": "a.txt"}));
    assert_eq!(unb64(back["content"].as_str().unwrap()), b"rootless");
    assert_eq!(
        server.ok("sandbox.v1.run", json!({"id": id, "code": "print(2**10)"}))["stdout"],
        "1024\n"
    );
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "mount -t tmpfs x /mnt; echo rc=$?", "user": "root"}),
    );
    assert!(!r["stdout"].as_str().unwrap().contains("rc=0"), "{r}");
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "echo x > /workspace/t; sleep 1 & wait", "timeout_ms": 500}),
    );
    assert_eq!(r["timed_out"], true);
    // Without delegated cgroups the server warned once and carried on.
    let log = server.log_text();
    assert!(
        log.contains("not delegated") || log.contains("cgroup"),
        "{log}"
    );
    // Files owned by subordinate ids are removed on delete all the same.
    server.ok("sandbox.v1.delete", json!({"id": id}));
    assert!(
        server.sandbox_dirs().is_empty(),
        "{:?}",
        server.sandbox_dirs()
    );
    server.shutdown_and_check_clean();
}

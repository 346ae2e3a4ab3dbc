//! Choosing the isolation backend per sandbox: a real server started with
//! `--runtimes native,gvisor,runc,crun`, real OCI runtimes (each one this
//! host has), the real static agent inside, and the same API on top.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{Server, is_root, unb64};
use serde_json::json;

/// The static agent OCI sandboxes run: `CAPSULE_AGENT_BIN`, or built with
/// `scripts/build-agent`.
fn agent_bin() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("CAPSULE_AGENT_BIN") {
                return PathBuf::from(p);
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let out = std::process::Command::new(root.join("scripts/build-agent"))
                .current_dir(&root)
                .output()
                .expect("running scripts/build-agent");
            assert!(
                out.status.success(),
                "scripts/build-agent failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            root.join(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// The OCI runtimes installed here, by the names sandboxes use.
fn installed() -> Vec<&'static str> {
    [("gvisor", "runsc"), ("runc", "runc"), ("crun", "crun")]
        .into_iter()
        .filter(|(_, bin)| {
            ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
                .iter()
                .any(|d| Path::new(d).join(bin).is_file())
        })
        .map(|(name, _)| name)
        .collect()
}

fn start() -> Server {
    let agent = agent_bin();
    Server::start_with(&[
        "--runtimes",
        "native,gvisor,runc,crun",
        "--agent-bin",
        agent.to_str().unwrap(),
    ])
}

#[test]
fn each_sandbox_runs_on_the_runtime_it_asked_for() {
    if !is_root() {
        eprintln!("skipped: the OCI runtimes need root");
        return;
    }
    let runtimes = installed();
    if runtimes.is_empty() {
        assert!(
            std::env::var_os("CAPSULE_REQUIRE_OCI").is_none(),
            "CAPSULE_REQUIRE_OCI is set but no OCI runtime is installed"
        );
        eprintln!("skipped: no OCI runtime (runsc, runc, crun) is installed");
        return;
    }
    let server = start();
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut ids = Vec::new();
    for rt in std::iter::once("native").chain(runtimes.iter().copied()) {
        let created = server.ok(
            "sandbox.v1.create",
            json!({"template": "python", "runtime": rt}),
        );
        let id = created["id"].as_str().unwrap().to_owned();
        let info = server.ok("sandbox.v1.get", json!({"id": id}));
        assert_eq!(info["runtime"], rt, "{info}");
        let r = server.exec(
            &id,
            json!([
                "python3",
                "-c",
                "import os; print(os.getuid(), os.uname().release)"
            ]),
        );
        assert_eq!(r["exit_code"], 0, "[{rt}] {r}");
        let out = r["stdout"].as_str().unwrap();
        assert!(out.starts_with("1000 "), "[{rt}] {out}");
        // gVisor answers with its own kernel; the others share the host's.
        let release = out.trim_start_matches("1000 ").trim();
        assert_eq!(
            release == host_release.trim(),
            rt != "gvisor",
            "[{rt}] kernel {release}"
        );
        server.ok(
            "sandbox.v1.writeFile",
            json!({"id": id, "path": "/workspace/who", "content": common::b64(rt.as_bytes())}),
        );
        let back = server.ok(
            "sandbox.v1.readFile",
            json!({"id": id, "path": "/workspace/who"}),
        );
        assert_eq!(unb64(back["content"].as_str().unwrap()), rt.as_bytes());
        ids.push((rt, id));
    }
    // Each sandbox has its own files, whatever runs it.
    for (rt, id) in &ids {
        // (Debian's old gVisor refuses coreutils' statx, so no `ls` here.)
        let r = server.sh(
            id,
            "cat /workspace/who; python3 -c 'import os; print(len(os.listdir(\"/workspace\")))'",
        );
        assert_eq!(r["stdout"], format!("{rt}1\n"), "[{rt}] {r}");
    }
    let listed = server.ok("sandbox.v1.list", json!({}));
    let runtimes_listed: Vec<&str> = listed["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["runtime"].as_str().unwrap())
        .collect();
    for (rt, _) in &ids {
        assert!(runtimes_listed.contains(rt), "{listed}");
    }
    server.shutdown_and_check_clean();
}

#[test]
fn unknown_and_unusable_runtimes_are_refused_with_the_reason() {
    let server = Server::start();
    let e = server.err(
        "sandbox.v1.create",
        json!({"template": "base", "runtime": "gvisor"}),
    );
    assert_eq!(e["data"]["kind"], "unsupported", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("\"gvisor\"") && msg.contains("--runtimes"),
        "{msg}"
    );
    let e = server.err(
        "sandbox.v1.create",
        json!({"template": "base", "runtime": 7}),
    );
    assert_eq!(e["code"], -32602, "{e}");
    assert!(
        server.ok("sandbox.v1.list", json!({}))["sandboxes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    server.shutdown_and_check_clean();

    if !is_root() || installed().is_empty() {
        return;
    }
    let server = start();
    let rt = installed()[0];
    // Snapshots and volumes are the native backend's.
    server.ok(
        "sandbox.v1.createVolume",
        json!({"name": "data", "size_mb": 64}),
    );
    let e = server.err(
        "sandbox.v1.create",
        json!({"template": "base", "runtime": rt,
               "volumes": [{"name": "data", "path": "/data"}]}),
    );
    assert!(
        e["message"].as_str().unwrap().contains("volumes"),
        "[{rt}] {e}"
    );
    assert_eq!(e["data"]["kind"], "unsupported", "[{rt}] {e}");
    let id = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "runtime": rt}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = server.err("sandbox.v1.snapshot", json!({"id": id, "name": "s"}));
    assert!(
        e["message"].as_str().unwrap().contains("snapshot"),
        "[{rt}] {e}"
    );
    server.ok("sandbox.v1.deleteVolume", json!({"name": "data"}));
    server.shutdown_and_check_clean();
}

#[test]
fn oci_sandboxes_survive_a_server_restart() {
    if !is_root() {
        return;
    }
    let Some(rt) = installed().into_iter().find(|r| *r != "gvisor") else {
        assert!(
            std::env::var_os("CAPSULE_REQUIRE_OCI").is_none(),
            "CAPSULE_REQUIRE_OCI is set but neither runc nor crun is installed"
        );
        eprintln!("skipped: neither runc nor crun is installed");
        return;
    };
    let mut server = start();
    let id = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "runtime": rt}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.sh(&id, "echo kept > /workspace/k");
    server.restart();
    let info = server.ok("sandbox.v1.get", json!({"id": id}));
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["runtime"], rt);
    let r = server.sh(&id, "cat /workspace/k");
    assert_eq!(r["stdout"], "kept\n", "{r}");
    server.shutdown_and_check_clean();
}

//! The native backend end to end, without the server: this test binary is
//! its own launcher (it dispatches `__sandbox-init` first thing), so it
//! builds real sandboxes and talks to their agents.

use std::collections::BTreeMap;
use std::time::Duration;

use capsule_api::SandboxId;
use capsule_protocol::client::CallOptions;
use capsule_protocol::paths;
use capsule_protocol::process::{
    DataEvent, EventMessage, ProcessConfig, ProcessEvent, StartRequest,
};
use capsule_runtime::native::{NativeOptions, NativeRuntime, init};
use capsule_runtime::{Runtime, SandboxSpec, TemplateSpec};

fn spec(id: SandboxId) -> SandboxSpec {
    SandboxSpec {
        id,
        template: TemplateSpec {
            name: "base".into(),
            description: String::new(),
            env: BTreeMap::new(),
            requires: vec!["sh".into()],
            extra_binds: vec![],
        },
        env: [("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())].into(),
        cpu: 1.0,
        memory_mb: 256,
        pids: 128,
        disk_mb: None,
        snapshot: None,
        volumes: Vec::new(),
        network: None,
        runtime: None,
        background: false,
    }
}

async fn sh(
    rt_agent: &capsule_protocol::client::AgentClient,
    script: &str,
    user: &str,
) -> (String, String, i32) {
    let req = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            envs: Default::default(),
            cwd: Some("/workspace".into()),
        },
        ..Default::default()
    };
    let mut stream = rt_agent
        .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &CallOptions::user(user))
        .await
        .expect("start");
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), -999);
    while let Some(msg) = stream.next().await {
        match msg.expect("event").event {
            ProcessEvent::Data(DataEvent::Stdout(b)) => out.extend(b),
            ProcessEvent::Data(DataEvent::Stderr(b)) => err.extend(b),
            ProcessEvent::End(e) => code = e.exit_code,
            _ => {}
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        code,
    )
}

async fn run() {
    let state = tempfile::Builder::new()
        .prefix("capsule-rt")
        .tempdir_in("/tmp")
        .unwrap();
    let rt = NativeRuntime::new(NativeOptions {
        dir: state.path().join("native"),
        launcher: std::env::current_exe().unwrap(),
        uid_base: 1_500_000_000,
        cgroups: true,
        tmp_bytes: 64 << 20,
        ready_launchers: 1,
        storage: capsule_runtime::native::StorageMode::Auto,
    })
    .expect("runtime");
    for w in rt.warnings() {
        eprintln!("warning: {w}");
    }
    let id: SandboxId = SandboxId::random();
    let started = std::time::Instant::now();
    let sb = rt.create(&spec(id)).await.expect("create");
    eprintln!("created in {:?}", started.elapsed());
    let t = std::time::Instant::now();
    let (out, err, code) = sh(&sb.agent, "echo hi; id -u; pwd; hostname", "user").await;
    eprintln!("first exec in {:?}", t.elapsed());
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "hi\n1000\n/workspace\ncapsule\n", "stderr: {err}");
    let (out, _, _) = sh(&sb.agent, "id -u; cat /proc/self/uid_map", "root").await;
    eprintln!("root sees: {out}");
    assert!(out.starts_with("0\n"));
    let (out, err, code) = sh(
        &sb.agent,
        "ls / ; echo x > /workspace/f && cat /workspace/f; mount -t tmpfs x /mnt; echo mount=$?",
        "user",
    )
    .await;
    eprintln!("ls: {out} {err} {code}");
    assert!(out.contains("mount=") && !out.contains("mount=0"));

    let leftovers = rt.leftovers();
    assert!(leftovers.contains(&id));
    rt.destroy(id).await.expect("destroy");
    assert!(
        !rt.leftovers().contains(&id),
        "everything of the sandbox is gone"
    );
    tokio::time::timeout(Duration::from_secs(5), sb.exited)
        .await
        .expect("exit noticed");
    // With no sandbox left, shutting down leaves nothing mounted.
    rt.shutdown().await;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let prefix = format!("{}/", state.path().display());
    let left: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "still mounted after shutdown: {left:?}");
    eprintln!("native runtime: ok");
}

/// A test without libtest (it must be the process's only thread when it
/// forks sandbox launchers), speaking enough of libtest's command line for
/// cargo test and nextest: `--list` names the one test.
fn main() {
    init::dispatch_helpers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("native_runtime_end_to_end: test");
        }
        return;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"native_runtime_end_to_end".contains(filter.as_str())
    {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

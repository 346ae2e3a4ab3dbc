//! Measures the agent's Start round trip for `/bin/true` (diagnostics).
use std::time::Instant;

use capsule_protocol::client::{AgentClient, CallOptions};
use capsule_protocol::paths;
use capsule_protocol::process::{EventMessage, ProcessConfig, StartRequest};

#[tokio::main]
async fn main() {
    let sock = std::env::args().nth(1).expect("usage: rtt SOCKET");
    let c = AgentClient::unix(&sock);
    let req = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/true".into(),
            args: vec![],
            envs: Default::default(),
            cwd: Some("/tmp".into()),
        },
        ..Default::default()
    };
    let mut u = vec![];
    for _ in 0..300 {
        let t = Instant::now();
        let _: capsule_protocol::process::ListResponse = c
            .unary(
                paths::PROCESS_LIST,
                &capsule_protocol::process::Empty {},
                &CallOptions::default(),
            )
            .await
            .unwrap();
        u.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    u.sort_by(|a, b| a.total_cmp(b));
    println!("unary List p50 {:.3} ms", u[u.len() / 2]);
    let mut v = vec![];
    for i in 0..300 {
        let t = Instant::now();
        let mut s = c
            .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &CallOptions::default())
            .await
            .unwrap();
        let mut first = None;
        while let Some(m) = s.next().await {
            m.unwrap();
            if first.is_none() {
                first = Some(t.elapsed());
            }
        }
        if i >= 20 {
            v.push((
                t.elapsed().as_secs_f64() * 1000.0,
                first.unwrap().as_secs_f64() * 1000.0,
            ));
        }
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut f: Vec<f64> = v.iter().map(|x| x.1).collect();
    f.sort_by(|a, b| a.total_cmp(b));
    println!(
        "agent Start(/bin/true) p50 {:.2} ms; start event p50 {:.2} ms",
        v[v.len() / 2].0,
        f[f.len() / 2]
    );
}

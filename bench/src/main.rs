//! `capsule-bench`: Capsule against bwrap and runc on the same machine in
//! the same run. Writes the figures to `docs/performance.md`.
//!
//! Run it with `bench/run` (builds the release binary first). Needs root
//! for runc and for Capsule's root mode; tools that are missing are
//! reported as not measured.

mod alternatives;
mod capsule;
mod memory;
mod stats;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use stats::{Summary, summarize};

#[derive(Parser)]
#[command(about = "Benchmark Capsule side by side with bwrap and runc")]
struct Args {
    /// The capsule binary to measure (a release build).
    #[arg(long)]
    capsule: Option<PathBuf>,
    /// Runs per latency figure.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Idle sandboxes for the memory figure.
    #[arg(long, default_value_t = 100)]
    idle: usize,
    /// A Python with the pinned `e2b` SDK (bench/run sets one up): times
    /// `Sandbox.create()` + the first `commands.run` through E2B's own SDK.
    #[arg(long)]
    e2b_python: Option<PathBuf>,
    /// Runs for the E2B SDK figure.
    #[arg(long, default_value_t = 50)]
    e2b_runs: usize,
    /// Where to write the report.
    #[arg(long, default_value = "docs/performance.md")]
    out: PathBuf,
}

#[derive(Default, serde::Serialize)]
struct Results {
    capsule_create: Option<Summary>,
    capsule_create_no_ready: Option<Summary>,
    capsule_exec: Option<Summary>,
    capsule_idle_bytes: Option<f64>,
    capsule_agent_pss_bytes: Option<f64>,
    bwrap_create: Option<Summary>,
    bwrap_idle_bytes: Option<f64>,
    runc_create: Option<Summary>,
    runc_exec: Option<Summary>,
    runc_idle_bytes: Option<f64>,
    e2b_sdk_create_run: Option<Summary>,
}

/// E2B's published figure: median create-to-first-command of its cloud.
const E2B_PUBLISHED_MS: f64 = 440.0;

/// Runs bench/e2b/sdk_create_run.py with `python` against `server`.
fn e2b_sdk_samples(
    python: &std::path::Path,
    server: &capsule::Server,
    runs: usize,
) -> anyhow::Result<Vec<std::time::Duration>> {
    let out = std::process::Command::new(python)
        .arg("bench/e2b/sdk_create_run.py")
        .arg(runs.to_string())
        .env("E2B_API_URL", &server.url)
        .env("E2B_SANDBOX_URL", &server.url)
        .env("E2B_API_KEY", "e2b_bench")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "the E2B SDK benchmark failed ({})",
        out.status
    );
    let parsed: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading the E2B SDK benchmark's output")?;
    let samples = parsed["samples_ms"]
        .as_array()
        .context("no samples_ms in the E2B SDK benchmark's output")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0))
        .collect();
    Ok(samples)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    };
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}, cgroup {cgroup}",
        kernel.trim()
    )
}

fn ms(s: &Option<Summary>) -> (String, String) {
    match s {
        Some(s) => (format!("{:.2} ms", s.p50_ms), format!("{:.2} ms", s.p99_ms)),
        None => ("not measured".into(), "".into()),
    }
}

fn ratio(other: &Option<Summary>, base: &Option<Summary>) -> String {
    match (other, base) {
        (Some(o), Some(b)) if b.p50_ms > 0.0 => format!("{:.1}x", o.p50_ms / b.p50_ms),
        _ => "".into(),
    }
}

fn mib(v: Option<f64>) -> String {
    v.map(|b| format!("{:.2} MiB", b / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "not measured".into())
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn report(r: &Results, args: &Args) -> String {
    let mut out = String::new();
    let today = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(out, "# Performance\n");
    let _ = writeln!(
        out,
        "Measured by `bench/run` on {today}: {}, as root.",
        machine()
    );
    let _ = writeln!(
        out,
        "Every figure comes from the same run on the same machine: medians (p50) and 99th percentiles over {} runs \
         (memory: {} idle sandboxes). Capsule is measured through its public JSON-RPC API over HTTP, as an SDK uses it; \
         the alternatives are started the way their users start them. Re-run with `bench/run` to check.\n",
        args.runs, args.idle
    );
    let _ = writeln!(out, "## Create a sandbox and run `echo hi` in it\n");
    let _ = writeln!(out, "| | p50 | p99 | p50 vs Capsule |\n|---|---|---|---|");
    for (name, s) in [
        ("Capsule (`create` + `exec`)", &r.capsule_create),
        (
            "Capsule with `--ready-launchers 0`",
            &r.capsule_create_no_ready,
        ),
        ("bwrap (`bwrap ... echo hi`)", &r.bwrap_create),
        ("runc (`runc run` of a bundle)", &r.runc_create),
    ] {
        let (p50, p99) = ms(s);
        let _ = writeln!(
            out,
            "| {name} | {p50} | {p99} | {} |",
            ratio(s, &r.capsule_create)
        );
    }
    let _ = writeln!(out, "\n## Run `echo hi` in a live sandbox\n");
    let _ = writeln!(out, "| | p50 | p99 | p50 vs Capsule |\n|---|---|---|---|");
    for (name, s) in [
        ("Capsule (`exec`)", &r.capsule_exec),
        ("runc (`runc exec`)", &r.runc_exec),
    ] {
        let (p50, p99) = ms(s);
        let _ = writeln!(
            out,
            "| {name} | {p50} | {p99} | {} |",
            ratio(s, &r.capsule_exec)
        );
    }
    let _ = writeln!(
        out,
        "| bwrap | n/a: bwrap cannot run a command in an existing sandbox | | |"
    );
    let _ = writeln!(out, "\n## Host memory per idle sandbox\n");
    let _ = writeln!(
        out,
        "Growth of the host's used memory (MemTotal - MemAvailable) with {} idle sandboxes, divided by their number; \
         it includes kernel memory for namespaces, mounts and page tables.\n",
        args.idle
    );
    let _ = writeln!(out, "| | per sandbox |\n|---|---|");
    let _ = writeln!(
        out,
        "| Capsule | {} (the agent's own PSS: {}) |",
        mib(r.capsule_idle_bytes),
        mib(r.capsule_agent_pss_bytes)
    );
    let _ = writeln!(
        out,
        "| bwrap running `sleep` | {} |",
        mib(r.bwrap_idle_bytes)
    );
    let _ = writeln!(out, "| runc running `sleep` | {} |", mib(r.runc_idle_bytes));
    let _ = writeln!(
        out,
        "\n## E2B's Python SDK: `Sandbox.create()` + first `commands.run(\"echo hi\")`\n"
    );
    let _ = writeln!(
        out,
        "The unmodified `e2b` SDK (the version pinned in tests/e2b) pointed at a local Capsule server with \
         `E2B_API_URL`/`E2B_SANDBOX_URL`, {} runs. E2B's figure is the median it publishes for its cloud \
         (create to first command), not measured here.\n",
        args.e2b_runs
    );
    let _ = writeln!(out, "| | p50 | p99 | p50 vs Capsule |\n|---|---|---|---|");
    let (p50, p99) = ms(&r.e2b_sdk_create_run);
    let _ = writeln!(
        out,
        "| Capsule through the E2B SDK | {p50} | {p99} | 1.00x |"
    );
    let _ = writeln!(
        out,
        "| E2B cloud (published median) | {E2B_PUBLISHED_MS:.0} ms | | {} |",
        r.e2b_sdk_create_run
            .as_ref()
            .map(|s| format!("{:.1}x", E2B_PUBLISHED_MS / s.p50_ms))
            .unwrap_or_else(|| "not measured".into())
    );
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "| target | measured | |\n|---|---|---|");
    let create = r.capsule_create.as_ref().map(|s| s.p50_ms);
    let exec = r.capsule_exec.as_ref().map(|s| s.p50_ms);
    let idle = r.capsule_idle_bytes.map(|b| b / (1024.0 * 1024.0));
    let _ = writeln!(
        out,
        "| create + first exec p50 under 15 ms | {} | {} |",
        create.map(|v| format!("{v:.2} ms")).unwrap_or_default(),
        verdict(create.map(|v| v < 15.0))
    );
    let _ = writeln!(
        out,
        "| exec round trip p50 under 2 ms | {} | {} |",
        exec.map(|v| format!("{v:.2} ms")).unwrap_or_default(),
        verdict(exec.map(|v| v < 2.0))
    );
    let _ = writeln!(
        out,
        "| under 2 MiB of host memory per idle sandbox | {} | {} |",
        idle.map(|v| format!("{v:.2} MiB")).unwrap_or_default(),
        verdict(idle.map(|v| v < 2.0))
    );
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = args.capsule.clone().unwrap_or_else(capsule::default_binary);
    let mut r = Results::default();

    eprintln!("capsule: create + first exec ({} runs)", args.runs);
    {
        let server = capsule::Server::start(&binary, &[])
            .await
            .context("starting Capsule")?;
        r.capsule_create = Some(summarize(
            &capsule::create_and_exec(&server, args.runs).await?,
        ));
        eprintln!("capsule: exec round trip ({} runs)", args.runs * 2);
        r.capsule_exec = Some(summarize(
            &capsule::exec_round_trip(&server, args.runs * 2).await?,
        ));
        eprintln!("capsule: memory of {} idle sandboxes", args.idle);
        let (idle, pss) = capsule::idle_memory(&server, args.idle).await?;
        r.capsule_idle_bytes = Some(idle);
        r.capsule_agent_pss_bytes = Some(pss);
        if let Some(python) = &args.e2b_python {
            eprintln!(
                "capsule: E2B Python SDK create + first command ({} runs)",
                args.e2b_runs
            );
            r.e2b_sdk_create_run =
                Some(summarize(&e2b_sdk_samples(python, &server, args.e2b_runs)?));
        }
    }
    eprintln!("capsule without ready launchers: create + first exec");
    {
        let server = capsule::Server::start(&binary, &["--ready-launchers", "0"]).await?;
        r.capsule_create_no_ready = Some(summarize(
            &capsule::create_and_exec(&server, args.runs).await?,
        ));
    }
    if alternatives::available("bwrap") {
        eprintln!("bwrap: create + exec, memory");
        r.bwrap_create = Some(summarize(&alternatives::bwrap_create_and_exec(args.runs)?));
        r.bwrap_idle_bytes = Some(alternatives::bwrap_idle_memory(args.idle)?);
    } else {
        eprintln!("bwrap is not installed (Debian: apt install bubblewrap); skipped");
    }
    if alternatives::available("runc") {
        eprintln!("runc: run, exec, memory");
        r.runc_create = Some(summarize(&alternatives::runc_create_and_exec(args.runs)?));
        r.runc_exec = Some(summarize(&alternatives::runc_exec_round_trip(
            args.runs * 2,
        )?));
        r.runc_idle_bytes = Some(alternatives::runc_idle_memory(args.idle)?);
    } else {
        eprintln!("runc is not installed (Debian: apt install runc); skipped");
    }
    let text = report(&r, &args);
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    let json_path = PathBuf::from("bench/results");
    std::fs::create_dir_all(&json_path)?;
    std::fs::write(
        json_path.join("latest.json"),
        serde_json::to_vec_pretty(&r)?,
    )?;
    println!("{text}");
    Ok(())
}

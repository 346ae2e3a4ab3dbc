//! `capsule-bench`: Capsule against bwrap, runc, crun and gVisor's runsc on
//! the same machine in the same run. Writes the figures to
//! `docs/performance.md`, `bench/results/latest.json` and plots in `docs/`.
//!
//! Run it with `bench/run` (builds the release binary first). Needs root
//! for the OCI runtimes and for Capsule's root mode; tools that are missing
//! are reported as not installed.

mod alternatives;
mod capsule;
mod memory;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alternatives::Alternative;
use anyhow::Context;
use clap::Parser;
use stats::{Summary, Throughput, summarize};

#[derive(Parser)]
#[command(about = "Benchmark Capsule side by side with bwrap, runc, crun and runsc")]
struct Args {
    /// The capsule binary to measure (a release build) [default:
    /// $CARGO_TARGET_DIR/release/capsule, else target/release/capsule].
    #[arg(long)]
    capsule: Option<PathBuf>,
    /// A smoke run: every figure, with few runs and small sizes. Flags
    /// given explicitly still win.
    #[arg(long)]
    quick: bool,
    /// Runs per latency figure [default: 100; quick: 10].
    #[arg(long)]
    runs: Option<usize>,
    /// Idle sandboxes for the memory figure [default: 1000; quick: 20].
    #[arg(long)]
    idle: Option<usize>,
    /// Seconds of the creation throughput figure [default: 30; quick: 3].
    #[arg(long)]
    throughput_secs: Option<u64>,
    /// Concurrent clients of the creation throughput figure.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// MiB written to the sandbox before the snapshot figure [default:
    /// 1024; quick: 64].
    #[arg(long)]
    snapshot_mb: Option<u64>,
    /// A Python with the pinned `e2b` SDK (bench/run sets one up): times
    /// `Sandbox.create()` + the first `commands.run` through E2B's own SDK.
    #[arg(long)]
    e2b_python: Option<PathBuf>,
    /// Runs for the E2B SDK figure [default: 50; quick: 5].
    #[arg(long)]
    e2b_runs: Option<usize>,
    /// Where to write the report.
    #[arg(long, default_value = "docs/performance.md")]
    out: PathBuf,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench/results/latest.json")]
    json: PathBuf,
    /// Directory for the plots (PNG, drawn by bench/plot.py).
    #[arg(long, default_value = "docs")]
    plots: PathBuf,
}

/// How much to measure, with `--quick` and explicit flags applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub runs: usize,
    pub idle: usize,
    /// gVisor sandboxes hold tens of MiB each: fewer of them.
    pub runsc_idle: usize,
    pub clients: usize,
    pub throughput_secs: u64,
    pub snapshot_mb: u64,
    pub snapshot_runs: usize,
    pub e2b_runs: usize,
    pub pool_size: usize,
}

impl Plan {
    fn new(args: &Args) -> Self {
        let pick = |given: Option<usize>, full: usize, quick: usize| {
            given.unwrap_or(if args.quick { quick } else { full })
        };
        let idle = pick(args.idle, 1000, 20);
        Plan {
            runs: pick(args.runs, 100, 10),
            idle,
            runsc_idle: idle.min(100),
            clients: args.clients,
            throughput_secs: args
                .throughput_secs
                .unwrap_or(if args.quick { 3 } else { 30 }),
            snapshot_mb: args
                .snapshot_mb
                .unwrap_or(if args.quick { 64 } else { 1024 }),
            snapshot_runs: pick(None, 20, 3),
            e2b_runs: pick(args.e2b_runs, 50, 5),
            pool_size: 4,
        }
    }
}

/// One subject's figure: measured, or why not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry<T> {
    pub subject: String,
    /// How it was started or called.
    pub how: String,
    pub value: Option<T>,
    /// Why there is no value ("not installed", "failed: ...").
    pub absent: Option<String>,
    pub note: Option<String>,
}

impl<T> Entry<T> {
    fn new(subject: &str, how: impl Into<String>, value: anyhow::Result<T>) -> Self {
        let (value, absent) = match value {
            Ok(v) => (Some(v), None),
            Err(e) => {
                eprintln!("{subject}: {e:#}");
                (None, Some(format!("failed: {e:#}")))
            }
        };
        Entry {
            subject: subject.to_owned(),
            how: how.into(),
            value,
            absent,
            note: None,
        }
    }

    fn absent(subject: &str, why: &str) -> Self {
        Entry {
            subject: subject.to_owned(),
            how: String::new(),
            value: None,
            absent: Some(why.to_owned()),
            note: None,
        }
    }

    fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

#[derive(Default, serde::Serialize)]
pub struct Results {
    pub date: String,
    pub machine: String,
    pub plan: Option<Plan>,
    /// Create a sandbox and run `echo hi` in it.
    pub create: Vec<Entry<Summary>>,
    /// Run `echo hi` in a live sandbox.
    pub exec: Vec<Entry<Summary>>,
    pub throughput: Vec<Entry<Throughput>>,
    pub idle_memory: Vec<Entry<capsule::IdleMemory>>,
    pub snapshot: Vec<Entry<capsule::SnapshotTimes>>,
    pub e2b_sdk: Option<Entry<Summary>>,
    pub targets: Vec<report::Target>,
}

/// Runs bench/e2b/sdk_create_run.py with `python` against `api`.
fn e2b_sdk_samples(
    python: &Path,
    api: &capsule::Api,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let out = std::process::Command::new(python)
        .arg("bench/e2b/sdk_create_run.py")
        .arg(runs.to_string())
        .env("E2B_API_URL", &api.url)
        .env("E2B_SANDBOX_URL", &api.url)
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
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    Ok(samples)
}

/// Capsule's figures: a server without a warm pool (cold), one with.
async fn measure_capsule(
    binary: &Path,
    plan: &Plan,
    e2b_python: Option<&Path>,
    r: &mut Results,
) -> anyhow::Result<()> {
    let throughput_time = Duration::from_secs(plan.throughput_secs);
    {
        eprintln!(
            "capsule, no warm pool: create + first exec ({} runs)",
            plan.runs
        );
        let server = capsule::Server::start(binary, &[])
            .await
            .context("starting Capsule")?;
        let (samples, _) = capsule::create_and_exec(&server.api, plan.runs).await?;
        r.create.push(Entry::new(
            "Capsule, cold",
            "`sandbox.v1.create` + `sandbox.v1.exec`, no warm pool",
            Ok(summarize(&samples)),
        ));
        eprintln!("capsule: exec round trip ({} runs)", plan.runs * 2);
        let samples = capsule::exec_round_trip(&server.api, plan.runs * 2).await?;
        r.exec.push(Entry::new(
            "Capsule",
            "`sandbox.v1.exec`",
            Ok(summarize(&samples)),
        ));
        eprintln!(
            "capsule, no warm pool: {} clients creating for {}s",
            plan.clients, plan.throughput_secs
        );
        let t = capsule::throughput(&server.api, plan.clients, throughput_time).await?;
        r.throughput.push(Entry::new(
            "Capsule, cold",
            "`create` then `delete`, back to back",
            Ok(t),
        ));
        eprintln!("capsule: memory of {} idle sandboxes", plan.idle);
        let idle = capsule::idle_memory(&server, plan.idle).await?;
        r.idle_memory.push(Entry::new(
            "Capsule",
            "`sandbox.v1.create`, then idle",
            Ok(idle),
        ));
        for data_mb in [0, plan.snapshot_mb] {
            eprintln!("capsule: snapshot of a sandbox with {data_mb} MiB written");
            let times = capsule::snapshot_times(&server.api, data_mb, plan.snapshot_runs).await?;
            r.snapshot.push(Entry::new(
                "Capsule",
                "`sandbox.v1.snapshot`, `sandbox.v1.create` with `snapshot`",
                Ok(times),
            ));
        }
        if let Some(python) = e2b_python {
            eprintln!(
                "capsule: E2B Python SDK create + first command ({} runs)",
                plan.e2b_runs
            );
            let samples = e2b_sdk_samples(python, &server.api, plan.e2b_runs);
            r.e2b_sdk = Some(Entry::new(
                "Capsule through the E2B SDK",
                "`Sandbox.create()` + `commands.run(\"echo hi\")`",
                samples.map(|s| summarize(&s)),
            ));
        }
    }
    {
        let pool = format!("{}={}", capsule::TEMPLATE, plan.pool_size);
        eprintln!(
            "capsule, warm pool {pool}: create + first exec ({} runs)",
            plan.runs
        );
        let server = capsule::Server::start(binary, &["--pool", &pool]).await?;
        let (samples, hits) = capsule::create_and_exec(&server.api, plan.runs).await?;
        r.create.insert(
            0,
            Entry::new(
                "Capsule, pooled",
                format!("`sandbox.v1.create` + `sandbox.v1.exec`, `--pool {pool}`"),
                Ok(summarize(&samples)),
            )
            .with_note(format!(
                "{hits} of {} creates found a ready sandbox",
                plan.runs
            )),
        );
        eprintln!(
            "capsule, warm pool: {} clients creating for {}s",
            plan.clients, plan.throughput_secs
        );
        let t = capsule::throughput(&server.api, plan.clients, throughput_time).await?;
        r.throughput.insert(
            0,
            Entry::new(
                "Capsule, pooled",
                format!("`create` then `delete`, back to back, `--pool {pool}`"),
                Ok(t),
            ),
        );
    }
    eprintln!("capsule, `--ready-launchers 0`: create + first exec");
    let server = capsule::Server::start(binary, &["--ready-launchers", "0"]).await?;
    let (samples, _) = capsule::create_and_exec(&server.api, plan.runs).await?;
    r.create.push(Entry::new(
        "Capsule, cold, `--ready-launchers 0`",
        "`sandbox.v1.create` + `sandbox.v1.exec`, no launcher kept ready",
        Ok(summarize(&samples)),
    ));
    Ok(())
}

/// The subject of the floor rows.
pub const FLOOR: &str = "no sandbox (floor)";

/// What starting `echo hi` costs on this machine with no sandbox at all:
/// the bench spawns `/bin/echo hi` and waits for it. No sandbox's create +
/// exec or exec round trip can be faster, so this is the scale the other
/// figures (and the targets) are read against.
fn measure_floor(plan: &Plan, r: &mut Results) {
    eprintln!(
        "floor: `/bin/echo hi` with no sandbox ({} runs)",
        plan.runs * 2
    );
    let samples = stats::sample(plan.runs * 2, || {
        let out = std::process::Command::new("/bin/echo")
            .arg("hi")
            .stderr(std::process::Stdio::piped())
            .output()?;
        anyhow::ensure!(out.stdout == b"hi\n", "echo failed: {}", out.status);
        Ok(())
    });
    let how = "`/bin/echo hi` spawned and waited for by the bench, no isolation";
    let summary = samples.map(|s| summarize(&s));
    let copy = summary
        .as_ref()
        .map(Clone::clone)
        .map_err(|e| anyhow::anyhow!("{e:#}"));
    r.create.push(Entry::new(FLOOR, how, copy));
    r.exec.push(Entry::new(FLOOR, how, summary));
}

fn measure_alternatives(plan: &Plan, r: &mut Results) {
    for (name, alt) in Alternative::all() {
        let Some(alt) = alt else {
            eprintln!("{name} is not installed; skipped");
            for list in [&mut r.create, &mut r.exec] {
                list.push(Entry::absent(name, "not installed"));
            }
            r.throughput.push(Entry::absent(name, "not installed"));
            r.idle_memory.push(Entry::absent(name, "not installed"));
            continue;
        };
        eprintln!("{name}: create + exec ({} runs)", plan.runs);
        let samples = stats::sample(plan.runs, || alt.create_and_exec());
        r.create
            .push(Entry::new(name, alt.how(), samples.map(|s| summarize(&s))));
        match alt.how_exec() {
            Some(how) => {
                eprintln!("{name}: exec round trip ({} runs)", plan.runs * 2);
                let samples = alt.exec_session().and_then(|session| {
                    let session = session.context("no exec session")?;
                    stats::sample(plan.runs * 2, || session.exec_echo())
                });
                r.exec
                    .push(Entry::new(name, how, samples.map(|s| summarize(&s))));
            }
            None => r.exec.push(Entry::absent(
                name,
                "n/a: it cannot run a command in an existing sandbox",
            )),
        }
        eprintln!(
            "{name}: {} clients creating for {}s",
            plan.clients, plan.throughput_secs
        );
        let t = alternatives::throughput(
            &alt,
            plan.clients,
            Duration::from_secs(plan.throughput_secs),
        );
        r.throughput
            .push(Entry::new(name, format!("{}, back to back", alt.how()), t));
        let count = if name == "runsc" {
            plan.runsc_idle
        } else {
            plan.idle
        };
        eprintln!("{name}: memory of {count} idle sandboxes");
        let idle = alternatives::idle_memory(&alt, count).map(|per| capsule::IdleMemory {
            count,
            host_bytes_per_sandbox: per,
            pss_bytes_per_sandbox: None,
        });
        r.idle_memory
            .push(Entry::new(name, "running `sleep`", idle));
    }
}

/// Draws the plots with bench/plot.py; a missing matplotlib is a warning.
/// The system's Python comes first: distributions package matplotlib for
/// it (python3-matplotlib), not for a Python of the user's own.
fn plot(json: &Path, dir: &Path) -> Vec<PathBuf> {
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .unwrap_or("python3");
    let out = std::process::Command::new(python)
        .arg("bench/plot.py")
        .arg(json)
        .arg(dir)
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect(),
        Ok(out) => {
            eprintln!("bench/plot.py failed ({}); no plots", out.status);
            Vec::new()
        }
        Err(e) => {
            eprintln!("cannot run python3 for the plots ({e}); no plots");
            Vec::new()
        }
    }
}

fn write(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args);
    let binary = args.capsule.clone().unwrap_or_else(capsule::default_binary);
    let mut r = Results {
        date: report::today(),
        machine: report::machine(),
        plan: Some(plan.clone()),
        ..Results::default()
    };
    measure_capsule(&binary, &plan, args.e2b_python.as_deref(), &mut r).await?;
    measure_alternatives(&plan, &mut r);
    measure_floor(&plan, &mut r);
    r.targets = report::targets(&r);
    write(&args.json, &serde_json::to_vec_pretty(&r)?)?;
    std::fs::create_dir_all(&args.plots)?;
    let plots = plot(&args.json, &args.plots);
    let text = report::markdown(&r, &plan, &plots, &args.out);
    write(&args.out, text.as_bytes())?;
    println!("{text}");
    Ok(())
}

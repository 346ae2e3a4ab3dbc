//! The report: `docs/performance.md`, with ratios and targets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::stats::Summary;
use crate::{Entry, Plan, Results};

/// E2B's published figure: median create-to-first-command of its cloud.
const E2B_PUBLISHED_MS: f64 = 440.0;

const MIB: f64 = 1024.0 * 1024.0;

/// A goal of the project and how this run did against it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl Target {
    fn new(goal: &str, measured: Option<(String, bool)>) -> Self {
        let (measured, met) = match measured {
            Some((text, met)) => (text, Some(met)),
            None => ("not measured".into(), None),
        };
        Target {
            goal: goal.into(),
            measured,
            met,
        }
    }
}

pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn machine() -> String {
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
        .map(|kb| kb / MIB)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    };
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}, cgroup {cgroup}",
        kernel.trim()
    )
}

fn find<'a, T>(list: &'a [Entry<T>], subject: &str) -> Option<&'a T> {
    list.iter()
        .find(|e| e.subject == subject)
        .and_then(|e| e.value.as_ref())
}

fn p50(list: &[Entry<Summary>], subject: &str) -> Option<f64> {
    find(list, subject).map(|s| s.p50_ms)
}

pub fn targets(r: &Results) -> Vec<Target> {
    let under_ms = |v: Option<f64>, limit: f64| v.map(|v| (format!("{v:.2} ms"), v < limit));
    let best_rate = r
        .throughput
        .iter()
        .filter(|e| e.subject.starts_with("Capsule"))
        .filter_map(|e| e.value.as_ref().map(|t| (t.per_second, &e.subject)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let idle = find(&r.idle_memory, "Capsule")
        .filter(|m| m.host_bytes_per_sandbox > 0.0)
        .map(|m| {
            let at_1000 = m.host_bytes_per_sandbox * 1000.0 / (MIB * 1024.0);
            let scaled = if m.count == 1000 {
                String::new()
            } else {
                format!(", scaled from {} sandboxes", m.count)
            };
            (
                format!(
                    "{at_1000:.2} GiB ({:.2} MiB each{scaled})",
                    m.host_bytes_per_sandbox / MIB
                ),
                at_1000 < 2.0,
            )
        });
    let snapshots: Vec<_> = r.snapshot.iter().filter_map(|e| e.value.as_ref()).collect();
    let worst = |f: fn(&crate::capsule::SnapshotTimes) -> f64| {
        snapshots
            .iter()
            .map(|s| (f(s), s.data_mb))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(v, mb)| {
                (
                    format!("{v:.2} ms (worst p50, at {mb} MiB written)"),
                    v < 100.0,
                )
            })
    };
    vec![
        Target::new(
            "pooled create + first exec, p50 under 3 ms",
            under_ms(p50(&r.create, "Capsule, pooled"), 3.0),
        ),
        Target::new(
            "cold create + first exec, p50 under 15 ms",
            under_ms(p50(&r.create, "Capsule, cold"), 15.0),
        ),
        Target::new(
            "exec round trip, p50 under 2 ms",
            under_ms(p50(&r.exec, "Capsule"), 2.0),
        ),
        Target::new(
            "over 200 creates per second sustained (8 clients)",
            best_rate.map(|(rate, who)| (format!("{rate:.0}/s ({who})"), rate > 200.0)),
        ),
        Target::new("1,000 idle sandboxes in under 2 GiB of host memory", idle),
        Target::new(
            "snapshot under 100 ms, whatever the data size",
            worst(|s| s.snapshot.p50_ms),
        ),
        Target::new(
            "create from a snapshot under 100 ms, whatever the data size",
            worst(|s| s.create_from_snapshot.p50_ms),
        ),
    ]
}

fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

/// `other / base` as "3.1x".
fn ratio(other: Option<f64>, base: Option<f64>) -> String {
    match (other, base) {
        (Some(o), Some(b)) if b > 0.0 => format!("{:.1}x", o / b),
        _ => String::new(),
    }
}

fn absent<T>(e: &Entry<T>) -> String {
    e.absent.clone().unwrap_or_default()
}

/// A link to a plot from the report at `out`.
fn link(plot: &Path, out: &Path) -> String {
    let dir = out.parent().unwrap_or(Path::new(""));
    match plot.strip_prefix(dir) {
        Ok(rel) if !dir.as_os_str().is_empty() => rel.display().to_string(),
        _ => std::fs::canonicalize(plot)
            .unwrap_or_else(|_| PathBuf::from(plot))
            .display()
            .to_string(),
    }
}

pub fn markdown(r: &Results, plan: &Plan, plots: &[PathBuf], out_path: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Performance\n");
    let _ = writeln!(
        out,
        "Measured by `bench/run` on {}: {}, as root.",
        r.date, r.machine
    );
    let _ = writeln!(
        out,
        "Every figure comes from the same run on the same machine: medians (p50) and 99th percentiles over {} runs \
         per latency figure. Capsule is measured through its public JSON-RPC API over HTTP, as an SDK uses it; \
         the alternatives are started the way their users start them, with the same isolation (namespaces for \
         pid, mount, network, IPC and UTS, the host's /usr read-only, a fresh /proc, /dev and /tmp). Ratios \
         divide the alternative's figure by Capsule's: above 1x, Capsule is faster or smaller. Re-run with \
         `bench/run` to check.\n",
        plan.runs
    );
    for plot in plots {
        let _ = writeln!(
            out,
            "![{}]({})",
            plot.file_stem().unwrap_or_default().to_string_lossy(),
            link(plot, out_path)
        );
    }
    if !plots.is_empty() {
        out.push('\n');
    }

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | measured | |\n|---|---|---|");
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {verdict} |", t.goal, t.measured);
    }
    if let Some(floor) = p50(&r.exec, crate::FLOOR) {
        let _ = writeln!(
            out,
            "\nThe floor: on this machine, spawning `/bin/echo hi` with no sandbox at all and waiting for it takes \
             {} (p50). Every create + exec and exec round trip below includes at least that much; the rows \
             \"{}\" show it next to the others.",
            ms(floor),
            crate::FLOOR
        );
    }

    let cold = p50(&r.create, "Capsule, cold");
    let pooled = p50(&r.create, "Capsule, pooled");
    let _ = writeln!(out, "\n## Create a sandbox and run `echo hi` in it\n");
    let _ = writeln!(
        out,
        "Pooled: the server keeps {} ready sandboxes (`--pool`); cold: no pool, every create builds a sandbox. \
         One request at a time, 30 ms apart.\n",
        plan.pool_size
    );
    let _ = writeln!(
        out,
        "| | how | p50 | p99 | p50 vs Capsule cold | p50 vs Capsule pooled |\n|---|---|---|---|---|---|"
    );
    for e in &r.create {
        let row = match &e.value {
            Some(s) => format!(
                "{} | {} | {} | {}",
                ms(s.p50_ms),
                ms(s.p99_ms),
                ratio(Some(s.p50_ms), cold),
                ratio(Some(s.p50_ms), pooled)
            ),
            None => format!("{} | | | ", absent(e)),
        };
        let note = e
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let _ = writeln!(out, "| {}{note} | {} | {row} |", e.subject, e.how);
    }

    let exec = p50(&r.exec, "Capsule");
    let _ = writeln!(out, "\n## Run `echo hi` in a live sandbox\n");
    let _ = writeln!(
        out,
        "| | how | p50 | p99 | p50 vs Capsule |\n|---|---|---|---|---|"
    );
    for e in &r.exec {
        let row = match &e.value {
            Some(s) => format!(
                "{} | {} | {}",
                ms(s.p50_ms),
                ms(s.p99_ms),
                ratio(Some(s.p50_ms), exec)
            ),
            None => format!("{} | | ", absent(e)),
        };
        let _ = writeln!(out, "| {} | {} | {row} |", e.subject, e.how);
    }

    let _ = writeln!(out, "\n## Creation throughput\n");
    let _ = writeln!(
        out,
        "{} concurrent clients, each creating sandboxes back to back for {} s. A Capsule client deletes each \
         sandbox before its next create (so the server holds at most {} at once); the rate counts the whole \
         loop. An alternative's create runs `echo hi` to its end. Latency is that of the create alone.\n",
        plan.clients, plan.throughput_secs, plan.clients
    );
    let best = r
        .throughput
        .iter()
        .filter(|e| e.subject.starts_with("Capsule"))
        .filter_map(|e| e.value.as_ref().map(|t| t.per_second))
        .max_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "| | how | creates/s | creates | p50 | p99 | Capsule's best vs it |\n|---|---|---|---|---|---|---|"
    );
    for e in &r.throughput {
        let row = match &e.value {
            Some(t) => format!(
                "{:.0} | {} | {} | {} | {}",
                t.per_second,
                t.creates,
                ms(t.latency.p50_ms),
                ms(t.latency.p99_ms),
                ratio(best, Some(t.per_second))
            ),
            None => format!("{} | | | | ", absent(e)),
        };
        let _ = writeln!(out, "| {} | {} | {row} |", e.subject, e.how);
    }

    let capsule_idle = find(&r.idle_memory, "Capsule").map(|m| m.host_bytes_per_sandbox);
    let _ = writeln!(out, "\n## Host memory per idle sandbox\n");
    let _ = writeln!(
        out,
        "Growth of the host's used memory (MemTotal - MemAvailable) while the sandboxes sit idle, divided by \
         their number; it includes kernel memory for namespaces, cgroups, mounts and page tables. For Capsule \
         also the growth of the summed PSS of the server and every process under it. gVisor is measured with \
         at most {} sandboxes (each holds its own application kernel).\n",
        plan.runsc_idle
    );
    let _ = writeln!(
        out,
        "| | sandboxes | per sandbox | all of them | PSS per sandbox | vs Capsule |\n|---|---|---|---|---|---|"
    );
    for e in &r.idle_memory {
        let row = match &e.value {
            Some(m) if m.host_bytes_per_sandbox <= 0.0 => format!(
                "{} | lost in noise: the host's used memory fell meanwhile | | | ",
                m.count
            ),
            Some(m) => format!(
                "{} | {:.2} MiB | {:.2} GiB | {} | {}",
                m.count,
                m.host_bytes_per_sandbox / MIB,
                m.host_bytes_per_sandbox * m.count as f64 / (MIB * 1024.0),
                m.pss_bytes_per_sandbox
                    .map(|b| format!("{:.2} MiB", b / MIB))
                    .unwrap_or_default(),
                ratio(Some(m.host_bytes_per_sandbox), capsule_idle)
            ),
            None => format!("{} | | | | ", absent(e)),
        };
        let _ = writeln!(out, "| {} ({}) | {row} |", e.subject, e.how);
    }

    let _ = writeln!(out, "\n## Snapshots\n");
    let _ = writeln!(
        out,
        "`sandbox.v1.snapshot` of a sandbox after writing random data to `/workspace` (and `sync`), then \
         `sandbox.v1.create` from that snapshot until it returns a running sandbox; {} runs each, btrfs \
         storage. None of the alternatives has snapshots of a sandbox's files.\n",
        plan.snapshot_runs
    );
    let _ = writeln!(
        out,
        "| data written | snapshot p50 | snapshot p99 | create from it p50 | create from it p99 |\n|---|---|---|---|---|"
    );
    for e in &r.snapshot {
        if let Some(s) = &e.value {
            let _ = writeln!(
                out,
                "| {} MiB | {} | {} | {} | {} |",
                s.data_mb,
                ms(s.snapshot.p50_ms),
                ms(s.snapshot.p99_ms),
                ms(s.create_from_snapshot.p50_ms),
                ms(s.create_from_snapshot.p99_ms)
            );
        }
    }

    if let Some(e) = &r.e2b_sdk {
        let _ = writeln!(
            out,
            "\n## E2B's Python SDK: `Sandbox.create()` + first `commands.run(\"echo hi\")`\n"
        );
        let _ = writeln!(
            out,
            "The unmodified `e2b` SDK (the version pinned in tests/e2b) pointed at a local Capsule server with \
             `E2B_API_URL`/`E2B_SANDBOX_URL`, {} runs. E2B's figure is the median it publishes for its cloud \
             (create to first command), not measured here.\n",
            plan.e2b_runs
        );
        let _ = writeln!(out, "| | p50 | p99 | vs Capsule |\n|---|---|---|---|");
        match &e.value {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | 1.0x |",
                    e.subject,
                    ms(s.p50_ms),
                    ms(s.p99_ms)
                );
                let _ = writeln!(
                    out,
                    "| E2B cloud (published median) | {E2B_PUBLISHED_MS:.0} ms | | {} |",
                    ratio(Some(E2B_PUBLISHED_MS), Some(s.p50_ms))
                );
            }
            None => {
                let _ = writeln!(out, "| {} | {} | | |", e.subject, absent(e));
            }
        }
    }
    out
}

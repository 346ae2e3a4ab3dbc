//! `pause`, `resume`, `snapshot`, `snapshots`, `fork`, `volume`, `stats`, `pools`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use capsule_api::admin::methods as admin_methods;
use capsule_api::sandbox::{
    ForkResult, ListSnapshotsResult, ListVolumesResult, PauseResult, PoolsResult, SnapshotInfo,
    StatsResult, VolumeInfo, methods,
};
use serde_json::json;

use super::print_json;
use crate::args::{
    ForkArgs, IdArg, PoolsCommand, SnapshotArgs, SnapshotsCommand, StatsArgs, VolumeCommand,
};
use crate::client::Client;
use crate::output::{human_size, parse_duration_ms, table};

/// A size like `512m`, `2g` or `1048576` (bytes) in MiB.
pub fn parse_size_mb(text: &str) -> anyhow::Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult): (&str, f64) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t.as_str(), 1.0 / (1024.0 * 1024.0)),
        Some((i, _)) => {
            let mult = match &t[i..] {
                "k" | "kb" | "kib" => 1.0 / 1024.0,
                "m" | "mb" | "mib" => 1.0,
                "g" | "gb" | "gib" => 1024.0,
                "t" | "tb" | "tib" => 1024.0 * 1024.0,
                other => bail!("size {text:?}: unknown unit {other:?} (use k, m, g or t)"),
            };
            (&t[..i], mult)
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("size {text:?} is not a number"))?;
    let mb = (n * mult).ceil();
    if mb.is_nan() || mb < 1.0 {
        bail!("size {text:?} is less than 1 MiB");
    }
    Ok(mb as u64)
}

fn pause_line(r: &PauseResult) -> String {
    format!("{} is {} (expires at {})", r.id, r.state, r.expires_at)
}

pub async fn pause(
    client: &Client,
    a: IdArg,
    resume: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let method = if resume {
        methods::RESUME
    } else {
        methods::PAUSE
    };
    let r: PauseResult = client.call(method, json!({"id": a.id})).await?;
    if json {
        print_json(&r);
    } else {
        eprintln!("{}", pause_line(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_rows(list: &[SnapshotInfo]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| {
            vec![
                s.snapshot_id.clone(),
                s.name.clone().unwrap_or_else(|| "-".into()),
                s.template.clone(),
                s.source.clone(),
                human_size(s.size_bytes),
                s.created_at.clone(),
            ]
        })
        .collect()
}

const SNAPSHOT_HEADER: [&str; 6] = ["SNAPSHOT", "NAME", "TEMPLATE", "SOURCE", "SIZE", "CREATED"];

pub async fn snapshot(client: &Client, a: SnapshotArgs, json: bool) -> anyhow::Result<ExitCode> {
    let s: SnapshotInfo = client
        .call(methods::SNAPSHOT, json!({"id": a.id, "name": a.name}))
        .await?;
    if json {
        print_json(&s);
    } else {
        println!("{}", s.snapshot_id);
        eprintln!(
            "snapshot of {} taken ({}); start sandboxes from it with `capsule create --snapshot {}`",
            s.source,
            human_size(s.size_bytes),
            s.name.as_deref().unwrap_or(&s.snapshot_id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshots(
    client: &Client,
    cmd: SnapshotsCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotsCommand::Ls => {
            let r: ListSnapshotsResult = client.call(methods::LIST_SNAPSHOTS, json!({})).await?;
            if json {
                print_json(&r);
            } else {
                table(&SNAPSHOT_HEADER, &snapshot_rows(&r.snapshots));
            }
        }
        SnapshotsCommand::Rm { snapshot } => {
            let r: serde_json::Value = client
                .call(methods::DELETE_SNAPSHOT, json!({"snapshot": snapshot}))
                .await?;
            if json {
                print_json(&r);
            } else {
                eprintln!("deleted snapshot {snapshot}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn fork(client: &Client, a: ForkArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut params = json!({"id": a.id, "count": a.count});
    if let Some(ttl) = &a.ttl {
        params["ttl_ms"] = json!(parse_duration_ms(ttl).map_err(|e| anyhow!("--ttl: {e}"))?);
    }
    let r: ForkResult = client.call(methods::FORK, params).await?;
    if json {
        print_json(&r);
    } else {
        for s in &r.sandboxes {
            println!("{}", s.id);
        }
        eprintln!(
            "made {} cop{} of {}",
            r.sandboxes.len(),
            if r.sandboxes.len() == 1 { "y" } else { "ies" },
            a.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn volume_rows(list: &[VolumeInfo]) -> Vec<Vec<String>> {
    list.iter()
        .map(|v| {
            vec![
                v.name.clone(),
                human_size(v.size_bytes),
                v.used_by
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                v.created_at.clone(),
            ]
        })
        .collect()
}

pub async fn volume(client: &Client, cmd: VolumeCommand, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        VolumeCommand::Create { name, size } => {
            let mb = parse_size_mb(&size)?;
            let v: VolumeInfo = client
                .call(methods::CREATE_VOLUME, json!({"name": name, "size_mb": mb}))
                .await?;
            if json {
                print_json(&v);
            } else {
                eprintln!("made volume {} ({})", v.name, human_size(v.size_bytes));
            }
        }
        VolumeCommand::Ls => {
            let r: ListVolumesResult = client.call(methods::LIST_VOLUMES, json!({})).await?;
            if json {
                print_json(&r);
            } else {
                table(
                    &["VOLUME", "SIZE", "USED BY", "CREATED"],
                    &volume_rows(&r.volumes),
                );
            }
        }
        VolumeCommand::Rm { name } => {
            let r: serde_json::Value = client
                .call(methods::DELETE_VOLUME, json!({"name": name}))
                .await?;
            if json {
                print_json(&r);
            } else {
                eprintln!("deleted volume {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn opt_size(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), human_size)
}

fn stats_line(s: &StatsResult, cpu_pct: Option<f64>) -> Vec<String> {
    vec![
        s.id.to_string(),
        s.state.to_string(),
        cpu_pct.map_or_else(|| "-".into(), |p| format!("{p:.1}%")),
        format!(
            "{} / {}",
            opt_size(s.memory_bytes),
            human_size(s.memory_limit_bytes)
        ),
        opt_size(s.memory_peak_bytes),
        format!(
            "{} / {}",
            s.pids.map_or_else(|| "-".into(), |p| p.to_string()),
            s.pids_limit
        ),
        format!(
            "{} / {}",
            opt_size(s.disk_bytes),
            opt_size(s.disk_limit_bytes)
        ),
    ]
}

const STATS_HEADER: [&str; 7] = ["SANDBOX", "STATE", "CPU", "MEMORY", "PEAK", "PIDS", "DISK"];

pub async fn stats(client: &Client, a: StatsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut last: Option<(StatsResult, std::time::Instant)> = None;
    loop {
        let s: StatsResult = client.call(methods::STATS, json!({"id": a.id})).await?;
        let now = std::time::Instant::now();
        let cpu_pct = match (&last, s.cpu_ns) {
            (Some((prev, at)), Some(ns)) => prev.cpu_ns.map(|p| {
                ns.saturating_sub(p) as f64 / now.duration_since(*at).as_nanos().max(1) as f64
                    * 100.0
            }),
            _ => None,
        };
        if json {
            print_json(&s);
        } else {
            if last.is_some() && !a.once {
                // Up over the previous table (header and one row).
                print!("\x1b[2A\x1b[J");
            }
            table(&STATS_HEADER, &[stats_line(&s, cpu_pct)]);
        }
        if a.once {
            return Ok(ExitCode::SUCCESS);
        }
        last = Some((s, now));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

pub async fn pools(client: &Client, cmd: PoolsCommand, json: bool) -> anyhow::Result<ExitCode> {
    let r: PoolsResult = match cmd {
        PoolsCommand::Ls => client.call(methods::POOLS, json!({})).await?,
        PoolsCommand::Set { template, count } => {
            client
                .call(
                    admin_methods::SET_POOL,
                    json!({"template": template, "size": count}),
                )
                .await?
        }
    };
    if json {
        print_json(&r);
    } else {
        let rows: Vec<Vec<String>> = r
            .pools
            .iter()
            .map(|p| vec![p.template.clone(), p.size.to_string(), p.ready.to_string()])
            .collect();
        table(&["TEMPLATE", "SIZE", "READY"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mb("512m").unwrap(), 512);
        assert_eq!(parse_size_mb("2G").unwrap(), 2048);
        assert_eq!(parse_size_mb("1048576").unwrap(), 1);
        assert!(
            parse_size_mb("10x")
                .unwrap_err()
                .to_string()
                .contains("10x")
        );
        assert!(parse_size_mb("0m").is_err());
    }
}

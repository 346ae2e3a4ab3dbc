//! `serve`: the Capsule server on the native backend with SQLite state.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use capsule_engine::store::Store;
use capsule_engine::{Engine, EngineConfig};
use capsule_runtime::Runtime;
use capsule_runtime::multi::Runtimes;
use capsule_runtime::native::{NativeOptions, NativeRuntime};
use capsule_runtime::oci::{OciFlavor, OciOptions, OciRuntime};
use capsule_server::{ServerConfig, app, is_loopback};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{EngineArgs, ServeArgs};

pub(crate) fn default_state_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/capsule");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("capsule");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/capsule")
}

pub(crate) fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPSULE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

/// Holds an exclusive lock on the state directory for the life of the server.
fn lock_state_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("capsule.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match rustix::fs::flock(
        file.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => bail!(
            "another capsule server already uses {}; stop it or pass a different --state-dir",
            dir.display()
        ),
        Err(e) => Err(anyhow!(e)).with_context(|| format!("cannot lock {}", path.display())),
    }
}

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("installing a signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The native backend plus the OCI runtimes `--runtimes` names. One that
/// cannot run here is reported once and refused, with the reason, to the
/// creates that ask for it; a name that is no runtime at all stops the
/// server.
fn extra_runtimes(
    e: &EngineArgs,
    state_dir: &std::path::Path,
    native: Arc<NativeRuntime>,
) -> anyhow::Result<Runtimes> {
    let mut runtimes = Runtimes::new(native);
    for (index, name) in e.runtimes.iter().map(|n| n.trim()).enumerate() {
        if name.is_empty() || name == "native" {
            continue;
        }
        let flavor: OciFlavor = name.parse().map_err(|err| {
            anyhow!(
                "--runtimes: {err} (or native); the value was {:?}",
                e.runtimes.join(",")
            )
        })?;
        let agent_bin = e.agent_bin.clone().or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("capsule-agent")))
                .filter(|p| p.is_file())
        });
        let Some(agent_bin) = agent_bin else {
            let why = "the OCI backend runs the stand-alone agent, and none was found: build it \
                       with `scripts/build-agent` and pass its path with --agent-bin";
            tracing::warn!("runtime {}: {why}", flavor.runtime_name());
            runtimes.add_unavailable(flavor.runtime_name(), why);
            continue;
        };
        let opts = OciOptions {
            dir: state_dir.join(format!("oci-{}", flavor.name())),
            flavor,
            runtime_path: None,
            agent_bin,
            // A host id range of its own, apart from the native backend's.
            uid_base: e.uid_base.saturating_add(65_536 * (index as u32 + 1)),
            tmp_bytes: 1 << 30,
        };
        match OciRuntime::new(opts) {
            Ok(rt) => {
                tracing::info!(
                    "runtime {} enabled ({})",
                    flavor.runtime_name(),
                    rt.version()
                );
                runtimes.add(rt);
            }
            Err(err) => {
                let why = err.to_string();
                tracing::warn!("runtime {} is not available: {why}", flavor.runtime_name());
                runtimes.add_unavailable(flavor.runtime_name(), why);
            }
        }
    }
    Ok(runtimes)
}

/// An engine on the native backend with its state in `state_dir`, locked
/// for as long as the returned file lives.
pub(crate) async fn start_engine(
    e: &EngineArgs,
    state_dir: &std::path::Path,
    api_keys: Vec<String>,
    rate_limit_per_min: Option<u32>,
) -> anyhow::Result<(Arc<Engine>, std::fs::File)> {
    if e.default_ttl_ms < 1000 {
        bail!(
            "--default-ttl-ms {} is too short: sandboxes live at least 1000 ms",
            e.default_ttl_ms
        );
    }
    if e.default_ttl_ms > e.max_ttl_ms {
        bail!(
            "--default-ttl-ms {} is above --max-ttl-ms {}",
            e.default_ttl_ms,
            e.max_ttl_ms
        );
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let lock = lock_state_dir(state_dir)?;
    // Sandbox inits are re-parented to the server so it can reap them.
    if let Err(e) = capsule_sys::process::set_child_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let store = Store::open(&state_dir.join("state.db"))?;
    let launcher = std::env::current_exe().context("cannot find the capsule executable")?;
    let runtime = NativeRuntime::new(NativeOptions {
        dir: state_dir.join("native"),
        launcher,
        uid_base: e.uid_base,
        cgroups: !e.no_cgroups,
        tmp_bytes: 1 << 30,
        ready_launchers: e.ready_launchers,
        storage: e.storage,
    })
    .context("the native backend cannot start")?;
    let runtime = extra_runtimes(e, state_dir, runtime)?;
    for w in runtime.warnings() {
        tracing::warn!("{w}");
    }
    let runtime: Arc<dyn Runtime> = Arc::new(runtime);
    let config = EngineConfig {
        default_ttl_ms: e.default_ttl_ms,
        max_ttl_ms: e.max_ttl_ms,
        max_sandboxes: e.max_sandboxes,
        default_memory_mb: e.default_memory_mb,
        pids: e.pids,
        output_limit_bytes: e.output_limit,
        api_keys,
        rate_limit_per_min,
        default_disk_mb: Some(e.default_disk_mb).filter(|mb| *mb > 0),
        pause_stops_ttl: e.paused_ttl == "stop",
        max_paused_ms: e.max_paused_ms,
        health_interval_ms: e.health_interval_ms,
        audit_retention_ms: e.audit_retention_days * 24 * 3_600_000,
        pools: e.pool.clone(),
        ..EngineConfig::default()
    };
    let engine = Engine::start(config, store, runtime)
        .await
        .map_err(|e| anyhow!("the engine cannot start: {}", e.message))?;
    Ok((engine, lock))
}

pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(&a.log_format, "info");
    let api_keys: Vec<String> = a
        .api_keys
        .iter()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    let state_dir = a.engine.state_dir.clone().unwrap_or_else(default_state_dir);
    let rate = Some(a.rate_limit_per_min).filter(|r| *r > 0);
    let (engine, _lock) = start_engine(&a.engine, &state_dir, api_keys.clone(), rate).await?;
    if !is_loopback(&a.listen) && !engine.keys_required() && !a.allow_remote {
        engine.shutdown().await;
        bail!(
            "refusing to listen on {} without API keys: anyone who reaches it could run code here. \
             Give keys with --api-keys, listen on 127.0.0.1 (the default), or pass --allow-remote \
             if a proxy in front authenticates requests",
            a.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| {
        format!("cannot listen on {} (is another server running there? choose another with --listen)", a.listen)
    })?;
    let available: Vec<String> = engine
        .templates()
        .into_iter()
        .filter(|t| t.available)
        .map(|t| t.name)
        .collect();
    tracing::info!(
        "Capsule {} listening on http://{} ({} backend, state in {}, templates: {})",
        env!("CARGO_PKG_VERSION"),
        a.listen,
        engine.backend(),
        state_dir.display(),
        available.join(", ")
    );
    if !api_keys.is_empty() {
        tracing::info!(
            "clients must present an API key ({} given with --api-keys)",
            api_keys.len()
        );
    } else if engine.keys_required() {
        tracing::info!(
            "clients must present an API key (keys were made with `capsule keys create`)"
        );
    } else if is_loopback(&a.listen) {
        tracing::info!("no API keys are configured: the server is open to local clients only");
    } else {
        tracing::warn!(
            "serving on {} without authentication (--allow-remote)",
            a.listen
        );
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let router = app(
        engine.clone(),
        ServerConfig {
            max_body_bytes: a.max_request_bytes,
            any_host: !is_loopback(&a.listen),
            allowed_origins: a.allow_origin.clone(),
            shutdown: shutdown.clone(),
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ending = shutdown.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
        // Long-lived MCP streams end with the server.
        ending.cancel();
    });
    let server = tokio::spawn(async move { server.await });
    shutdown_signal().await;
    tracing::info!(
        "shutting down; sandboxes keep running and are re-attached at the next start (unclaimed warm-pool sandboxes are deleted)"
    );
    let _ = stop_tx.send(());
    if tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .is_err()
    {
        tracing::warn!("requests still running after 10s were cut off");
    }
    engine.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

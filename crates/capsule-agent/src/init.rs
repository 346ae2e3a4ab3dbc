//! PID 1 duties: reaping every process that ends in the sandbox and handing
//! the exit status of the ones the agent started to whoever waits for them;
//! forwarding termination signals to the whole sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_sys::process::{ExitStatus, reap_any};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// Collects exit statuses. Register a pid right after spawning it, before
/// the next await, and the status arrives on the returned channel.
#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    /// Statuses of registered-later pids that ended first (defensive).
    early: Mutex<HashMap<i32, ExitStatus>>,
}

impl Reaper {
    pub fn register(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        if let Some(status) = self
            .early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid)
        {
            let _ = tx.send(status);
        } else {
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pid, tx);
        }
        rx
    }

    /// Reaps everything that has ended and notifies waiters.
    pub fn reap(&self) {
        for (pid, status) in reap_any() {
            let waiter = self
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pid);
            match waiter {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    // An orphan re-parented to init, or a pid not yet
                    // registered; remember a few in case it is the latter.
                    let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
                    if early.len() > 4096 {
                        early.clear();
                    }
                    early.insert(pid, status);
                }
            }
        }
    }

    /// Forgets early statuses of pids nobody will register (orphans).
    pub fn forget_orphans(&self) {
        self.early.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Runs the reaper for the life of the agent.
pub fn spawn_reaper(reaper: Arc<Reaper>) -> std::io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = sigchld.recv() => reaper.reap(),
                _ = sweep.tick() => {
                    // Signals coalesce; a periodic sweep catches any missed.
                    reaper.reap();
                    reaper.forget_orphans();
                }
            }
        }
    });
    Ok(())
}

/// On SIGTERM, SIGINT or SIGHUP: as PID 1, ask every process in the sandbox
/// to stop, give them `grace`, kill what is left, and exit.
pub fn spawn_signal_forwarder(is_init: bool, grace: Duration) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        tracing::info!("stopping: forwarding SIGTERM to every process");
        if is_init {
            let _ = capsule_sys::process::kill(-1, libc::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                // kill(-1, 0) fails with ESRCH once no other process is left.
                if capsule_sys::process::kill(-1, 0).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = capsule_sys::process::kill(-1, libc::SIGKILL);
        }
        std::process::exit(0);
    });
    Ok(())
}

/// What an exit status looks like in envd's `EndEvent`.
pub fn end_fields(status: ExitStatus) -> (i32, String) {
    match status {
        ExitStatus::Exited(code) => (code, format!("exit status {code}")),
        ExitStatus::Signaled(sig) => (
            -1,
            format!("signal: {}", capsule_protocol::process::signal_name(sig)),
        ),
    }
}

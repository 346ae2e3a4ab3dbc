//! Launchers made ready ahead of time.
//!
//! Moving a process into a cgroup costs an RCU grace period on many kernels
//! (the cgroup threadgroup lock; 10-20 ms on a small VM), the single largest
//! part of starting a sandbox. A slot is a launcher process already placed
//! in a fresh cgroup of its own, waiting for its spec on stdin; taking one
//! leaves only the real work on the create path. The pool refills in the
//! background.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use capsule_sys::cgroup::{Cgroups, Limits, SandboxCgroup};
use capsule_sys::error::chain;
use tokio::sync::Notify;

use super::init;

/// A launcher waiting for its spec.
pub struct Slot {
    /// The name of its cgroup (also recorded in the sandbox directory).
    pub cgroup_name: Option<String>,
    pub cgroup: Option<SandboxCgroup>,
    pub launcher: tokio::process::Child,
}

fn random_name() -> String {
    let mut b = [0u8; 6];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("slot-{hex}")
}

/// Starts a launcher and moves it into a new cgroup, whose name goes into
/// `claimed` before the cgroup exists (so a concurrent sweep spares it).
async fn prepare(
    launcher: &Path,
    cgroups: Option<&Cgroups>,
    claimed: &Mutex<BTreeSet<String>>,
) -> Result<Slot, String> {
    // Starting a process waits for its exec (a large binary, relocated on
    // start): done off the async threads, so requests in flight go on.
    let program = launcher.to_path_buf();
    let mut child = tokio::task::spawn_blocking(move || {
        init::helper_command(&program, init::LAUNCHER_ARG).spawn()
    })
    .await
    .map_err(|e| format!("starting the launcher: {e}"))?
    .map_err(|e| format!("starting the launcher {}: {e}", launcher.display()))?;
    let Some(cgroups) = cgroups else {
        return Ok(Slot {
            cgroup_name: None,
            cgroup: None,
            launcher: child,
        });
    };
    let name = random_name();
    claimed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.clone());
    let unclaim = |name: &str| {
        claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    };
    let no_limits = Limits {
        cpu_period_us: 100_000,
        ..Limits::default()
    };
    let cg = match cgroups.create(&name, &no_limits) {
        Ok(cg) => cg,
        Err(e) => {
            unclaim(&name);
            return Err(format!("creating cgroup {name}: {}", chain(&e)));
        }
    };
    let Some(pid) = child.id() else {
        let _ = cg.remove();
        unclaim(&name);
        return Err("the launcher exited at once".to_owned());
    };
    let pid = pid.to_string();
    let files = cg.procs_files();
    let moved = tokio::task::spawn_blocking(move || {
        for f in files {
            std::fs::write(&f, &pid).map_err(|e| format!("joining {}: {e}", f.display()))?;
        }
        Ok::<_, String>(())
    })
    .await
    .map_err(|e| format!("joining the cgroup: {e}"))?;
    if let Err(e) = moved {
        let _ = child.start_kill();
        let _ = child.wait().await;
        let _ = cg.remove();
        unclaim(&name);
        return Err(e);
    }
    Ok(Slot {
        cgroup_name: Some(name),
        cgroup: Some(cg),
        launcher: child,
    })
}

/// Ready slots and the task that keeps them topped up.
pub struct Pool {
    ready: Mutex<Vec<Slot>>,
    /// Cgroups of slots being prepared, ready, or handed out and not yet
    /// recorded by their sandbox.
    claimed: Mutex<BTreeSet<String>>,
    target: usize,
    wake: Arc<Notify>,
    /// Set by `drain`: the refill task stops.
    closed: std::sync::atomic::AtomicBool,
    refill: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Pool {
    pub fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            ready: Mutex::new(Vec::new()),
            claimed: Mutex::new(BTreeSet::new()),
            target,
            wake: Arc::new(Notify::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            refill: Mutex::new(None),
        })
    }

    pub fn take(&self) -> Option<Slot> {
        let slot = self.ready.lock().unwrap_or_else(|p| p.into_inner()).pop();
        self.wake.notify_one();
        slot
    }

    /// A slot for a sandbox: a ready one, or else one prepared now. Its
    /// cgroup stays claimed until `release`.
    pub async fn take_or_prepare(
        &self,
        launcher: &Path,
        cgroups: Option<&Cgroups>,
    ) -> Result<Slot, String> {
        match self.take() {
            Some(slot) => Ok(slot),
            None => prepare(launcher, cgroups, &self.claimed).await,
        }
    }

    /// Ends the claim on a cgroup once its sandbox has recorded it.
    pub fn release(&self, name: &str) {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Stops the refill (waiting for a launcher being prepared), then every
    /// ready launcher, and removes their cgroups.
    pub async fn drain(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
        let refill = self.refill.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = refill {
            let _ = task.await;
        }
        let slots: Vec<Slot> =
            std::mem::take(&mut *self.ready.lock().unwrap_or_else(|p| p.into_inner()));
        for mut slot in slots {
            let _ = slot.launcher.start_kill();
            let _ = slot.launcher.wait().await;
            if let Some(cg) = slot.cgroup {
                let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
            }
            if let Some(name) = &slot.cgroup_name {
                self.release(name);
            }
        }
    }

    /// The cgroup names the pool claims (so leftover sweeps spare them).
    pub fn cgroup_names(&self) -> Vec<String> {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Keeps the pool full until the runtime goes away.
    pub fn spawn_refill(self: &Arc<Self>, launcher: PathBuf, cgroups: Option<Cgroups>) {
        if self.target == 0 {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        let wake = self.wake.clone();
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let Some(p) = pool.upgrade() else { return };
                if p.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let missing = p
                    .target
                    .saturating_sub(p.ready.lock().unwrap_or_else(|e| e.into_inner()).len());
                if missing == 0 {
                    drop(p);
                    wake.notified().await;
                    continue;
                }
                // A slot made while the pool is draining still goes in:
                // the drain, which waits for this task, cleans it up.
                match prepare(&launcher, cgroups.as_ref(), &p.claimed).await {
                    Ok(slot) => {
                        failures = 0;
                        p.ready.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
                    }
                    Err(_) if p.closed.load(std::sync::atomic::Ordering::SeqCst) => return,
                    Err(e) => {
                        drop(p);
                        failures += 1;
                        tracing::warn!("preparing a sandbox launcher failed: {e}");
                        // Back off; creates still work by preparing inline.
                        let wait =
                            std::time::Duration::from_millis(100 * u64::from(failures.min(50)));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        });
        *self.refill.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }
}

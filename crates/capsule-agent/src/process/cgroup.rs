//! One cgroup per started process tree, inside the sandbox's own cgroup, so
//! ending a tree also ends what escaped it by `setsid` or double forks: no
//! process can leave its cgroup (the sandbox cannot even see cgroupfs).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};

/// Which kind of cgroup directory the agent was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupKind {
    /// cgroup v2: `cgroup.kill` ends everything at once.
    Unified,
    /// cgroup v1 freezer hierarchy: freeze, kill each, thaw.
    V1Freezer,
    /// Another v1 hierarchy: kill each until none is left.
    V1,
}

/// The sandbox cgroup directory processes get their own child cgroups in.
pub struct ExecCgroups {
    dir: OwnedFd,
    kind: CgroupKind,
    next: AtomicU64,
    /// Cgroups left holding processes after their tree's root ended.
    lingering: Mutex<Vec<String>>,
}

/// The cgroup of one process tree.
pub struct ExecCgroup {
    name: String,
    /// `cgroup.procs`, opened by the agent; the child writes `0` into it
    /// before exec to join.
    pub procs: OwnedFd,
}

fn read_at(dir: impl AsFd, path: &str) -> io::Result<String> {
    let fd = rustix::fs::openat(dir, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = rustix::io::read(&fd, &mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn write_at(dir: impl AsFd, path: &str, value: &str) -> io::Result<()> {
    let fd = rustix::fs::openat(dir, path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::io::write(&fd, value.as_bytes())?;
    Ok(())
}

impl ExecCgroups {
    pub fn new(dir: OwnedFd, kind: CgroupKind) -> Self {
        Self {
            dir,
            kind,
            next: AtomicU64::new(1),
            lingering: Mutex::new(Vec::new()),
        }
    }

    /// Creates the cgroup for the next process tree.
    pub fn create(&self) -> io::Result<ExecCgroup> {
        self.lingering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name| {
                rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::REMOVEDIR).is_err()
            });
        let name = format!("proc-{}", self.next.fetch_add(1, Ordering::Relaxed));
        match rustix::fs::mkdirat(&self.dir, name.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let procs = rustix::fs::openat(
            &self.dir,
            format!("{name}/cgroup.procs").as_str(),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(ExecCgroup { name, procs })
    }

    /// The pids in a process tree's cgroup.
    fn pids(&self, cg: &ExecCgroup) -> Vec<i32> {
        read_at(&self.dir, &format!("{}/cgroup.procs", cg.name))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process of the tree. Blocking; run on the blocking pool.
    pub fn kill_all(&self, cg: &ExecCgroup) {
        match self.kind {
            CgroupKind::Unified => {
                if write_at(&self.dir, &format!("{}/cgroup.kill", cg.name), "1").is_ok() {
                    return;
                }
                self.kill_each(cg);
            }
            CgroupKind::V1Freezer => {
                let state = format!("{}/freezer.state", cg.name);
                let frozen = write_at(&self.dir, &state, "FROZEN").is_ok();
                self.kill_each(cg);
                if frozen {
                    let _ = write_at(&self.dir, &state, "THAWED");
                }
            }
            CgroupKind::V1 => self.kill_each(cg),
        }
    }

    fn kill_each(&self, cg: &ExecCgroup) {
        for _ in 0..50 {
            let pids = self.pids(cg);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = capsule_sys::process::kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Removes the tree's cgroup once it is empty; a cgroup that still holds
    /// processes (daemons the tree left behind) stays.
    pub fn release(&self, cg: ExecCgroup) {
        if rustix::fs::unlinkat(&self.dir, cg.name.as_str(), AtFlags::REMOVEDIR).is_err() {
            self.lingering
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(cg.name);
        }
    }
}

//! One sandbox's cgroup directories.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Limits, Version, write_file};
use crate::error::{Result, SysError};

/// Resource use read from a sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub cpu_usage_ns: Option<u64>,
    pub pids: Option<u64>,
}

/// The cgroup of one sandbox: one directory per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroup {
    pub(super) version: Version,
    pub(super) dirs: Vec<(BTreeSet<String>, PathBuf)>,
}

impl SandboxCgroup {
    pub fn version(&self) -> Version {
        self.version
    }

    /// The directories, one per hierarchy.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, d)| d.as_path())
    }

    fn dir_with(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c.contains(controller))
            .map(|(_, d)| d.as_path())
    }

    /// The `cgroup.procs` files a process writes its pid into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn exists(&self) -> bool {
        self.dirs().any(Path::exists)
    }

    pub(super) fn create_dirs(&self) -> Result<()> {
        for dir in self.dirs() {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(SysError::path("mkdir", dir, e)),
            }
        }
        Ok(())
    }

    /// Writes `limits` (fields left `None` are not touched).
    pub fn apply_limits(&self, limits: &Limits) -> Result<()> {
        match self.version {
            Version::V1 => self.apply_v1(limits),
            Version::V2 => self.apply_v2(limits),
        }
    }

    fn apply_v1(&self, limits: &Limits) -> Result<()> {
        if let (Some(bytes), Some(dir)) = (limits.memory_bytes, self.dir_with("memory")) {
            write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // Swap accounting is optional; where present, allow no swap.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &bytes.to_string())?;
            }
            let swappiness = dir.join("memory.swappiness");
            if swappiness.exists() {
                // Not every kernel lets a child cgroup change it; best effort.
                let _ = write_file(&swappiness, "0");
            }
        }
        if let (Some(dir), Some(quota)) = (self.dir_with("cpu"), limits.cpu_quota_us) {
            write_file(
                &dir.join("cpu.cfs_period_us"),
                &limits.cpu_period_us.to_string(),
            )?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let (Some(max), Some(dir)) = (limits.pids_max, self.dir_with("pids")) {
            write_file(&dir.join("pids.max"), &max.to_string())?;
        }
        Ok(())
    }

    fn apply_v2(&self, limits: &Limits) -> Result<()> {
        let Some((controllers, dir)) = self.dirs.first() else {
            return Ok(());
        };
        if let Some(bytes) = limits.memory_bytes
            && controllers.contains("memory")
        {
            write_file(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if let Some(quota) = limits.cpu_quota_us
            && controllers.contains("cpu")
        {
            write_file(
                &dir.join("cpu.max"),
                &format!("{quota} {}", limits.cpu_period_us),
            )?;
        }
        if let Some(max) = limits.pids_max
            && controllers.contains("pids")
        {
            write_file(&dir.join("pids.max"), &max.to_string())?;
        }
        Ok(())
    }

    /// Gives the cgroup the lowest CPU weight (`background`) or the default
    /// one: a sandbox made ahead of demand (a warm pool's) then yields the
    /// CPU to every sandbox in use. Without the `cpu` controller nothing
    /// changes.
    pub fn set_background(&self, background: bool) -> Result<()> {
        match self.version {
            Version::V1 => match self.dir_with("cpu") {
                Some(dir) => write_file(
                    &dir.join("cpu.shares"),
                    if background { "2" } else { "1024" },
                ),
                None => Ok(()),
            },
            Version::V2 => match self.dirs.first() {
                Some((controllers, dir)) if controllers.contains("cpu") => write_file(
                    &dir.join("cpu.weight"),
                    if background { "1" } else { "100" },
                ),
                _ => Ok(()),
            },
        }
    }

    /// The pids of every process in the sandbox's cgroup.
    pub fn pids(&self) -> BTreeSet<i32> {
        let mut pids = BTreeSet::new();
        for file in self.procs_files() {
            if let Ok(text) = fs::read_to_string(&file) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids
    }

    /// Freezes (true) or thaws (false) every process in the cgroup.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self.version {
            Version::V2 => {
                let dir = self
                    .dirs()
                    .next()
                    .ok_or_else(|| SysError::Unsupported("no cgroup".into()))?;
                write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
            }
            Version::V1 => {
                let dir = self.dir_with("freezer").ok_or_else(|| {
                    SysError::Unsupported("the freezer controller is not mounted".into())
                })?;
                write_file(
                    &dir.join("freezer.state"),
                    if frozen { "FROZEN" } else { "THAWED" },
                )
            }
        }
    }

    /// True once every process in the cgroup is frozen (freezing takes
    /// effect asynchronously).
    pub fn is_frozen(&self) -> Result<bool> {
        match self.version {
            Version::V2 => {
                let dir = self
                    .dirs()
                    .next()
                    .ok_or_else(|| SysError::Unsupported("no cgroup".into()))?;
                let path = dir.join("cgroup.events");
                let text =
                    std::fs::read_to_string(&path).map_err(|e| SysError::path("read", &path, e))?;
                Ok(text.lines().any(|l| l.trim() == "frozen 1"))
            }
            Version::V1 => {
                let dir = self.dir_with("freezer").ok_or_else(|| {
                    SysError::Unsupported("the freezer controller is not mounted".into())
                })?;
                let path = dir.join("freezer.state");
                let text =
                    std::fs::read_to_string(&path).map_err(|e| SysError::path("read", &path, e))?;
                Ok(text.trim() == "FROZEN")
            }
        }
    }

    /// Kills every process in the cgroup with SIGKILL.
    pub fn kill_all(&self) -> Result<()> {
        if self.version == Version::V2
            && let Some(dir) = self.dirs().next()
        {
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                return write_file(&kill, "1");
            }
        }
        // v1 (or v2 before 5.14): freeze so nothing forks, kill each, thaw.
        let frozen = self.set_frozen(true).is_ok();
        for pid in self.pids() {
            let _ = crate::process::kill(pid, libc::SIGKILL);
        }
        if frozen {
            let _ = self.set_frozen(false);
        }
        Ok(())
    }

    /// Removes the directories, waiting up to `patience` for exiting
    /// processes to leave. Missing directories are not an error.
    pub fn remove_within(&self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        for dir in self.dirs() {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    // A fake tree holds control files; real cgroupfs never
                    // reports ENOTEMPTY for control files.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                        fs::remove_dir_all(dir).map_err(|e| SysError::path("rmdir", dir, e))?;
                        break;
                    }
                    Err(e) => return Err(SysError::path("rmdir", dir, e)),
                }
            }
        }
        Ok(())
    }

    pub fn remove(&self) -> Result<()> {
        self.remove_within(Duration::from_secs(2))
    }

    /// Current resource use; fields the host does not report are `None`.
    pub fn stats(&self) -> CgroupStats {
        let read_u64 = |dir: Option<&Path>, file: &str| -> Option<u64> {
            fs::read_to_string(dir?.join(file))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        match self.version {
            Version::V1 => CgroupStats {
                memory_bytes: read_u64(self.dir_with("memory"), "memory.usage_in_bytes"),
                memory_peak_bytes: read_u64(self.dir_with("memory"), "memory.max_usage_in_bytes"),
                cpu_usage_ns: read_u64(self.dir_with("cpuacct"), "cpuacct.usage"),
                pids: read_u64(self.dir_with("pids"), "pids.current"),
            },
            Version::V2 => {
                let dir = self.dirs().next();
                let cpu_usage_ns = dir
                    .and_then(|d| fs::read_to_string(d.join("cpu.stat")).ok())
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("usage_usec "))
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    })
                    .map(|us| us * 1000);
                CgroupStats {
                    memory_bytes: read_u64(dir, "memory.current"),
                    memory_peak_bytes: read_u64(dir, "memory.peak"),
                    cpu_usage_ns,
                    pids: read_u64(dir, "pids.current"),
                }
            }
        }
    }
}

//! Where OCI sandboxes' cgroups live. The runtime creates them from
//! `linux.cgroupsPath` (one directory per hierarchy: on cgroup v1 in every
//! mounted hierarchy, named ones included); Capsule reads usage from them
//! and removes whatever a crash left behind.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capsule_sys::SysError;
use capsule_sys::cgroup::{Cgroups, Hierarchy, SandboxCgroup, Version, parse_mountinfo};

/// The cgroups of one OCI backend instance.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    /// The hierarchies Capsule reads and limits (memory, CPU, pids,
    /// freezer), each with `parent` at `<mount><parent_path>`.
    pub cgroups: Cgroups,
    /// The parent of every sandbox's cgroup, relative to each hierarchy's
    /// root (`/capsule-oci-<instance>`, under the server's own cgroup).
    pub parent_path: String,
    /// Every cgroup mount, where the runtime may also create directories.
    pub mounts: Vec<PathBuf>,
    /// The cgroup v2 mount of a hybrid host when it holds controllers
    /// (crun refuses to run while it can see one).
    pub hybrid_v2_with_controllers: Option<PathBuf>,
}

impl CgroupLayout {
    /// Finds the hierarchies and prepares the parent directories.
    pub fn detect(parent_name: &str) -> Result<Self, SysError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| SysError::path("read", "/proc/self/mountinfo", e))?;
        let detected = Cgroups::detect(parent_name)?;
        let mounts = parse_mountinfo(&mountinfo);
        let mount_of = |dir: &Path| -> Option<PathBuf> {
            mounts
                .iter()
                .map(|m| m.mount_point.clone())
                .filter(|p| dir.starts_with(p))
                .max_by_key(|p| p.as_os_str().len())
        };
        // Runtimes take one cgroupsPath for every hierarchy: the server's
        // own cgroup when it is the same in all of them, else the root
        // (hosts that place a process differently per v1 hierarchy).
        let mut own_paths = BTreeSet::new();
        for h in &detected.hierarchies {
            let mount = mount_of(&h.own).ok_or_else(|| {
                SysError::Unsupported(format!("{} is on no cgroup mount", h.own.display()))
            })?;
            own_paths.insert(
                h.own
                    .strip_prefix(&mount)
                    .unwrap_or(Path::new(""))
                    .to_path_buf(),
            );
        }
        let own = match own_paths.len() {
            1 => own_paths.pop_first().unwrap_or_default(),
            _ => PathBuf::new(),
        };
        let relative = own.join(parent_name);
        let mut hierarchies = Vec::new();
        for h in &detected.hierarchies {
            let Some(mount) = mount_of(&h.parent) else {
                continue;
            };
            let parent = mount.join(&relative);
            hierarchies.push(Hierarchy {
                controllers: h.controllers.clone(),
                own: parent.parent().map_or(mount.clone(), Path::to_path_buf),
                parent,
            });
        }
        let cgroups = Cgroups {
            version: detected.version,
            hierarchies,
        };
        let hybrid_v2_with_controllers = mounts
            .iter()
            .filter(|m| m.unified && cgroups.version == Version::V1)
            .find(|m| {
                fs::read_to_string(m.mount_point.join("cgroup.controllers"))
                    .is_ok_and(|c| !c.trim().is_empty())
            })
            .map(|m| m.mount_point.clone());
        let layout = CgroupLayout {
            cgroups,
            parent_path: format!("/{}", relative.display()),
            mounts: mounts.into_iter().map(|m| m.mount_point).collect(),
            hybrid_v2_with_controllers,
        };
        layout.cgroups.prepare()?;
        Ok(layout)
    }

    /// `linux.cgroupsPath` of a sandbox.
    pub fn runtime_path(&self, name: &str) -> String {
        format!("{}/{name}", self.parent_path.trim_end_matches('/'))
    }

    /// The sandbox's cgroup in the hierarchies Capsule uses.
    pub fn sandbox(&self, name: &str) -> SandboxCgroup {
        self.cgroups.open(name)
    }

    /// Every directory the sandbox's cgroup may have, in every mount.
    fn all_dirs(&self, name: &str) -> Vec<PathBuf> {
        let relative = self.parent_path.trim_start_matches('/');
        self.mounts
            .iter()
            .map(|m| m.join(relative).join(name))
            .collect()
    }

    /// How often the out-of-memory killer struck in the sandbox's cgroup.
    pub fn oom_kills(&self, name: &str) -> Option<u64> {
        let h = self
            .cgroups
            .hierarchies
            .iter()
            .find(|h| h.controllers.contains("memory"))?;
        let file = match self.cgroups.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = fs::read_to_string(h.parent.join(name).join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Kills what is left in the sandbox's cgroup and removes its
    /// directories in every hierarchy, waiting up to `patience` for dying
    /// processes to leave.
    pub fn remove(&self, name: &str, patience: Duration) -> Result<(), SysError> {
        let cg = self.sandbox(name);
        if cg.exists() {
            let _ = cg.kill_all();
        }
        let deadline = Instant::now() + patience;
        for dir in self.all_dirs(name) {
            remove_tree(&dir, deadline)?;
        }
        Ok(())
    }

    /// Names of the sandbox cgroups that exist in any hierarchy.
    pub fn existing(&self) -> BTreeSet<String> {
        let relative = self.parent_path.trim_start_matches('/');
        let mut names = BTreeSet::new();
        for m in &self.mounts {
            if let Ok(entries) = fs::read_dir(m.join(relative)) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir())
                        && let Some(n) = e.file_name().to_str()
                    {
                        names.insert(n.to_owned());
                    }
                }
            }
        }
        names
    }

    /// Removes the empty parent directories (made again on the next start).
    pub fn remove_parents(&self) {
        let relative = self.parent_path.trim_start_matches('/');
        for m in &self.mounts {
            let _ = fs::remove_dir(m.join(relative));
        }
    }
}

/// Removes a cgroup directory and any children (deepest first; runsc and
/// systemd-style managers may nest), retrying while processes leave.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), SysError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path(), deadline)?;
        }
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(SysError::path("rmdir", dir, e)),
        }
    }
}

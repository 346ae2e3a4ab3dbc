//! Control groups, v1 and v2: one directory per sandbox (per hierarchy on
//! v1) carrying memory, CPU and pid limits, plus freezing, killing and usage.
//!
//! Everything here works on plain paths under a root, so the logic runs
//! unchanged against a fake cgroupfs tree in a temporary directory.

mod detect;
mod sandbox;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use detect::{CgroupMount, parse_mountinfo, parse_self_cgroup};
pub use sandbox::{CgroupStats, SandboxCgroup};

use crate::error::{Result, SysError};

/// The controllers Capsule uses.
pub const WANTED: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One hierarchy Capsule places sandboxes in: on v1 one per mounted
/// controller set; on v2 the single unified tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The controllers this hierarchy carries that Capsule uses.
    pub controllers: BTreeSet<String>,
    /// The directory sandboxes are created in (`<mount>/<own path>/capsule`).
    pub parent: PathBuf,
    /// The cgroup the server itself runs in, in this hierarchy.
    pub own: PathBuf,
}

/// Limits applied to one sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU bandwidth: `quota_us` of every `period_us`.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    pub pids_max: Option<u64>,
}

/// Where Capsule's cgroups live on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    pub version: Version,
    pub hierarchies: Vec<Hierarchy>,
}

impl Cgroups {
    /// Finds the cgroup hierarchies of this host from `/proc/self/mountinfo`
    /// and `/proc/self/cgroup`. A hybrid host (a v2 mount without
    /// controllers beside v1 controllers) is treated as v1. Sandboxes go in
    /// `parent_name` under the server's own cgroup; each server instance
    /// needs its own name so that one never mistakes another's sandboxes
    /// for leftovers.
    pub fn detect(parent_name: &str) -> Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| SysError::path("read", "/proc/self/mountinfo", e))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| SysError::path("read", "/proc/self/cgroup", e))?;
        Self::from_host_text(&mountinfo, &own, Path::new("/"), parent_name)
    }

    /// Like [`Cgroups::detect`] from given file contents, with mount points
    /// re-rooted under `root` (for tests with a fake tree).
    pub fn from_host_text(
        mountinfo: &str,
        self_cgroup: &str,
        root: &Path,
        parent_name: &str,
    ) -> Result<Self> {
        let mounts = parse_mountinfo(mountinfo);
        let memberships = parse_self_cgroup(self_cgroup);
        let reroot = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));

        let v1: Vec<&CgroupMount> = mounts
            .iter()
            .filter(|m| !m.unified && m.controllers.iter().any(|c| WANTED.contains(&c.as_str())))
            .collect();
        if !v1.is_empty() {
            let mut hierarchies = Vec::new();
            for m in v1 {
                let own_rel = memberships
                    .iter()
                    .find(|(ctrls, _)| ctrls.iter().any(|c| m.controllers.contains(c)))
                    .map(|(_, path)| path.clone())
                    .unwrap_or_else(|| "/".to_owned());
                let own = relative_to_mount(&reroot(&m.mount_point), &m.root, &own_rel);
                hierarchies.push(Hierarchy {
                    controllers: m
                        .controllers
                        .iter()
                        .filter(|c| WANTED.contains(&c.as_str()))
                        .cloned()
                        .collect(),
                    parent: own.join(parent_name),
                    own,
                });
            }
            return Ok(Cgroups {
                version: Version::V1,
                hierarchies,
            });
        }
        let unified = mounts
            .iter()
            .find(|m| m.unified)
            .ok_or_else(|| SysError::Unsupported("no cgroup filesystem is mounted".to_owned()))?;
        let mount = reroot(&unified.mount_point);
        let own_rel = memberships
            .iter()
            .find(|(ctrls, _)| ctrls.is_empty())
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| "/".to_owned());
        let own = relative_to_mount(&mount, &unified.root, &own_rel);
        let available = read_controllers(&mount.join("cgroup.controllers"))?;
        Ok(Cgroups {
            version: Version::V2,
            hierarchies: vec![Hierarchy {
                controllers: available
                    .into_iter()
                    .filter(|c| WANTED.contains(&c.as_str()))
                    .collect(),
                parent: own.join(parent_name),
                own,
            }],
        })
    }

    /// A warning naming the limit controllers (memory, cpu, pids) this host
    /// lacks, if any.
    pub fn missing_limits_warning(&self) -> Option<String> {
        let have = self.controllers();
        let missing: Vec<&str> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| !have.contains(*c))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "cgroup controllers {} are not available: those limits are not enforced",
                missing.join(", ")
            )
        })
    }

    /// The controllers available across all hierarchies.
    pub fn controllers(&self) -> BTreeSet<String> {
        self.hierarchies
            .iter()
            .flat_map(|h| h.controllers.iter().cloned())
            .collect()
    }

    /// Creates the parent directories and, on v2, enables the controllers for
    /// sandbox cgroups. Fails with the reason when this user may not.
    pub fn prepare(&self) -> Result<()> {
        for h in &self.hierarchies {
            create_dir(&h.parent)?;
            // Creating a child proves the parent is really ours to use.
            let probe = h.parent.join(format!(".probe-{}", std::process::id()));
            create_dir(&probe)?;
            fs::remove_dir(&probe).map_err(|e| SysError::path("rmdir", &probe, e))?;
            if self.version == Version::V2 {
                let wanted: Vec<&str> = ["memory", "cpu", "pids"]
                    .into_iter()
                    .filter(|c| h.controllers.contains(*c))
                    .collect();
                enable_controllers(&h.own, &wanted)?;
                enable_controllers(&h.parent, &wanted)?;
            }
        }
        Ok(())
    }

    /// Creates the cgroup of sandbox `name` with `limits`.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<SandboxCgroup> {
        let cg = self.open(name);
        let result = cg.create_dirs().and_then(|()| cg.apply_limits(limits));
        if let Err(e) = result {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    /// The cgroup of sandbox `name`, whether or not it exists.
    pub fn open(&self, name: &str) -> SandboxCgroup {
        SandboxCgroup {
            version: self.version,
            dirs: self
                .hierarchies
                .iter()
                .map(|h| (h.controllers.clone(), h.parent.join(name)))
                .collect(),
        }
    }

    /// Removes the (empty) parent directories; they are made again by
    /// [`Cgroups::prepare`].
    pub fn remove_parents(&self) {
        for h in &self.hierarchies {
            let _ = fs::remove_dir(&h.parent);
        }
    }

    /// Names of the sandbox cgroups that exist now (for orphan clean-up).
    pub fn existing(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for h in &self.hierarchies {
            if let Ok(entries) = fs::read_dir(&h.parent) {
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
}

fn relative_to_mount(mount: &Path, mount_root: &str, cgroup_path: &str) -> PathBuf {
    // A cgroup namespace or bind mount can make the mount's root a
    // sub-directory; the membership path is relative to the hierarchy root.
    let rel = cgroup_path
        .strip_prefix(mount_root)
        .filter(|_| mount_root != "/")
        .unwrap_or(cgroup_path);
    mount.join(rel.trim_start_matches('/'))
}

fn read_controllers(path: &Path) -> Result<BTreeSet<String>> {
    let text = fs::read_to_string(path).map_err(|e| SysError::path("read", path, e))?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

fn create_dir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SysError::path("mkdir", path, e)),
    }
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| SysError::path("write", path, e))
}

/// Enables `controllers` for the children of `dir` (v2), skipping ones that
/// already are.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = read_controllers(&control).unwrap_or_default();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.contains(**c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let line = missing.join(" ");
    match write_file(&control, &line) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(SysError::Unsupported(format!(
            "cannot enable {line} in {}: the cgroup holds processes; run Capsule in a \
             delegated cgroup of its own (systemd: Delegate=yes) or pass --cgroup-parent",
            control.display()
        ))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;

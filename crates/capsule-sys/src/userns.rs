//! User namespace id mappings: sandbox root is always an unprivileged host id.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SysError};

/// Ids inside the sandbox and where they land on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// How the maps get written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapMethod {
    /// The launcher is host root and writes `/proc/<pid>/{uid,gid}_map` itself.
    Direct,
    /// The setuid helpers `newuidmap`/`newgidmap` write the ranges that
    /// `/etc/subuid` and `/etc/subgid` grant the user.
    NewIdMap,
    /// Unprivileged without subordinate ids: only the caller's own id maps,
    /// to sandbox root, and `setgroups` is denied.
    SelfOnly,
}

/// The complete mapping of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    pub method: MapMethod,
}

/// The size of the id range root-started Capsule gives every sandbox.
pub const SANDBOX_ID_COUNT: u32 = 65536;

impl IdMapping {
    /// Root on the host: sandbox ids 0..65536 land on `base..base+65536`.
    pub fn rooted(base: u32) -> Self {
        let range = IdRange {
            inside: 0,
            outside: base,
            count: SANDBOX_ID_COUNT,
        };
        Self {
            uids: vec![range],
            gids: vec![range],
            method: MapMethod::Direct,
        }
    }

    /// The host id sandbox id `inside` maps to, if mapped.
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        host_id(&self.uids, inside)
    }

    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        host_id(&self.gids, inside)
    }

    /// True when sandbox uid `uid` exists (the unprivileged user needs 1000).
    pub fn maps_uid(&self, uid: u32) -> bool {
        self.host_uid(uid).is_some()
    }
}

fn host_id(ranges: &[IdRange], inside: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        (inside >= r.inside && inside - r.inside < r.count).then(|| r.outside + (inside - r.inside))
    })
}

fn map_text(ranges: &[IdRange]) -> String {
    let mut out = String::new();
    for r in ranges {
        let _ = writeln!(out, "{} {} {}", r.inside, r.outside, r.count);
    }
    out
}

/// Subordinate id ranges granted to a user in `/etc/subuid`-style text.
pub fn parse_subids(text: &str, user: &str, id: u32) -> Vec<(u32, u32)> {
    let id_text = id.to_string();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let (who, start, count) = (parts.next()?, parts.next()?, parts.next()?);
            if who != user && who != id_text {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

/// Finds a program in the usual system directories.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The best mapping an unprivileged user can get: subordinate ids through
/// newuidmap when granted, otherwise only their own id. The second value
/// explains a degraded mapping.
pub fn unprivileged_mapping(uid: u32, gid: u32, user: &str) -> (IdMapping, Option<String>) {
    let subuids = fs::read_to_string("/etc/subuid")
        .map(|t| parse_subids(&t, user, uid))
        .unwrap_or_default();
    let subgids = fs::read_to_string("/etc/subgid")
        .map(|t| parse_subids(&t, user, uid))
        .unwrap_or_default();
    let helpers = find_program("newuidmap").is_some() && find_program("newgidmap").is_some();
    let big_enough = |r: &[(u32, u32)]| r.first().is_some_and(|&(_, count)| count >= 1000);
    if helpers && big_enough(&subuids) && big_enough(&subgids) {
        let (us, uc) = subuids[0];
        let (gs, gc) = subgids[0];
        let uc = uc.min(SANDBOX_ID_COUNT - 1);
        let gc = gc.min(SANDBOX_ID_COUNT - 1);
        return (
            IdMapping {
                uids: vec![
                    IdRange {
                        inside: 0,
                        outside: uid,
                        count: 1,
                    },
                    IdRange {
                        inside: 1,
                        outside: us,
                        count: uc,
                    },
                ],
                gids: vec![
                    IdRange {
                        inside: 0,
                        outside: gid,
                        count: 1,
                    },
                    IdRange {
                        inside: 1,
                        outside: gs,
                        count: gc,
                    },
                ],
                method: MapMethod::NewIdMap,
            },
            None,
        );
    }
    let why = if !helpers {
        "newuidmap/newgidmap are not installed (Debian/Ubuntu package `uidmap`)".to_owned()
    } else {
        format!("/etc/subuid or /etc/subgid grants {user} no range of at least 1000 ids")
    };
    (
        IdMapping {
            uids: vec![IdRange {
                inside: 0,
                outside: uid,
                count: 1,
            }],
            gids: vec![IdRange {
                inside: 0,
                outside: gid,
                count: 1,
            }],
            method: MapMethod::SelfOnly,
        },
        Some(format!(
            "only one id can be mapped into sandboxes because {why}; sandboxed processes \
             run as the sandbox's root (your own unprivileged user on the host) instead of uid 1000"
        )),
    )
}

/// Writes the maps of the user namespace that process `pid` created.
pub fn write_id_maps(pid: i32, mapping: &IdMapping) -> Result<()> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    match mapping.method {
        MapMethod::Direct => {
            write_proc(&proc_dir.join("uid_map"), &map_text(&mapping.uids))?;
            write_proc(&proc_dir.join("gid_map"), &map_text(&mapping.gids))?;
        }
        MapMethod::SelfOnly => {
            write_proc(&proc_dir.join("setgroups"), "deny")?;
            write_proc(&proc_dir.join("uid_map"), &map_text(&mapping.uids))?;
            write_proc(&proc_dir.join("gid_map"), &map_text(&mapping.gids))?;
        }
        MapMethod::NewIdMap => {
            run_idmap_helper("newuidmap", pid, &mapping.uids)?;
            run_idmap_helper("newgidmap", pid, &mapping.gids)?;
        }
    }
    Ok(())
}

fn write_proc(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| SysError::path("write", path, e))
}

fn run_idmap_helper(program: &str, pid: i32, ranges: &[IdRange]) -> Result<()> {
    let path = find_program(program)
        .ok_or_else(|| SysError::Unsupported(format!("{program} is not installed")))?;
    let mut cmd = Command::new(&path);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let out = cmd.output().map_err(|e| SysError::path("run", &path, e))?;
    if !out.status.success() {
        return Err(SysError::Helper {
            program: program.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Sets real, effective and saved ids inside the namespace (both groups and users).
pub fn become_id(uid: u32, gid: u32, clear_groups: bool) -> Result<()> {
    if clear_groups {
        // SAFETY: setgroups with a zero count reads no memory.
        let rc = unsafe { libc::setgroups(0, std::ptr::null()) };
        if rc == -1 {
            return Err(SysError::syscall(
                "setgroups",
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: setresgid/setresuid take integers only. Note these are the raw
    // per-thread system calls wrapped by glibc's process-wide versions.
    let rc = unsafe { libc::setresgid(gid, gid, gid) };
    if rc == -1 {
        return Err(SysError::syscall(
            "setresgid",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above.
    let rc = unsafe { libc::setresuid(uid, uid, uid) };
    if rc == -1 {
        return Err(SysError::syscall(
            "setresuid",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_mapping_translates_ids() {
        let m = IdMapping::rooted(1_000_000);
        assert_eq!(m.host_uid(0), Some(1_000_000));
        assert_eq!(m.host_uid(1000), Some(1_001_000));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(map_text(&m.uids), "0 1000000 65536\n");
    }

    #[test]
    fn subid_parsing_matches_name_or_uid() {
        let text = "alice:100000:65536\nbob:200000:0\n1001:300000:1000\n# junk\nbad line\n";
        assert_eq!(parse_subids(text, "alice", 1000), vec![(100000, 65536)]);
        assert_eq!(parse_subids(text, "bob", 1002), vec![]);
        assert_eq!(parse_subids(text, "carol", 1001), vec![(300000, 1000)]);
    }
}

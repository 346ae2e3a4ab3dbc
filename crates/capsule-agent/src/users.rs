//! Sandbox users: who a request acts as, read from the sandbox's own
//! `/etc/passwd`, and per-thread filesystem credentials so file operations
//! get exactly that user's permissions.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use capsule_protocol::ConnectError;

/// A user inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// Parses `/etc/passwd` text.
pub fn parse_passwd(text: &str) -> Vec<Identity> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(Identity {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// Looks users up in the sandbox's passwd file, re-reading it when it changes.
#[derive(Debug)]
pub struct Users {
    passwd: PathBuf,
    /// Set when the sandbox maps only one id: every user then runs with uid
    /// and gid 0 (which is an unprivileged id on the host).
    single_id: bool,
    cache: Mutex<Option<(SystemTime, Vec<Identity>)>>,
}

impl Users {
    pub fn new(passwd: impl Into<PathBuf>, single_id: bool) -> Self {
        Self {
            passwd: passwd.into(),
            single_id,
            cache: Mutex::new(None),
        }
    }

    fn entries(&self) -> Vec<Identity> {
        let mtime = fs::metadata(&self.passwd).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(mtime), Some((cached_at, entries))) = (mtime, cache.as_ref())
            && *cached_at == mtime
        {
            return entries.clone();
        }
        let entries = fs::read_to_string(&self.passwd)
            .map(|t| parse_passwd(&t))
            .unwrap_or_default();
        if let Some(mtime) = mtime {
            *cache = Some((mtime, entries.clone()));
        }
        entries
    }

    /// The identity of `name`.
    pub fn lookup(&self, name: &str) -> Result<Identity, ConnectError> {
        let mut id = self
            .entries()
            .into_iter()
            .find(|u| u.name == name)
            .or_else(|| builtin(name))
            .ok_or_else(|| {
                ConnectError::new(
                    capsule_protocol::Code::InvalidArgument,
                    format!("user {name:?} does not exist in the sandbox"),
                )
            })?;
        if self.single_id {
            id.uid = 0;
            id.gid = 0;
        }
        Ok(id)
    }
}

/// The two users every sandbox has, even when its passwd file was damaged.
fn builtin(name: &str) -> Option<Identity> {
    match name {
        "root" => Some(Identity {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/bash".into(),
        }),
        "user" => Some(Identity {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            shell: "/bin/bash".into(),
        }),
        _ => None,
    }
}

/// The user named by an `Authorization: Basic <base64(user:)>` header.
pub fn user_from_basic_auth(header: &str) -> Option<String> {
    let token = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next()?.trim();
    (!user.is_empty()).then(|| user.to_owned())
}

/// Acts with another user's filesystem permissions on the current thread
/// until dropped. Only for blocking-pool threads: the ids are per thread.
pub struct FsIdentity {
    active: bool,
}

impl FsIdentity {
    pub fn assume(uid: u32, gid: u32) -> Self {
        if uid == 0 && gid == 0 {
            return Self { active: false };
        }
        // SAFETY: setfsgid/setfsuid take an id and change only the calling
        // thread's filesystem credentials; glibc does not broadcast them.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        Self { active: true }
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if self.active {
            // SAFETY: as in `assume`; returning to fsuid 0 restores the
            // thread's filesystem capabilities.
            unsafe {
                libc::setfsuid(0);
                libc::setfsgid(0);
            }
        }
    }
}

/// Runs blocking `f` on the blocking pool with `id`'s filesystem permissions.
pub async fn as_user<T, F>(id: &Identity, f: F) -> Result<T, ConnectError>
where
    F: FnOnce() -> Result<T, ConnectError> + Send + 'static,
    T: Send + 'static,
{
    let (uid, gid) = (id.uid, id.gid);
    tokio::task::spawn_blocking(move || {
        let _guard = FsIdentity::assume(uid, gid);
        f()
    })
    .await
    .map_err(|e| ConnectError::internal(format!("file operation task failed: {e}")))?
}

/// Resolves a request path: relative paths are relative to the user's home.
pub fn resolve(path: &str, id: &Identity) -> Result<PathBuf, ConnectError> {
    if path.is_empty() {
        return Err(ConnectError::invalid_argument("path is empty"));
    }
    if path.contains('\0') {
        return Err(ConnectError::invalid_argument("path contains a NUL byte"));
    }
    let expanded = if path == "~" {
        id.home.clone()
    } else if let Some(rest) = path.strip_prefix("~/") {
        id.home.join(rest)
    } else {
        PathBuf::from(path)
    };
    Ok(if expanded.is_absolute() {
        expanded
    } else {
        id.home.join(expanded)
    })
}

/// True when `path` (as the kernel resolved it) is the agent's own `/proc`
/// directory or something under it.
pub fn is_agent_proc(path: &Path) -> bool {
    let mut parts = path.components().skip(1);
    let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
        return false;
    };
    if first.as_os_str() != "proc" {
        return false;
    }
    let Some(pid) = second
        .as_os_str()
        .to_str()
        .and_then(|s| s.parse::<u32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() {
        return true;
    }
    // A thread of the agent is reachable as /proc/<tid> too.
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        .is_some_and(|tgid| tgid == std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_parsing() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n# c\nuser:x:1000:1000::/home/user:/bin/bash\nbad\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].uid, 1000);
        assert_eq!(users[1].home, Path::new("/home/user"));
    }

    #[test]
    fn basic_auth_user() {
        assert_eq!(
            user_from_basic_auth("Basic dXNlcjo=").as_deref(),
            Some("user")
        );
        assert_eq!(
            user_from_basic_auth("Basic cm9vdDo=").as_deref(),
            Some("root")
        );
        assert_eq!(user_from_basic_auth("Bearer x"), None);
        assert_eq!(user_from_basic_auth("Basic !!!"), None);
    }

    #[test]
    fn resolves_relative_to_home() {
        let id = builtin("user").unwrap();
        assert_eq!(
            resolve("a.txt", &id).unwrap(),
            Path::new("/home/user/a.txt")
        );
        assert_eq!(resolve("~/b", &id).unwrap(), Path::new("/home/user/b"));
        assert_eq!(
            resolve("/workspace/c", &id).unwrap(),
            Path::new("/workspace/c")
        );
        assert!(resolve("", &id).is_err());
        assert!(resolve("a\0b", &id).is_err());
    }

    #[test]
    fn single_id_sandboxes_run_everyone_as_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let passwd = tmp.path().join("passwd");
        fs::write(&passwd, "user:x:1000:1000::/home/user:/bin/bash\n").unwrap();
        let users = Users::new(&passwd, true);
        let id = users.lookup("user").unwrap();
        assert_eq!((id.uid, id.gid), (0, 0));
        assert_eq!(id.home, Path::new("/home/user"));
        assert!(Users::new(&passwd, false).lookup("nobody-here").is_err());
    }

    #[test]
    fn agent_proc_paths() {
        let me = std::process::id();
        assert!(is_agent_proc(Path::new(&format!("/proc/{me}/environ"))));
        assert!(is_agent_proc(Path::new(&format!("/proc/{me}"))));
        assert!(!is_agent_proc(Path::new("/proc/cpuinfo")));
        assert!(!is_agent_proc(Path::new("/workspace/proc/1")));
    }
}

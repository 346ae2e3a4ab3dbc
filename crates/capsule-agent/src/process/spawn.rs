//! Building and starting one process.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use capsule_protocol::process::StartRequest;
use capsule_protocol::{Code, ConnectError};
use tokio::net::unix::pipe;

use super::pty::{self, PtyMaster};
use crate::users::Identity;

/// Settings every process starts from.
#[derive(Debug, Clone, Default)]
pub struct SpawnDefaults {
    /// Environment before the identity's and the request's own.
    pub env: BTreeMap<String, String>,
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) struct Spawned {
    pub pid: u32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pub stdin: Option<pipe::Sender>,
    pub pty: Option<PtyMaster>,
}

fn start_error(cmd: &str, err: &io::Error) -> ConnectError {
    match err.kind() {
        io::ErrorKind::NotFound => ConnectError::new(
            Code::NotFound,
            format!("cannot run {cmd:?}: executable file not found"),
        ),
        io::ErrorKind::PermissionDenied => ConnectError::new(
            Code::PermissionDenied,
            format!("cannot run {cmd:?}: permission denied"),
        ),
        _ => ConnectError::internal(format!("cannot run {cmd:?}: {err}")),
    }
}

/// The environment of a new process: defaults, then the user's, then the request's.
pub(super) fn environment(
    defaults: &SpawnDefaults,
    id: &Identity,
    request: &BTreeMap<String, String>,
    terminal: bool,
) -> BTreeMap<String, String> {
    let mut env = defaults.env.clone();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.insert("HOME".into(), id.home.display().to_string());
    env.insert("USER".into(), id.name.clone());
    env.insert("LOGNAME".into(), id.name.clone());
    env.entry("SHELL".into())
        .or_insert_with(|| id.shell.clone());
    if terminal {
        env.entry("TERM".into())
            .or_insert_with(|| "xterm-256color".into());
    }
    env.extend(request.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn validate(req: &StartRequest) -> Result<(), ConnectError> {
    let p = &req.process;
    if p.cmd.is_empty() {
        return Err(ConnectError::invalid_argument("process.cmd is empty"));
    }
    let has_nul = |s: &str| s.contains('\0');
    if has_nul(&p.cmd) || p.args.iter().any(|a| has_nul(a)) {
        return Err(ConnectError::invalid_argument(
            "the command contains a NUL byte",
        ));
    }
    for (k, v) in &p.envs {
        if k.is_empty() || k.contains('=') || has_nul(k) || has_nul(v) {
            return Err(ConnectError::invalid_argument(format!(
                "invalid environment variable name {k:?}"
            )));
        }
    }
    Ok(())
}

pub(super) fn spawn(
    req: &StartRequest,
    id: &Identity,
    defaults: &SpawnDefaults,
    cgroup_procs: Option<RawFd>,
) -> Result<Spawned, ConnectError> {
    validate(req)?;
    let p = &req.process;
    let cwd = match &p.cwd {
        Some(c) if !c.is_empty() => crate::users::resolve(c, id)?,
        _ => id.home.clone(),
    };
    if !Path::new(&cwd).is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "working directory {} does not exist or is not a directory",
            cwd.display()
        )));
    }
    let cwd_c = CString::new(cwd.as_os_str().as_bytes())
        .map_err(|_| ConnectError::invalid_argument("working directory contains a NUL byte"))?;
    let env = environment(defaults, id, &p.envs, req.pty.is_some());
    let mut cmd = Command::new(&p.cmd);
    cmd.args(&p.args).env_clear().envs(&env).current_dir(&cwd);
    let switch_to = (id.uid != rustix::process::geteuid().as_raw()).then_some((id.uid, id.gid));

    let mut pty_master = None;
    let mut stdin_pipe = None;
    let terminal = req.pty.is_some();
    if let Some(pty_req) = req.pty {
        let (cols, rows) = super::terminal_size(pty_req.size.cols, pty_req.size.rows)?;
        let (master, slave) = pty::open(cols, rows)
            .map_err(|e| ConnectError::internal(format!("cannot open a terminal: {e}")))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| ConnectError::internal(format!("cannot duplicate the terminal: {e}")))
        };
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        pty_master = Some(master);
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if req.stdin == Some(true) {
            cmd.stdin(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null());
        }
    }
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe system calls on values prepared before the fork.
    // Joining the process cgroup happens while still root, because cgroup
    // permission checks use the credentials of whoever opened the file.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup_procs {
                // Best effort: without the cgroup, ending the tree falls back
                // to a session scan.
                libc::write(fd, b"0".as_ptr().cast(), 1);
            }
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid)) = switch_to {
                if libc::setgroups(0, std::ptr::null()) == -1
                    || libc::setresgid(gid, gid, gid) == -1
                    || libc::setresuid(uid, uid, uid) == -1
                {
                    return Err(io::Error::last_os_error());
                }
                // Enter the directory again with the user's permissions.
                if libc::chdir(cwd_c.as_ptr()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }

    let mut child = cmd.spawn().map_err(|e| start_error(&p.cmd, &e))?;
    let pid = child.id();
    let to_receiver = |fd: OwnedFd| {
        pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| ConnectError::internal(format!("output pipe: {e}")))
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| to_receiver(s.into()))
        .transpose()?;
    let stderr = child
        .stderr
        .take()
        .map(|s| to_receiver(s.into()))
        .transpose()?;
    if let Some(s) = child.stdin.take() {
        let fd: OwnedFd = s.into();
        stdin_pipe = Some(
            pipe::Sender::from_owned_fd(fd)
                .map_err(|e| ConnectError::internal(format!("input pipe: {e}")))?,
        );
    }
    // The reaper collects the exit status; the handle itself is not needed.
    drop(child);
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        stdin: stdin_pipe,
        pty: pty_master,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_layers_in_order() {
        let defaults = SpawnDefaults {
            env: [
                ("LANG".into(), "C.UTF-8".into()),
                ("HOME".into(), "/wrong".into()),
            ]
            .into(),
        };
        let id = Identity {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            shell: "/bin/bash".into(),
        };
        let req = [("LANG".into(), "de_DE.UTF-8".into())].into();
        let env = environment(&defaults, &id, &req, true);
        assert_eq!(env["HOME"], "/home/user");
        assert_eq!(env["LANG"], "de_DE.UTF-8");
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["TERM"], "xterm-256color");
        assert_eq!(env["USER"], "user");
    }
}

//! Building and starting one process.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
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
    /// Environment before the identity's and the request's own; shared, so
    /// that `POST /init` can change it for every later process.
    pub env: std::sync::Arc<std::sync::RwLock<BTreeMap<String, String>>>,
}

impl SpawnDefaults {
    pub fn new(env: BTreeMap<String, String>) -> Self {
        Self {
            env: std::sync::Arc::new(std::sync::RwLock::new(env)),
        }
    }

    /// Adds (or replaces) variables of the default environment.
    pub fn extend_env(&self, vars: BTreeMap<String, String>) {
        self.env
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(vars);
    }
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) struct Spawned {
    pub pid: u32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pub stdin: Option<pipe::Sender>,
    pub pty: Option<PtyMaster>,
}

pub(crate) fn start_error(cmd: &str, err: &io::Error) -> ConnectError {
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
pub(crate) fn environment(
    defaults: &SpawnDefaults,
    id: &Identity,
    request: &BTreeMap<String, String>,
    terminal: bool,
) -> BTreeMap<String, String> {
    let mut env = defaults
        .env
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
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
    let switch_to = switch_to(id);

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
    under_shim(&mut cmd, terminal, switch_to, cwd_c);

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

/// The uid and gid to switch to for `id`, when the agent does not already run as it.
pub(crate) fn switch_to(id: &Identity) -> Option<(u32, u32)> {
    (id.uid != rustix::process::geteuid().as_raw()).then_some((id.uid, id.gid))
}

/// Makes `cmd` start in a session of its own below a shim (see `shim`), as
/// `switch_to` when given, in `cwd` (entered again after switching, with
/// the user's permissions). With `terminal`, its stdin is the terminal that
/// becomes the session's controlling one.
pub(crate) fn under_shim(
    cmd: &mut Command,
    terminal: bool,
    switch_to: Option<(u32, u32)>,
    cwd: CString,
) {
    // SAFETY: the closure runs in the child between fork and exec, in a copy
    // of a multi-threaded process, so it makes only async-signal-safe system
    // calls on values prepared before the fork. It turns the child into the
    // process tree's shim (see `shim`) and lets the grandchild go on to exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // Old gVisor releases lack child subreapers (EINVAL): orphans
            // then go to the agent, which reaps them as the sandbox's init,
            // and only the shim's direct line is ended with the process.
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(err);
                }
            }
            let child = libc::fork();
            if child == -1 {
                return Err(io::Error::last_os_error());
            }
            if child > 0 {
                shim::run(child);
            }
            // The process itself: likelier than the agent to be picked by
            // the out-of-memory killer, then the sandbox user's identity.
            let adj = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if adj >= 0 {
                libc::write(adj, b"500".as_ptr().cast(), 3);
                libc::close(adj);
            }
            if let Some((uid, gid)) = switch_to {
                if libc::setgroups(0, std::ptr::null()) == -1
                    || libc::setresgid(gid, gid, gid) == -1
                    || libc::setresuid(uid, uid, uid) == -1
                {
                    return Err(io::Error::last_os_error());
                }
                // Enter the directory again with the user's permissions.
                if libc::chdir(cwd.as_ptr()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The shim: a small process between the agent and each started process.
/// It is a child subreaper, so everything the process starts stays below it
/// even after `setsid` or a double fork; ending the tree means ending the
/// shim's descendants. It holds none of the process's descriptors, reaps
/// orphans, and exits the way the process did.
mod shim {
    /// Runs in the forked child of a multi-threaded process: only
    /// async-signal-safe calls.
    pub(super) fn run(child: libc::pid_t) -> ! {
        // SAFETY: every call below is async-signal-safe and touches only
        // this process's own descriptors, signal dispositions and children.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
                if null > 2 {
                    libc::close(null);
                }
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            // Signals sent to the process group are meant for the process.
            for sig in [
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGPIPE,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
            ] {
                libc::signal(sig, libc::SIG_IGN);
            }
            libc::prctl(libc::PR_SET_NAME, c"capsule-shim".as_ptr());
            loop {
                let mut status = 0;
                let reaped = libc::waitpid(-1, &mut status, 0);
                if reaped == child {
                    mirror(status);
                }
                if reaped == -1 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
        }
    }

    /// Ends the shim the same way its process ended.
    unsafe fn mirror(status: libc::c_int) -> ! {
        // SAFETY: async-signal-safe calls on this process only.
        unsafe {
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig);
            }
            libc::_exit(libc::WEXITSTATUS(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_layers_in_order() {
        let defaults = SpawnDefaults::new(
            [
                ("LANG".into(), "C.UTF-8".into()),
                ("HOME".into(), "/wrong".into()),
            ]
            .into(),
        );
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

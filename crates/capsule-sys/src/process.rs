//! Processes: fork in a single-threaded launcher, sessions, pidfds that survive
//! pid reuse, reaping, and process attributes.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::{Result, SysError};

/// What `fork` returned to this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    Parent { child: i32 },
    Child,
}

/// The number of threads of the calling process.
pub fn thread_count() -> Result<usize> {
    let entries = fs::read_dir("/proc/self/task")
        .map_err(|e| SysError::path("list", "/proc/self/task", e))?;
    Ok(entries.count())
}

/// Forks the calling process. Refuses when more than one thread runs: after
/// a fork of a multi-threaded process the child may only make
/// async-signal-safe calls, which the launcher's code does not limit itself to.
pub fn fork_single_threaded() -> Result<Forked> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(SysError::Unsupported(format!(
            "fork refused: the process runs {threads} threads, expected 1"
        )));
    }
    // SAFETY: the process has exactly one thread (checked above), so the
    // child starts with consistent allocator and runtime state and may run
    // arbitrary Rust code. No locks are held across this call.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(SysError::syscall("fork", io::Error::last_os_error())),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

/// Ends the calling process at once with `code`, without running exit
/// handlers or flushing buffers that belong to the parent's copy of memory.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: `_exit` never returns and touches no process state we rely on.
    unsafe { libc::_exit(code) }
}

/// Starts a new session with the caller as leader.
pub fn setsid() -> Result<()> {
    rustix::process::setsid()
        .map(|_| ())
        .map_err(|e| SysError::syscall("setsid", e))
}

/// Marks the calling process a child subreaper: orphaned descendants are
/// re-parented to it instead of to init.
pub fn set_child_subreaper() -> Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| SysError::syscall("prctl(PR_SET_CHILD_SUBREAPER)", e))
}

/// Makes the process non-dumpable: no core dumps, and `/proc/<pid>` files
/// and ptrace need `CAP_SYS_PTRACE` in its user namespace.
pub fn set_non_dumpable() -> Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| SysError::syscall("prctl(PR_SET_DUMPABLE)", e))
}

/// Sets `no_new_privs`: execve can never grant privileges again.
pub fn set_no_new_privs() -> Result<()> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| SysError::syscall("prctl(PR_SET_NO_NEW_PRIVS)", e))
}

/// Asks the kernel to send `signal` to the caller when its parent dies.
pub fn set_parent_death_signal(signal: i32) -> Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and reads no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    if rc == -1 {
        return Err(SysError::syscall(
            "prctl(PR_SET_PDEATHSIG)",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    pub fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signaled(sig) => write!(f, "was killed by signal {sig}"),
        }
    }
}

/// Waits for the child `pid` to end (blocking).
pub fn wait_child(pid: i32) -> Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable int for the duration of the call.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(ExitStatus::from_wait_status(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(SysError::syscall("waitpid", err));
        }
    }
}

/// Reaps any children that have ended, without blocking. Returns each
/// reaped pid with its status.
pub fn reap_any() -> Vec<(i32, ExitStatus)> {
    let mut reaped = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int for the duration of the call.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc <= 0 {
            return reaped;
        }
        reaped.push((rc, ExitStatus::from_wait_status(status)));
    }
}

/// Sends `signal` to `pid` (negative: a process group; -1: every process the
/// caller may signal).
pub fn kill(pid: i32, signal: i32) -> Result<()> {
    // SAFETY: kill takes two integers and reads no memory.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == -1 {
        return Err(SysError::syscall("kill", io::Error::last_os_error()));
    }
    Ok(())
}

/// Fields of `/proc/<pid>/stat` that Capsule reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub num_threads: i64,
    /// Clock ticks after boot; with the pid it names a process uniquely.
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).copied();
    Some(ProcStat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        num_threads: field(20)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// Reads `/proc/<pid>/stat` (from `proc_root`, normally `/proc`).
pub fn read_stat(proc_root: &Path, pid: i32) -> Result<ProcStat> {
    let path = proc_root.join(pid.to_string()).join("stat");
    let text = fs::read_to_string(&path).map_err(|e| SysError::path("read", &path, e))?;
    parse_stat(&text).ok_or_else(|| SysError::Parse {
        path,
        detail: "not a stat line".to_owned(),
    })
}

/// A process named by pid and start time, so a recycled pid is never
/// mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessRef {
    /// Records the process that currently holds `pid`.
    pub fn of(pid: i32) -> Result<Self> {
        let stat = read_stat(Path::new("/proc"), pid)?;
        Ok(Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// True when the same process is still running (a zombie counts as gone).
    pub fn is_alive(&self) -> bool {
        match read_stat(Path::new("/proc"), self.pid) {
            Ok(stat) => {
                stat.start_time == self.start_time && stat.state != 'Z' && stat.state != 'X'
            }
            Err(_) => false,
        }
    }

    /// Opens a pidfd for the process, or `None` when it is gone or the pid
    /// now belongs to another process.
    pub fn open(&self) -> Result<Option<PidFd>> {
        let Some(pid) = rustix::process::Pid::from_raw(self.pid) else {
            return Ok(None);
        };
        let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(None),
            Err(e) => return Err(SysError::syscall("pidfd_open", e)),
        };
        // The pidfd pins the process; checking the start time after opening
        // proves it is the one we recorded.
        match read_stat(Path::new("/proc"), self.pid) {
            Ok(stat) if stat.start_time == self.start_time => Ok(Some(PidFd { fd, pid: self.pid })),
            _ => Ok(None),
        }
    }
}

/// A pidfd: a handle on one process that stays valid after it exits.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Rebuilds a handle from a descriptor that came from [`PidFd::into_fd`].
    pub fn from_parts(fd: OwnedFd, pid: i32) -> Self {
        Self { fd, pid }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal`; a process that has already exited is not an error.
    pub fn send_signal(&self, signal: i32) -> Result<()> {
        // SAFETY: pidfd_send_signal reads only the fd and integers; a null
        // siginfo asks the kernel to fill in the defaults.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == -1 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(SysError::syscall("pidfd_send_signal", err));
        }
        Ok(())
    }

    /// Reaps the process if it is our child and has exited. `Ok(None)` while
    /// it runs; `Err` with ECHILD when it is not our child.
    pub fn try_reap(&self) -> Result<Option<ExitStatus>> {
        // SAFETY: siginfo_t is plain old data; zeroed is a valid value and
        // waitid writes into it only for the duration of the call.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        const P_PIDFD: libc::idtype_t = 3;
        // SAFETY: `info` is valid and writable; the fd is owned by self.
        let rc = unsafe {
            libc::waitid(
                P_PIDFD,
                self.fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if rc == -1 {
            return Err(SysError::syscall("waitid", io::Error::last_os_error()));
        }
        // SAFETY: after a successful waitid the union's pid/status fields are
        // initialized (all zero when no child changed state).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(if info.si_code == libc::CLD_EXITED {
            ExitStatus::Exited(status)
        } else {
            ExitStatus::Signaled(status)
        }))
    }

    /// True once the process has exited (the pidfd polls readable).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd; timeout 0 never blocks.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & libc::POLLIN != 0
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Closes every file descriptor of the calling process except those in `keep`.
pub fn close_fds_except(keep: &[RawFd]) -> Result<()> {
    let mut open = Vec::new();
    let dir =
        fs::read_dir("/proc/self/fd").map_err(|e| SysError::path("list", "/proc/self/fd", e))?;
    for entry in dir.flatten() {
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            open.push(fd);
        }
    }
    for fd in open {
        if !keep.contains(&fd) {
            // SAFETY: closing a descriptor number we do not hold an owner for;
            // the directory iterator's own descriptor is already closed, and
            // nothing else in this single-threaded process uses these numbers
            // afterwards.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Moves `fd` to the number `target` (dup2), returning the new owner.
pub fn dup_to(fd: BorrowedFd<'_>, target: RawFd) -> Result<OwnedFd> {
    // SAFETY: dup2 takes two integers; `fd` is a valid open descriptor.
    let rc = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if rc == -1 {
        return Err(SysError::syscall("dup2", io::Error::last_os_error()));
    }
    // SAFETY: dup2 succeeded, so `target` is now an open descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(target) })
}

/// Reaps zombie children of this process that run as another user than
/// it does, and returns how many it reaped.
///
/// A child subreaper inherits the orphans of everything it starts: OCI
/// runtimes leave their sandbox and gofer processes (gVisor) behind as
/// such orphans, running as unprivileged ids. Nobody else waits for them,
/// and a runtime waiting for one to stop sees its zombie as still there.
/// Left alone: children running as this process's own user (the commands
/// it runs and waits for) and children forked from its own executable (a
/// native sandbox's init runs as a mapped id but is this program, and its
/// backend reaps it for its exit status).
pub fn reap_foreign_zombies() -> usize {
    let me = std::process::id();
    let euid = rustix::process::geteuid().as_raw();
    let own_comm = fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let mut reaped = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    for pid in children {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let zombie = field("State:").is_some_and(|s| s.starts_with('Z'));
        let parent = field("PPid:").and_then(|p| p.parse::<u32>().ok());
        let uid = field("Uid:").and_then(|u| {
            u.split_whitespace()
                .next()
                .and_then(|u| u.parse::<u32>().ok())
        });
        if !zombie || parent != Some(me) || uid.is_none_or(|u| u == euid) {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.is_empty() || comm == own_comm {
            continue;
        }
        let mut code = 0;
        // SAFETY: waitpid on one specific child pid with WNOHANG; `code` is
        // a valid out-pointer for the duration of the call.
        let got = unsafe { libc::waitpid(pid, &mut code, libc::WNOHANG) };
        if got == pid {
            reaped += 1;
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 10 18446744073709551615";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.pid, 4242);
        assert_eq!(st.comm, "a (b) c");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.session, 4242);
        assert_eq!(st.num_threads, 3);
        assert_eq!(st.start_time, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn process_ref_of_self_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessRef::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(me.open().unwrap().is_some());
        let impostor = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
        assert!(impostor.open().unwrap().is_none());
    }

    #[test]
    fn pidfd_sees_a_child_exit_and_reaps_it() {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let fd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let pidfd = PidFd { fd, pid };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !pidfd.has_exited() {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(pidfd.try_reap().unwrap(), Some(ExitStatus::Exited(7)));
        std::mem::forget(child);
    }
}

//! The sandbox launcher: runs as `capsule __sandbox-init`, a fresh
//! single-threaded process started by the server with an [`InitSpec`] on
//! stdin. It builds the sandbox and answers with the init's pid on stdout.
//!
//! Three processes take part:
//! - the launcher stays in the host's namespaces: it joins the sandbox's
//!   cgroups, opens every host directory the sandbox needs (so nothing is
//!   looked up by path later), binds the agent's socket, and writes the id
//!   maps of the new user namespace;
//! - a helper unshares the user, mount, network, IPC, UTS, cgroup and pid
//!   namespaces, waits for the maps, becomes sandbox root and forks;
//! - its child is PID 1 of the new pid namespace: it mounts the root
//!   overlay, the read-only system directories, `/proc`, `/sys`, a minimal
//!   `/dev` and `/tmp`, pivots into the new root, drops privileges, applies
//!   Landlock and seccomp and becomes the agent.
//!
//! The helper exits at once, so the sandbox's init is re-parented away from
//! the launcher, which exits too once the agent reports it is ready.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use capsule_agent::AgentConfig;
use capsule_sys::error::chain;
use capsule_sys::mount::{self, Attr, FsOption, OverlayLayers};
use capsule_sys::process::{Forked, ProcessRef, exit_immediately, fork_single_threaded};
use capsule_sys::userns::MapMethod;
use capsule_sys::{SysError, caps, landlock, net, process, rlimit, seccomp, userns};
use rustix::fs::{Mode, OFlags};
use rustix::pipe::{PipeFlags, pipe_with};

use super::spec::{InitAnswer, InitSpec, RemoveSpec};

/// Host descriptors the sandbox is built from.
struct HostFds {
    listener: OwnedFd,
    log: OwnedFd,
}

fn open_host(spec: &InitSpec) -> Result<HostFds, String> {
    let _ = fs::remove_file(&spec.socket);
    let listener = UnixListener::bind(&spec.socket)
        .map_err(|e| format!("listen on {}: {e}", spec.socket.display()))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("open {}: {e}", spec.log.display()))?;
    Ok(HostFds {
        listener: listener.into(),
        log: log.into(),
    })
}

fn answer(a: &InitAnswer) -> ! {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, a);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    let code = if matches!(a, InitAnswer::Started { .. }) {
        0
    } else {
        1
    };
    std::process::exit(code)
}

fn fail(msg: impl Into<String>) -> ! {
    answer(&InitAnswer::Failed { error: msg.into() })
}

fn read_stdin_json<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the spec: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("invalid spec: {e}"))
}

fn write_byte(fd: BorrowedFd<'_>, b: u8) -> bool {
    rustix::io::write(fd, &[b]).is_ok()
}

fn read_byte(fd: BorrowedFd<'_>) -> Option<u8> {
    let mut b = [0u8; 1];
    match rustix::io::read(fd, &mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

fn read_all(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return out,
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    match pipe_with(PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => fail(format!("pipe: {e}")),
    }
}

const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWPID;

/// Entry point of `capsule __sandbox-init`.
pub fn launcher_main() -> ! {
    let spec: InitSpec = read_stdin_json().unwrap_or_else(|e| fail(e));
    if let Err(e) = process::setsid() {
        fail(chain(&e));
    }
    let fds = open_host(&spec).unwrap_or_else(|e| fail(e));
    let (unshared_r, unshared_w) = pipe();
    let (go_r, go_w) = pipe();
    let (pid_r, pid_w) = pipe();
    let (status_r, status_w) = pipe();

    match fork_single_threaded() {
        Err(e) => fail(chain(&e)),
        Ok(Forked::Child) => {
            drop((unshared_r, go_w, pid_r, status_r));
            helper(&spec, fds, unshared_w, go_r, pid_w, status_w)
        }
        Ok(Forked::Parent { child }) => {
            drop((unshared_w, go_r, pid_w, status_w));
            drop(fds);
            if read_byte(unshared_r.as_fd()) != Some(b'u') {
                let status = process::wait_child(child)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                fail(format!(
                    "creating the sandbox namespaces failed (helper {status})"
                ));
            }
            if let Err(e) = userns::write_id_maps(child, &spec.mapping) {
                let _ = process::kill(child, libc::SIGKILL);
                let _ = process::wait_child(child);
                fail(format!("writing the id maps: {}", chain(&e)));
            }
            write_byte(go_w.as_fd(), b'g');
            drop(go_w);
            let pid_text = String::from_utf8_lossy(&read_all(pid_r.as_fd())).into_owned();
            let _ = process::wait_child(child);
            let Ok(init_pid) = pid_text.trim().parse::<i32>() else {
                fail("the sandbox init was not started".to_owned());
            };
            let status = read_all(status_r.as_fd());
            if status != b"ok" {
                let _ = process::kill(init_pid, libc::SIGKILL);
                let msg = String::from_utf8_lossy(&status);
                let msg = msg.strip_prefix("E:").unwrap_or(&msg);
                fail(if msg.is_empty() {
                    "the sandbox init exited during set-up".to_owned()
                } else {
                    format!("sandbox set-up failed: {msg}")
                });
            }
            let init = match ProcessRef::of(init_pid) {
                Ok(r) => r,
                Err(e) => fail(format!("the sandbox init vanished: {}", chain(&e))),
            };
            let record = serde_json::to_vec(&init).expect("process refs serialize");
            let tmp = spec.pid_file.with_extension("tmp");
            if let Err(e) = fs::write(&tmp, record).and_then(|()| fs::rename(&tmp, &spec.pid_file))
            {
                let _ = process::kill(init_pid, libc::SIGKILL);
                fail(format!(
                    "recording the init pid in {}: {e}",
                    spec.pid_file.display()
                ));
            }
            answer(&InitAnswer::Started {
                pid: init.pid,
                start_time: init.start_time,
            })
        }
    }
}

/// The helper: unshares, waits for its id maps, starts the sandbox init.
fn helper(
    spec: &InitSpec,
    fds: HostFds,
    unshared_w: OwnedFd,
    go_r: OwnedFd,
    pid_w: OwnedFd,
    status_w: OwnedFd,
) -> ! {
    // SAFETY: unshare takes a flag set; the process is single-threaded.
    if unsafe { libc::unshare(NAMESPACES) } == -1 {
        let err = std::io::Error::last_os_error();
        let _ = rustix::io::write(&status_w, format!("E:unshare: {err}").as_bytes());
        exit_immediately(1);
    }
    write_byte(unshared_w.as_fd(), b'u');
    drop(unshared_w);
    if read_byte(go_r.as_fd()) != Some(b'g') {
        exit_immediately(1);
    }
    drop(go_r);
    let clear_groups = spec.mapping.method != MapMethod::SelfOnly;
    if let Err(e) = userns::become_id(0, 0, clear_groups) {
        let _ = rustix::io::write(&status_w, format!("E:{}", chain(&e)).as_bytes());
        exit_immediately(1);
    }
    match fork_single_threaded() {
        Err(e) => {
            let _ = rustix::io::write(&status_w, format!("E:{}", chain(&e)).as_bytes());
            exit_immediately(1)
        }
        Ok(Forked::Child) => {
            drop(pid_w);
            sandbox_init(spec, fds, status_w)
        }
        Ok(Forked::Parent { child }) => {
            let _ = rustix::io::write(&pid_w, child.to_string().as_bytes());
            exit_immediately(0)
        }
    }
}

/// PID 1 of the sandbox: build the root, lock it down, become the agent.
fn sandbox_init(spec: &InitSpec, fds: HostFds, status_w: OwnedFd) -> ! {
    match build_sandbox(spec) {
        Ok(()) => {}
        Err(e) => {
            let _ = rustix::io::write(&status_w, format!("E:{e}").as_bytes());
            exit_immediately(1);
        }
    }
    let HostFds { listener, log } = fds;
    // Only the listener, the log and the status pipe survive; stdin and
    // stdout become /dev/null, stderr the log.
    if let Err(e) = redirect_stdio(&log) {
        let _ = rustix::io::write(&status_w, format!("E:{e}").as_bytes());
        exit_immediately(1);
    }
    let keep = [
        0,
        1,
        2,
        listener.as_raw_fd(),
        log.as_raw_fd(),
        status_w.as_raw_fd(),
    ];
    if let Err(e) = process::close_fds_except(&keep) {
        let _ = rustix::io::write(&status_w, format!("E:{}", chain(&e)).as_bytes());
        exit_immediately(1);
    }
    drop(log);
    let _ = rustix::io::write(&status_w, b"ok");
    drop(status_w);
    let config = AgentConfig {
        env: spec.agent.env.clone(),
        default_user: spec.agent.default_user.clone(),
        single_id: spec.agent.single_id,
        is_init: true,
        ..AgentConfig::default()
    };
    capsule_agent::run(config, listener)
}

fn redirect_stdio(log: &OwnedFd) -> Result<(), String> {
    let null = rustix::fs::open("/dev/null", OFlags::RDWR, Mode::empty())
        .map_err(|e| format!("open /dev/null: {e}"))?;
    for (src, target) in [(null.as_fd(), 0), (null.as_fd(), 1), (log.as_fd(), 2)] {
        let dup = process::dup_to(src, target).map_err(|e| chain(&e))?;
        std::mem::forget(dup);
    }
    Ok(())
}

fn ctx(what: &str) -> impl FnOnce(SysError) -> String + '_ {
    move |e| format!("{what}: {}", chain(&e))
}

/// Builds the sandbox's mount tree and pivots into it, then drops privileges.
fn build_sandbox(spec: &InitSpec) -> Result<(), String> {
    mount::make_rprivate().map_err(ctx("mount propagation"))?;

    // The root: read-only base layer(s) under the sandbox's own upper layer.
    let text = |p: &Path| p.to_string_lossy().into_owned();
    let lower: Vec<String> = spec.lower.iter().map(|p| text(p)).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let (upper, work) = (text(&spec.upper), text(&spec.work));
    let root = mount::overlay(
        &OverlayLayers {
            lower: &lower,
            upper: &upper,
            work: &work,
        },
        true,
        mount::hardened(),
    )
    .map_err(ctx("root overlay"))?;
    mount::attach(root.as_fd(), rustix::fs::CWD, &text(&spec.root))
        .map_err(ctx("attaching the root"))?;
    let root = root.as_fd();

    // The host's system directories, read-only.
    for bind in &spec.binds {
        let rel = bind
            .strip_prefix("/")
            .unwrap_or(bind)
            .to_string_lossy()
            .into_owned();
        mount::ensure_dir(root, &rel, 0o755).map_err(ctx("mount point"))?;
        mount::bind_host_readonly(&bind.to_string_lossy(), root, &rel, mount::hardened())
            .map_err(ctx(&format!("binding {}", bind.display())))?;
    }

    // Volumes, where the sandbox asked for them.
    for v in &spec.volumes {
        let rel = v.target.trim_start_matches('/');
        mount::ensure_dir_all(root, rel, 0o755).map_err(ctx("volume mount point"))?;
        let source = v.source.to_string_lossy();
        let bound = if v.read_only {
            mount::bind_host_readonly(&source, root, rel, mount::hardened())
        } else {
            mount::bind_host(&source, root, rel, mount::hardened())
        };
        bound.map_err(ctx(&format!("mounting the volume at {}", v.target)))?;
    }

    // A fresh /proc for the new pid namespace, with the host-wide knobs
    // read-only and a few host-revealing files masked.
    let proc_fs = mount::new_mount("proc", &[], mount::hardened() | Attr::MOUNT_ATTR_NOEXEC)
        .map_err(ctx("mounting /proc"))?;
    mount::attach(proc_fs.as_fd(), root, "proc").map_err(ctx("attaching /proc"))?;
    for p in [
        "proc/sys",
        "proc/sysrq-trigger",
        "proc/irq",
        "proc/bus",
        "proc/fs",
    ] {
        if rustix::fs::accessat(
            root,
            p,
            rustix::fs::Access::EXISTS,
            rustix::fs::AtFlags::empty(),
        )
        .is_ok()
        {
            mount::rebind_readonly(root, p).map_err(ctx(&format!("read-only /{p}")))?;
        }
    }
    for p in [
        "proc/kcore",
        "proc/timer_list",
        "proc/sched_debug",
        "proc/latency_stats",
    ] {
        if rustix::fs::accessat(
            root,
            p,
            rustix::fs::Access::EXISTS,
            rustix::fs::AtFlags::empty(),
        )
        .is_ok()
        {
            let null = mount::clone_host_path("/dev/null", false).map_err(ctx("masking /proc"))?;
            mount::attach(null.as_fd(), root, p).map_err(ctx(&format!("masking /{p}")))?;
        }
    }

    // /sys read-only; a host that refuses it leaves /sys empty.
    match mount::new_mount(
        "sysfs",
        &[],
        mount::hardened() | Attr::MOUNT_ATTR_NOEXEC | Attr::MOUNT_ATTR_RDONLY,
    ) {
        Ok(sys) => mount::attach(sys.as_fd(), root, "sys").map_err(ctx("attaching /sys"))?,
        Err(e) => eprintln!(
            "capsule: /sys is not available in this sandbox: {}",
            chain(&e)
        ),
    }

    build_dev(spec, root)?;

    let tmp_size = spec.tmp_size_bytes.to_string();
    let tmp = mount::new_mount(
        "tmpfs",
        &[
            FsOption::Str("mode", "1777"),
            FsOption::Str("size", &tmp_size),
        ],
        mount::hardened(),
    )
    .map_err(ctx("mounting /tmp"))?;
    mount::attach(tmp.as_fd(), root, "tmp").map_err(ctx("attaching /tmp"))?;

    for dir in &spec.owned_dirs {
        mount::ensure_dir(root, &dir.path, dir.mode).map_err(ctx("creating a home directory"))?;
        let st = rustix::fs::statat(
            root,
            dir.path.as_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("stat {}: {e}", dir.path))?;
        if st.st_uid != dir.uid || st.st_gid != dir.gid {
            rustix::fs::chownat(
                root,
                dir.path.as_str(),
                Some(rustix::process::Uid::from_raw(dir.uid)),
                Some(rustix::process::Gid::from_raw(dir.gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| format!("chown {}: {e}", dir.path))?;
        }
    }

    mount::pivot_into(root).map_err(ctx("pivot_root"))?;
    net::set_hostname(&spec.hostname).map_err(ctx("hostname"))?;
    net::loopback_up().map_err(ctx("loopback"))?;
    rlimit::apply(&spec.rlimits).map_err(ctx("resource limits"))?;
    caps::restrict_to(caps::sandbox_root_set()).map_err(ctx("dropping capabilities"))?;
    process::set_non_dumpable().map_err(ctx("non-dumpable"))?;
    process::set_no_new_privs().map_err(ctx("no_new_privs"))?;
    if spec.landlock {
        landlock::restrict_sandbox(Path::new("/")).map_err(ctx("landlock"))?;
    }
    if spec.seccomp {
        let filters = seccomp::sandbox_filters().map_err(ctx("seccomp"))?;
        seccomp::install(&filters).map_err(ctx("seccomp"))?;
    }
    Ok(())
}

/// Device nodes bound from the host into the sandbox's /dev.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn build_dev(spec: &InitSpec, root: BorrowedFd<'_>) -> Result<(), String> {
    let dev = mount::new_mount(
        "tmpfs",
        &[FsOption::Str("mode", "755"), FsOption::Str("size", "65536")],
        Attr::MOUNT_ATTR_NOSUID | Attr::MOUNT_ATTR_NOEXEC,
    )
    .map_err(ctx("mounting /dev"))?;
    mount::attach(dev.as_fd(), root, "dev").map_err(ctx("attaching /dev"))?;
    let dev = dev.as_fd();
    for name in DEVICES {
        mount::ensure_file(dev, name, 0o666).map_err(ctx("device node"))?;
        let node = mount::clone_host_path(&format!("/dev/{name}"), false)
            .map_err(ctx(&format!("/dev/{name}")))?;
        mount::set_attrs(
            node.as_fd(),
            Attr::MOUNT_ATTR_NOSUID | Attr::MOUNT_ATTR_NOEXEC,
            Attr::empty(),
            false,
        )
        .map_err(ctx(&format!("/dev/{name}")))?;
        mount::attach(node.as_fd(), dev, name).map_err(ctx(&format!("/dev/{name}")))?;
    }
    mount::ensure_dir(dev, "pts", 0o755).map_err(ctx("/dev/pts"))?;
    let mut pts_opts = vec![
        FsOption::Str("ptmxmode", "0666"),
        FsOption::Str("mode", "0620"),
    ];
    if spec
        .mapping
        .gids
        .iter()
        .any(|r| r.inside <= 5 && 5 - r.inside < r.count)
    {
        pts_opts.push(FsOption::Str("gid", "5"));
    }
    let pts = mount::new_mount(
        "devpts",
        &pts_opts,
        Attr::MOUNT_ATTR_NOSUID | Attr::MOUNT_ATTR_NOEXEC,
    )
    .map_err(ctx("mounting /dev/pts"))?;
    mount::attach(pts.as_fd(), dev, "pts").map_err(ctx("attaching /dev/pts"))?;
    mount::ensure_dir(dev, "shm", 0o1777).map_err(ctx("/dev/shm"))?;
    let shm_size = spec.shm_size_bytes.to_string();
    let shm = mount::new_mount(
        "tmpfs",
        &[
            FsOption::Str("mode", "1777"),
            FsOption::Str("size", &shm_size),
        ],
        mount::hardened() | Attr::MOUNT_ATTR_NOEXEC,
    )
    .map_err(ctx("mounting /dev/shm"))?;
    mount::attach(shm.as_fd(), dev, "shm").map_err(ctx("attaching /dev/shm"))?;
    for (target, link) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        mount::ensure_symlink(dev, target, link).map_err(ctx("/dev symlink"))?;
    }
    Ok(())
}

/// Entry point of `capsule __sandbox-rm`: removes a directory tree from
/// inside a user namespace with the sandbox's mapping, where the files'
/// owners are mapped (needed when rootless).
pub fn remove_main() -> ! {
    let spec: RemoveSpec = read_stdin_json().unwrap_or_else(|e| fail(e));
    let (unshared_r, unshared_w) = pipe();
    let (go_r, go_w) = pipe();
    match fork_single_threaded() {
        Err(e) => fail(chain(&e)),
        Ok(Forked::Child) => {
            drop((unshared_r, go_w));
            // SAFETY: unshare takes a flag set; the process is single-threaded.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == -1 {
                exit_immediately(2);
            }
            write_byte(unshared_w.as_fd(), b'u');
            if read_byte(go_r.as_fd()) != Some(b'g') {
                exit_immediately(3);
            }
            let clear = spec.mapping.method != MapMethod::SelfOnly;
            if userns::become_id(0, 0, clear).is_err() {
                exit_immediately(4);
            }
            let code = match fs::remove_dir_all(&spec.path) {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => {
                    eprintln!("capsule: removing {}: {e}", spec.path.display());
                    5
                }
            };
            exit_immediately(code)
        }
        Ok(Forked::Parent { child }) => {
            drop((unshared_w, go_r));
            if read_byte(unshared_r.as_fd()) != Some(b'u') {
                let _ = process::wait_child(child);
                fail("creating a user namespace failed".to_owned());
            }
            if let Err(e) = userns::write_id_maps(child, &spec.mapping) {
                let _ = process::kill(child, libc::SIGKILL);
                let _ = process::wait_child(child);
                fail(format!("writing the id maps: {}", chain(&e)));
            }
            write_byte(go_w.as_fd(), b'g');
            match process::wait_child(child) {
                Ok(s) if s.success() => answer(&InitAnswer::Started {
                    pid: child,
                    start_time: 0,
                }),
                Ok(s) => fail(format!(
                    "removing {} failed (helper {s})",
                    spec.path.display()
                )),
                Err(e) => fail(chain(&e)),
            }
        }
    }
}

/// The argument that selects the launcher in the `capsule` binary.
pub const LAUNCHER_ARG: &str = "__sandbox-init";
/// The argument that selects the remover in the `capsule` binary.
pub const REMOVER_ARG: &str = "__sandbox-rm";

/// `program ARG` (a launcher or remover) with an empty environment and
/// piped standard streams, killed if its handle is dropped.
pub(crate) fn helper_command(program: &std::path::Path, arg: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(arg)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs the launcher or remover when this process was started as one.
/// Call first thing in `main`, before any thread exists.
pub fn dispatch_helpers() {
    let arg: Option<OsString> = std::env::args_os().nth(1);
    match arg.map(OsString::into_vec).as_deref() {
        Some(a) if a == LAUNCHER_ARG.as_bytes() => launcher_main(),
        Some(a) if a == REMOVER_ARG.as_bytes() => remove_main(),
        _ => {}
    }
}

//! Mounts through the new mount API (fsopen/fsmount/open_tree/move_mount):
//! every mount is built detached and then attached relative to a directory
//! descriptor, so set-up never resolves a host path twice.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::error::{Result, SysError};

pub use rustix::mount::MountAttrFlags as Attr;

/// Mount attributes every sandbox mount gets unless it needs otherwise.
pub fn hardened() -> MountAttrFlags {
    MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV
}

/// Makes every mount in the caller's namespace private, so nothing the
/// sandbox mounts propagates back to the host (or the reverse).
pub fn make_rprivate() -> Result<()> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| SysError::path("make-rprivate", "/", e))
}

/// Reads the messages a filesystem context logged (the kernel's explanation
/// of a failed fsconfig or fsmount).
fn context_log(fs_fd: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match rustix::io::read(fs_fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !out.is_empty() {
                    out.push(b';');
                    out.push(b' ');
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
    String::from_utf8_lossy(&out).trim().to_owned()
}

fn with_log(
    op: &'static str,
    what: &str,
    fs_fd: BorrowedFd<'_>,
    err: rustix::io::Errno,
) -> SysError {
    let log = context_log(fs_fd);
    let err = io::Error::from(err);
    let detail = if log.is_empty() {
        err
    } else {
        io::Error::new(err.kind(), format!("{err} ({log})"))
    };
    SysError::path(op, what, detail)
}

/// One option of a filesystem about to be mounted.
#[derive(Debug, Clone)]
pub enum FsOption<'a> {
    Flag(&'a str),
    Str(&'a str, &'a str),
    Fd(&'a str, BorrowedFd<'a>),
}

/// Creates a new, detached mount of `fstype` with `options`.
pub fn new_mount(fstype: &str, options: &[FsOption<'_>], attrs: MountAttrFlags) -> Result<OwnedFd> {
    let fs_fd = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| SysError::path("fsopen", fstype, e))?;
    for opt in options {
        let res = match opt {
            FsOption::Flag(key) => rustix::mount::fsconfig_set_flag(&fs_fd, *key),
            FsOption::Str(key, value) => rustix::mount::fsconfig_set_string(&fs_fd, *key, *value),
            FsOption::Fd(key, fd) => rustix::mount::fsconfig_set_fd(&fs_fd, *key, fd),
        };
        res.map_err(|e| {
            let what = match opt {
                FsOption::Flag(k) => format!("{fstype} option {k}"),
                FsOption::Str(k, v) => format!("{fstype} option {k}={v}"),
                FsOption::Fd(k, fd) => format!("{fstype} option {k}=<fd {}>", fd.as_raw_fd()),
            };
            with_log("fsconfig", &what, fs_fd.as_fd(), e)
        })?;
    }
    rustix::mount::fsconfig_create(&fs_fd)
        .map_err(|e| with_log("fsconfig create", fstype, fs_fd.as_fd(), e))?;
    rustix::mount::fsmount(&fs_fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| with_log("fsmount", fstype, fs_fd.as_fd(), e))
}

/// The directories of an overlay, as paths in the caller's mount namespace.
///
/// They must be resolved in the mounting process's own namespace: overlayfs
/// refuses layers reached through descriptors opened in another one.
pub struct OverlayLayers<'a> {
    /// Lower layers, topmost first.
    pub lower: &'a [&'a str],
    pub upper: &'a str,
    pub work: &'a str,
}

/// Mounts an overlay. Inside a user namespace the `userxattr` option keeps
/// overlay metadata in `user.overlay.*` attributes.
///
/// The overlay is `volatile`: sync and fsync inside it do not reach the
/// upper file system, and unmounting it does not sync that file system.
/// Sandbox layers are disposable (what must last is kept in snapshots and
/// volumes, which are captured or mounted separately), and a sync of the
/// whole upper file system on every sandbox's exit (a btrfs transaction
/// commit) was one of the largest costs of ending a sandbox.
pub fn overlay(
    layers: &OverlayLayers<'_>,
    userxattr: bool,
    attrs: MountAttrFlags,
) -> Result<OwnedFd> {
    for path in layers.lower.iter().chain([&layers.upper, &layers.work]) {
        if path.contains([':', ',', '\\']) {
            return Err(SysError::Unsupported(format!(
                "overlay layer path {path:?} contains ':', ',' or '\\', which overlayfs cannot take"
            )));
        }
    }
    let lower = layers.lower.join(":");
    let mut opts = vec![
        FsOption::Str("lowerdir", &lower),
        FsOption::Str("upperdir", layers.upper),
        FsOption::Str("workdir", layers.work),
        FsOption::Flag("volatile"),
    ];
    if userxattr {
        opts.push(FsOption::Flag("userxattr"));
    }
    new_mount("overlay", &opts, attrs)
}

/// Clones the mount tree at `path` (relative to `dir`) into a detached mount.
pub fn clone_tree(dir: BorrowedFd<'_>, path: &str, recursive: bool) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    if path.is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    rustix::mount::open_tree(dir, path, flags).map_err(|e| SysError::path("open_tree", path, e))
}

/// Clones a host path into a detached mount.
pub fn clone_host_path(path: &str, recursive: bool) -> Result<OwnedFd> {
    clone_tree(CWD, path, recursive)
}

/// Changes attributes of a (detached or attached) mount tree.
pub fn set_attrs(
    mount: BorrowedFd<'_>,
    set: MountAttrFlags,
    clear: MountAttrFlags,
    recursive: bool,
) -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: u64::from(set.bits()),
        attr_clr: u64::from(clear.bits()),
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a valid,
    // properly laid out (repr(C), version 0) struct and the empty C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == -1 {
        return Err(SysError::syscall(
            "mount_setattr",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Attaches a detached mount at `path` relative to `dir` (the directory
/// itself when `path` is empty).
pub fn attach(mount: BorrowedFd<'_>, dir: BorrowedFd<'_>, path: &str) -> Result<()> {
    let mut flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
    if path.is_empty() {
        flags |= MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    }
    rustix::mount::move_mount(mount, "", dir, path, flags).map_err(|e| {
        SysError::path(
            "move_mount",
            if path.is_empty() { "<dir>" } else { path },
            e,
        )
    })
}

/// Binds a host path read-only (plus `extra` attributes) at `path` under `root`.
pub fn bind_host_readonly(
    host_path: &str,
    root: BorrowedFd<'_>,
    path: &str,
    extra: MountAttrFlags,
) -> Result<()> {
    let tree = clone_host_path(host_path, true)?;
    set_attrs(
        tree.as_fd(),
        MountAttrFlags::MOUNT_ATTR_RDONLY | extra,
        MountAttrFlags::empty(),
        true,
    )?;
    attach(tree.as_fd(), root, path)
}

/// Binds the host directory `host_path` at `path` under `root`, writable.
pub fn bind_host(
    host_path: &str,
    root: BorrowedFd<'_>,
    path: &str,
    extra: MountAttrFlags,
) -> Result<()> {
    let tree = clone_host_path(host_path, false)?;
    set_attrs(
        tree.as_fd(),
        extra,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
        false,
    )?;
    attach(tree.as_fd(), root, path)
}

/// Creates `path` under `dir` and its missing parents, one component at a
/// time (each `mkdirat` relative to `dir`).
pub fn ensure_dir_all(dir: BorrowedFd<'_>, path: &str, mode: u32) -> Result<()> {
    let mut so_far = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == ".." || part == "." {
            return Err(SysError::Unsupported(format!(
                "{path:?} is not a normalized path"
            )));
        }
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(part);
        ensure_dir(dir, &so_far, mode)?;
    }
    Ok(())
}

/// Re-binds `path` under `root` onto itself read-only (for `/proc/sys` and friends).
pub fn rebind_readonly(root: BorrowedFd<'_>, path: &str) -> Result<()> {
    let tree = clone_tree(root, path, true)?;
    set_attrs(
        tree.as_fd(),
        MountAttrFlags::MOUNT_ATTR_RDONLY | hardened(),
        MountAttrFlags::empty(),
        true,
    )?;
    attach(tree.as_fd(), root, path)
}

/// Makes the mount whose root is `new_root` the caller's root directory and
/// detaches the old root, so nothing of the host's tree stays reachable.
pub fn pivot_into(new_root: BorrowedFd<'_>) -> Result<()> {
    rustix::process::fchdir(new_root).map_err(|e| SysError::path("fchdir", "<new root>", e))?;
    rustix::process::pivot_root(".", ".").map_err(|e| SysError::path("pivot_root", ".", e))?;
    // The old root is now stacked on top of the new one; detach it.
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| SysError::path("umount2", "<old root>", e))?;
    rustix::process::chdir("/").map_err(|e| SysError::path("chdir", "/", e))
}

/// Opens a directory as an `O_PATH` descriptor, never following a final symlink.
pub fn open_dir_path(dir: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| SysError::path("open", path, e))
}

/// Opens a directory for reading entries and creating things in it.
pub fn open_dir(dir: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError::path("open", path, e))
}

/// Creates directory `path` under `dir` unless it exists.
pub fn ensure_dir(dir: BorrowedFd<'_>, path: &str, mode: u32) -> Result<()> {
    match rustix::fs::mkdirat(dir, path, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(SysError::path("mkdir", path, e)),
    }
}

/// Creates an empty regular file at `path` under `dir` to mount a file on.
pub fn ensure_file(dir: BorrowedFd<'_>, path: &str, mode: u32) -> Result<()> {
    match rustix::fs::openat(
        dir,
        path,
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(mode),
    ) {
        Ok(_) => Ok(()),
        Err(e) => Err(SysError::path("create", path, e)),
    }
}

/// Creates a symlink `path` -> `target` under `dir` unless something is there.
pub fn ensure_symlink(dir: BorrowedFd<'_>, target: &str, path: &str) -> Result<()> {
    match rustix::fs::symlinkat(target, dir, path) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(SysError::path("symlink", path, e)),
    }
}

//! Btrfs subvolumes: create, snapshot (O(1), copy-on-write), destroy, and
//! quota-group limits, through the kernel's ioctls.
//!
//! Sandbox storage lives on a btrfs file system (a loop-mounted image when
//! the host has no btrfs of its own), so snapshots and forks cost the same
//! whatever the sandbox wrote, and each sandbox's writable layer can have a
//! disk limit.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::error::{Result, SysError};

const MAGIC: u32 = 0x94;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (MAGIC << 8) | nr
}

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2`.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_qgroup_limit` inside `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

const SUBVOL_CREATE: u32 = ioc(IOC_WRITE, 14, std::mem::size_of::<VolArgs>());
const SNAP_DESTROY: u32 = ioc(IOC_WRITE, 15, std::mem::size_of::<VolArgs>());
const SNAP_CREATE_V2: u32 = ioc(IOC_WRITE, 23, std::mem::size_of::<VolArgsV2>());
const QGROUP_LIMIT: u32 = ioc(IOC_READ, 43, std::mem::size_of::<QgroupLimitArgs>());
const SNAP_CREATE: u32 = ioc(IOC_WRITE, 1, std::mem::size_of::<VolArgs>());
const SUBVOL_CREATE_V2: u32 = ioc(IOC_WRITE, 24, std::mem::size_of::<VolArgsV2>());
const SNAP_DESTROY_V2: u32 = ioc(IOC_WRITE, 63, std::mem::size_of::<VolArgsV2>());

/// The ioctls that make or remove subvolumes. Sandboxes may not use them:
/// a subvolume made inside a volume or a sandbox's layer has a quota group
/// of its own (its writes escape the disk limit), and it keeps the volume
/// from being deleted.
pub const SUBVOLUME_IOCTLS: [u32; 6] = [
    SNAP_CREATE,
    SUBVOL_CREATE,
    SNAP_DESTROY,
    SNAP_CREATE_V2,
    SUBVOL_CREATE_V2,
    SNAP_DESTROY_V2,
];

const SUBVOL_RDONLY: u64 = 1 << 1;
const LIMIT_MAX_EXCL: u64 = 1 << 1;
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683e;

/// A name for the ioctls: one path component, NUL-free, short.
fn name_bytes<const N: usize>(name: &str) -> Result<[u8; N]> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() >= N {
        return Err(SysError::Unsupported(format!(
            "{name:?} is not a valid subvolume name"
        )));
    }
    let c = CString::new(name)
        .map_err(|_| SysError::Unsupported(format!("{name:?} contains a NUL byte")))?;
    let mut out = [0u8; N];
    out[..c.as_bytes().len()].copy_from_slice(c.as_bytes());
    Ok(out)
}

fn open_dir(path: &Path) -> Result<rustix::fd::OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError::path("open", path, e))
}

/// Calls `ioctl(fd, request, arg)`.
///
/// # Safety
/// `arg` must point to a value of the type the kernel expects for `request`.
unsafe fn ioctl<T>(fd: BorrowedFd<'_>, request: u32, arg: *mut T) -> std::io::Result<()> {
    // SAFETY: the caller guarantees `arg` matches `request`; `fd` is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, arg) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// True when `path` is on a btrfs file system.
pub fn is_btrfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 == BTRFS_SUPER_MAGIC)
}

/// Creates the subvolume `parent/name`.
pub fn create_subvolume(parent: &Path, name: &str) -> Result<()> {
    let dir = open_dir(parent)?;
    let mut args = VolArgs {
        fd: 0,
        name: name_bytes(name)?,
    };
    // SAFETY: `args` is a `btrfs_ioctl_vol_args`, as SUBVOL_CREATE takes.
    unsafe { ioctl(dir.as_fd(), SUBVOL_CREATE, &mut args) }
        .map_err(|e| SysError::path("creating the subvolume", parent.join(name), e))
}

/// Snapshots the subvolume at `source` as `parent/name` (read-only when asked).
pub fn snapshot(source: &Path, parent: &Path, name: &str, read_only: bool) -> Result<()> {
    let src = open_dir(source)?;
    let dir = open_dir(parent)?;
    let mut args = VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: name_bytes(name)?,
    };
    // SAFETY: `args` is a `btrfs_ioctl_vol_args_v2`, as SNAP_CREATE_V2 takes;
    // `src` stays open for the call.
    unsafe { ioctl(dir.as_fd(), SNAP_CREATE_V2, &mut args) }
        .map_err(|e| SysError::path("snapshotting into", parent.join(name), e))
}

/// Destroys the subvolume `parent/name` and everything in it. Succeeds when
/// it does not exist.
pub fn destroy_subvolume(parent: &Path, name: &str) -> Result<()> {
    if !parent.join(name).exists() {
        return Ok(());
    }
    let dir = open_dir(parent)?;
    let mut args = VolArgs {
        fd: 0,
        name: name_bytes(name)?,
    };
    // SAFETY: `args` is a `btrfs_ioctl_vol_args`, as SNAP_DESTROY takes.
    match unsafe { ioctl(dir.as_fd(), SNAP_DESTROY, &mut args) } {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(SysError::path(
            "destroying the subvolume",
            parent.join(name),
            e,
        )),
    }
}

/// Limits the space the subvolume at `path` may hold exclusively (needs
/// quotas enabled on the file system); `None` removes the limit.
pub fn limit_subvolume(path: &Path, max_bytes: Option<u64>) -> Result<()> {
    let dir = open_dir(path)?;
    let mut args = QgroupLimitArgs {
        qgroupid: 0, // the subvolume `dir` is in
        flags: LIMIT_MAX_EXCL,
        max_rfer: 0,
        max_excl: max_bytes.unwrap_or(u64::MAX),
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: `args` is a `btrfs_ioctl_qgroup_limit_args`, as QGROUP_LIMIT takes.
    unsafe { ioctl(dir.as_fd(), QGROUP_LIMIT, &mut args) }
        .map_err(|e| SysError::path("limiting the subvolume", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        assert_eq!(SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(SNAP_DESTROY, 0x5000_940f);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(QGROUP_LIMIT, 0x8030_942b);
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
    }

    #[test]
    fn names_are_single_components() {
        assert!(name_bytes::<16>("ok-name").is_ok());
        for bad in ["", "a/b", "..", ".", "x\0y", &"n".repeat(16)] {
            assert!(name_bytes::<16>(bad).is_err(), "{bad:?}");
        }
    }
}

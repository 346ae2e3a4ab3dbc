//! Where sandboxes' writable layers, snapshots and volumes live.
//!
//! With root, on a btrfs file system: the host's own when the state
//! directory is on btrfs, else an image file under the state directory,
//! loop-mounted. Each sandbox's writable layer is a subvolume (with a disk
//! limit through quota groups), a snapshot is a read-only snapshot of it and
//! a new sandbox from a snapshot (or a fork) starts from a writable snapshot
//! of that: copy-on-write, the same cost whatever was written.
//!
//! Without btrfs (rootless servers, or `--storage dir`) the layers are plain
//! directories: snapshots copy files, and there are no disk limits.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use capsule_sys::btrfs;

use crate::{Result, RuntimeError};

/// How the operator wants sandbox storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageMode {
    /// Btrfs when the host allows it, else plain directories.
    #[default]
    Auto,
    Btrfs,
    Dir,
}

impl std::str::FromStr for StorageMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(StorageMode::Auto),
            "btrfs" => Ok(StorageMode::Btrfs),
            "dir" => Ok(StorageMode::Dir),
            other => Err(format!("storage {other:?} is not one of auto, btrfs, dir")),
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// Subvolumes under `mnt`; `image` is the loop-mounted file, if any.
    Btrfs {
        mnt: PathBuf,
        image: Option<PathBuf>,
    },
    /// Plain directories under the runtime's directory.
    Plain,
}

#[derive(Debug, Clone)]
pub(crate) struct Storage {
    kind: Kind,
    /// The runtime's directory (`<state>/native`).
    dir: PathBuf,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::io(what, e)
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(capsule_sys::SysError) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::sys(what, e)
}

/// Runs a helper program, with its stderr in the error.
fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(io_err(format!("running {program}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Unavailable(format!(
            "{program} {} {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

/// Size of the image: the free space of the file system under it, within
/// bounds (the file is sparse, so unused space costs nothing).
fn image_size(dir: &Path) -> u64 {
    let free = rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0);
    free.clamp(4 << 30, 1 << 40)
}

impl Storage {
    /// Opens storage under `dir`, mounting the btrfs image when needed.
    pub(crate) fn open(
        dir: &Path,
        mode: StorageMode,
        root: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Self> {
        let plain = Storage {
            kind: Kind::Plain,
            dir: dir.to_path_buf(),
        };
        if mode == StorageMode::Dir {
            return Ok(plain);
        }
        match Self::open_btrfs(dir, root) {
            Ok(s) => Ok(s),
            Err(e) if mode == StorageMode::Auto => {
                warnings.push(format!(
                    "sandbox storage is plain directories: snapshots and forks copy files (a \
                     rootless server refuses them) and there are no per-sandbox disk limits ({e})"
                ));
                Ok(plain)
            }
            Err(e) => Err(RuntimeError::Unavailable(format!(
                "btrfs storage is not available: {e}"
            ))),
        }
    }

    fn open_btrfs(dir: &Path, root: bool) -> Result<Self> {
        // Subvolume limits (qgroups) and removal need CAP_SYS_ADMIN, also on
        // a state directory that is on btrfs already.
        if !root {
            return Err(RuntimeError::Unavailable(
                "btrfs storage (subvolumes with disk limits) needs a root server".into(),
            ));
        }
        let mnt = dir.join("store");
        // The state directory is on btrfs already: use it directly.
        if btrfs::is_btrfs(dir) {
            fs::create_dir_all(&mnt).map_err(io_err("creating the store"))?;
            let s = Storage {
                kind: Kind::Btrfs { mnt, image: None },
                dir: dir.to_path_buf(),
            };
            s.prepare_tree()?;
            return Ok(s);
        }
        let image = dir.join("storage.img");
        fs::create_dir_all(&mnt).map_err(io_err("creating the store mount point"))?;
        if !(is_mount_point(&mnt) && btrfs::is_btrfs(&mnt)) {
            if !image.exists() {
                let tmp = dir.join("storage.img.new");
                let f = fs::File::create(&tmp).map_err(io_err("creating the storage image"))?;
                f.set_len(image_size(dir))
                    .map_err(io_err("sizing the storage image"))?;
                drop(f);
                let tmp_s = tmp.to_string_lossy().into_owned();
                if let Err(e) = run("mkfs.btrfs", &["-q", "-f", "-K", &tmp_s]) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                fs::rename(&tmp, &image).map_err(io_err("placing the storage image"))?;
            }
            run(
                "mount",
                &[
                    "-t",
                    "btrfs",
                    "-o",
                    "loop,noatime",
                    &image.to_string_lossy(),
                    &mnt.to_string_lossy(),
                ],
            )?;
        }
        let s = Storage {
            kind: Kind::Btrfs {
                mnt,
                image: Some(image),
            },
            dir: dir.to_path_buf(),
        };
        s.prepare_tree()?;
        Ok(s)
    }

    fn prepare_tree(&self) -> Result<()> {
        let Kind::Btrfs { mnt, .. } = &self.kind else {
            return Ok(());
        };
        for sub in ["sandboxes", "snapshots", "volumes"] {
            let p = mnt.join(sub);
            fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
            // Sandbox roots (mapped ids) pass through to their own subvolume.
            fs::set_permissions(&p, fs::Permissions::from_mode(0o711))
                .map_err(io_err(format!("chmod {}", p.display())))?;
        }
        fs::set_permissions(mnt, fs::Permissions::from_mode(0o711))
            .map_err(io_err(format!("chmod {}", mnt.display())))?;
        // Quota groups give each writable layer and volume its limit;
        // without them the limits would fail at every create.
        run("btrfs", &["quota", "enable", &mnt.to_string_lossy()])
            .map_err(|e| RuntimeError::Unavailable(format!("enabling btrfs quotas: {e}")))?;
        Ok(())
    }

    /// `btrfs` or `dir`.
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            Kind::Btrfs { .. } => "btrfs",
            Kind::Plain => "dir",
        }
    }

    fn plain_dir(&self, what: &str, name: &str) -> PathBuf {
        self.dir.join(what).join(name)
    }

    /// Makes the writable layer of `id` (empty, or a copy of `snapshot`),
    /// limited to `disk_bytes` where the storage can limit it. Returns the
    /// overlay's upper and work directories; `own` makes a directory the
    /// sandbox root's.
    pub(crate) fn create_layer(
        &self,
        id: &str,
        sandbox_dir: &Path,
        snapshot: Option<&str>,
        disk_bytes: Option<u64>,
        own: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<(PathBuf, PathBuf)> {
        let base = match &self.kind {
            Kind::Btrfs { mnt, .. } => {
                let parent = mnt.join("sandboxes");
                match snapshot {
                    Some(snap) => {
                        let src = mnt.join("snapshots").join(snap);
                        btrfs::snapshot(&src, &parent, id, false)
                            .map_err(sys_err(format!("starting {id} from snapshot {snap}")))?;
                    }
                    None => btrfs::create_subvolume(&parent, id)
                        .map_err(sys_err(format!("creating the layer of {id}")))?,
                }
                let base = parent.join(id);
                if let Some(bytes) = disk_bytes {
                    btrfs::limit_subvolume(&base, Some(bytes))
                        .map_err(sys_err(format!("limiting the disk of {id}")))?;
                }
                fs::set_permissions(&base, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod the layer"))?;
                own(&base)?;
                base
            }
            Kind::Plain => {
                if let Some(snap) = snapshot {
                    let src = self.plain_dir("snapshots", snap).join("upper");
                    let dst = sandbox_dir.join("upper");
                    run(
                        "cp",
                        &[
                            "-a",
                            "--reflink=auto",
                            &src.to_string_lossy(),
                            &dst.to_string_lossy(),
                        ],
                    )?;
                }
                sandbox_dir.to_path_buf()
            }
        };
        let (upper, work) = (base.join("upper"), base.join("work"));
        // A layer from a snapshot brings its upper; its work dir is always fresh.
        if work.exists() {
            fs::remove_dir_all(&work).map_err(io_err("clearing the work dir"))?;
        }
        for p in [&upper, &work] {
            match fs::create_dir(p) {
                Ok(()) => own(p)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RuntimeError::io(format!("creating {}", p.display()), e)),
            }
        }
        Ok((upper, work))
    }

    /// Removes the writable layer of `id` (in plain storage it is inside the
    /// sandbox directory, which its owner removes).
    pub(crate) fn remove_layer(&self, id: &str) -> Result<()> {
        match &self.kind {
            Kind::Btrfs { mnt, .. } => btrfs::destroy_subvolume(&mnt.join("sandboxes"), id)
                .map_err(sys_err(format!("removing the layer of {id}"))),
            Kind::Plain => Ok(()),
        }
    }

    /// Ids whose layer is still in the store.
    pub(crate) fn layer_ids(&self) -> Vec<String> {
        match &self.kind {
            Kind::Btrfs { mnt, .. } => fs::read_dir(mnt.join("sandboxes"))
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            Kind::Plain => Vec::new(),
        }
    }

    /// The upper directory of `id`.
    pub(crate) fn upper(&self, id: &str, sandbox_dir: &Path) -> PathBuf {
        match &self.kind {
            Kind::Btrfs { mnt, .. } => mnt.join("sandboxes").join(id).join("upper"),
            Kind::Plain => sandbox_dir.join("upper"),
        }
    }

    /// Captures the writable layer of `id` (frozen by the caller) as `snap`;
    /// returns where the snapshot's files are (the caller measures them,
    /// after thawing).
    pub(crate) fn snapshot(&self, id: &str, sandbox_dir: &Path, snap: &str) -> Result<PathBuf> {
        match &self.kind {
            Kind::Btrfs { mnt, .. } => {
                let src = mnt.join("sandboxes").join(id);
                btrfs::snapshot(&src, &mnt.join("snapshots"), snap, true)
                    .map_err(sys_err(format!("snapshotting {id}")))?;
                Ok(mnt.join("snapshots").join(snap).join("upper"))
            }
            Kind::Plain => {
                let dst = self.plain_dir("snapshots", snap);
                fs::create_dir_all(&dst).map_err(io_err("creating the snapshot"))?;
                let src = sandbox_dir.join("upper");
                if let Err(e) = run(
                    "cp",
                    &[
                        "-a",
                        "--reflink=auto",
                        &src.to_string_lossy(),
                        &dst.join("upper").to_string_lossy(),
                    ],
                ) {
                    let _ = fs::remove_dir_all(&dst);
                    return Err(e);
                }
                Ok(dst.join("upper"))
            }
        }
    }

    pub(crate) fn delete_snapshot(&self, snap: &str) -> Result<()> {
        match &self.kind {
            Kind::Btrfs { mnt, .. } => btrfs::destroy_subvolume(&mnt.join("snapshots"), snap)
                .map_err(sys_err(format!("deleting snapshot {snap}"))),
            Kind::Plain => {
                let dst = self.plain_dir("snapshots", snap);
                match fs::remove_dir_all(&dst) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(RuntimeError::io(format!("deleting snapshot {snap}"), e)),
                }
            }
        }
    }

    /// The host directory of volume `key`.
    pub(crate) fn volume_path(&self, key: &str) -> PathBuf {
        match &self.kind {
            Kind::Btrfs { mnt, .. } => mnt.join("volumes").join(key),
            Kind::Plain => self.plain_dir("volumes", key),
        }
    }

    /// Makes volume `key`, limited to `bytes` where storage can limit it.
    pub(crate) fn create_volume(
        &self,
        key: &str,
        bytes: u64,
        own: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<()> {
        let path = self.volume_path(key);
        match &self.kind {
            Kind::Btrfs { mnt, .. } => btrfs::create_subvolume(&mnt.join("volumes"), key)
                .map_err(sys_err(format!("creating volume {key}")))?,
            Kind::Plain => {
                fs::create_dir_all(&path).map_err(io_err(format!("creating volume {key}")))?
            }
        }
        let finished = match &self.kind {
            Kind::Btrfs { .. } => btrfs::limit_subvolume(&path, Some(bytes))
                .map_err(sys_err(format!("limiting volume {key}"))),
            Kind::Plain => Ok(()),
        }
        .and_then(|()| own(&path));
        // A volume that could not be finished is not left behind: its name
        // must stay free for the next try.
        if finished.is_err() {
            let _ = self.delete_volume(key);
        }
        finished
    }

    pub(crate) fn delete_volume(&self, key: &str) -> Result<()> {
        match &self.kind {
            Kind::Btrfs { mnt, .. } => btrfs::destroy_subvolume(&mnt.join("volumes"), key)
                .map_err(sys_err(format!("deleting volume {key}"))),
            Kind::Plain => match fs::remove_dir_all(self.volume_path(key)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(RuntimeError::io(format!("deleting volume {key}"), e)),
            },
        }
    }

    /// Unmounts the image (when this storage mounted one) so nothing stays
    /// mounted while the server is stopped with no sandbox running.
    pub(crate) fn unmount(&self) {
        use rustix::mount::UnmountFlags;
        let Kind::Btrfs {
            mnt,
            image: Some(_),
        } = &self.kind
        else {
            return;
        };
        // A process of a sandbox that is still dying (or a launcher's copy
        // of the mount namespace) may hold it: then it is detached, and
        // goes away with its last user.
        let result = match rustix::mount::unmount(mnt, UnmountFlags::NOFOLLOW) {
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(mnt, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
            }
            // Not mounted (any more).
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
            other => other,
        };
        if let Err(e) = result {
            tracing::warn!("unmounting the sandbox store {}: {e}", mnt.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<StorageMode>().unwrap(), StorageMode::Auto);
        assert_eq!("dir".parse::<StorageMode>().unwrap(), StorageMode::Dir);
        assert!("zfs".parse::<StorageMode>().unwrap_err().contains("zfs"));
    }
}

//! The host side of a bundle: the root overlay every OCI runtime is given
//! as `root.path`, and the agent binary the sandboxes bind.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use capsule_sys::SysError;
use capsule_sys::mount::{self, OverlayLayers};
use rustix::mount::UnmountFlags;

fn text(p: &Path) -> Result<&str, SysError> {
    p.to_str()
        .ok_or_else(|| SysError::Unsupported(format!("{} is not valid UTF-8", p.display())))
}

/// Mounts `lower` (topmost first) under `upper` at `target`, on the host.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), SysError> {
    let lower: Vec<&str> = lower.iter().map(|p| text(p)).collect::<Result<_, _>>()?;
    let fd = mount::overlay(
        &OverlayLayers {
            lower: &lower,
            upper: text(upper)?,
            work: text(work)?,
        },
        false,
        mount::hardened(),
    )?;
    mount::attach(fd.as_fd(), rustix::fs::CWD, text(target)?)
}

/// True when something is mounted at `path` in this mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = escape(&path.to_string_lossy());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == wanted)
}

/// Mountinfo's octal escapes for whitespace and backslashes.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Unmounts everything stacked at `path`. A mount still busy (a process
/// of a dying sandbox) is detached and goes away with its last user.
pub fn unmount_all(path: &Path) -> Result<(), SysError> {
    for _ in 0..16 {
        if !is_mount_point(path) {
            return Ok(());
        }
        match rustix::mount::unmount(path, UnmountFlags::NOFOLLOW) {
            Ok(()) => {}
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(path, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                    .map_err(|e| SysError::path("umount2(MNT_DETACH)", path, e))?;
            }
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(SysError::path("umount2", path, e)),
        }
    }
    Err(SysError::Unsupported(format!(
        "{} stays mounted after 16 unmounts",
        path.display()
    )))
}

/// Copies the agent binary into `dir` under a name derived from its
/// content, so that sandboxes never see it change and the host's copy can
/// be rebuilt freely. Older copies are removed (running sandboxes keep
/// theirs through their bind mount).
pub fn install_agent(source: &Path, dir: &Path) -> io::Result<PathBuf> {
    let bytes = fs::read(source)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", source.display())))?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    let name = format!("capsule-agent-{:016x}", h.finish());
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    let target = dir.join(&name);
    if !target.is_file() {
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        fs::write(&tmp, &bytes)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &target)?;
    }
    for e in fs::read_dir(dir)?.flatten() {
        if e.file_name() != name.as_str() {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_found_with_escapes() {
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
        assert_eq!(escape("/a b\\c"), "/a\\040b\\134c");
    }

    #[test]
    fn the_agent_copy_is_content_addressed() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("agent");
        fs::write(&src, b"one").unwrap();
        let dir = tmp.path().join("agent-dir");
        let a = install_agent(&src, &dir).unwrap();
        assert_eq!(install_agent(&src, &dir).unwrap(), a);
        fs::write(&src, b"two").unwrap();
        let b = install_agent(&src, &dir).unwrap();
        assert_ne!(a, b);
        assert!(!a.exists(), "the old copy is gone");
        assert_eq!(fs::read(&b).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&b).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
}

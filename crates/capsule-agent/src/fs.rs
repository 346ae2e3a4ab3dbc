//! The `filesystem.Filesystem` service: every operation runs on the blocking
//! pool with the requesting user's filesystem permissions.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use capsule_protocol::filesystem::{EntryInfo, FileType};
use capsule_protocol::{Code, ConnectError};

use crate::users::is_agent_proc;

/// Maps an I/O error on `path` to the Connect error a client expects.
pub fn io_error(op: &str, path: &Path, err: &io::Error) -> ConnectError {
    let p = path.display();
    match err.kind() {
        io::ErrorKind::NotFound => {
            ConnectError::not_found(format!("{op} {p}: no such file or directory"))
        }
        io::ErrorKind::PermissionDenied => ConnectError::new(
            Code::PermissionDenied,
            format!("{op} {p}: permission denied"),
        ),
        io::ErrorKind::AlreadyExists => {
            ConnectError::new(Code::AlreadyExists, format!("{op} {p}: already exists"))
        }
        io::ErrorKind::NotADirectory => {
            ConnectError::invalid_argument(format!("{op} {p}: a path component is not a directory"))
        }
        io::ErrorKind::IsADirectory => {
            ConnectError::invalid_argument(format!("{op} {p}: is a directory"))
        }
        io::ErrorKind::DirectoryNotEmpty => ConnectError::new(
            Code::FailedPrecondition,
            format!("{op} {p}: directory not empty"),
        ),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            ConnectError::new(Code::ResourceExhausted, format!("{op} {p}: no space left"))
        }
        io::ErrorKind::FileTooLarge => {
            ConnectError::new(Code::ResourceExhausted, format!("{op} {p}: file too large"))
        }
        io::ErrorKind::ReadOnlyFilesystem => ConnectError::new(
            Code::PermissionDenied,
            format!("{op} {p}: read-only file system"),
        ),
        _ => match err.raw_os_error() {
            Some(libc::ELOOP) => ConnectError::invalid_argument(format!(
                "{op} {p}: too many levels of symbolic links"
            )),
            Some(libc::EXDEV) => ConnectError::new(
                Code::FailedPrecondition,
                format!("{op} {p}: source and destination are on different file systems"),
            ),
            _ => ConnectError::internal(format!("{op} {p}: {err}")),
        },
    }
}

/// Refuses paths that resolve into the agent's own `/proc` entry, or that
/// pass through a `/proc` magic link (`/proc/self/fd/N`, `/dev/stderr`,
/// `/proc/N/root`): those lead to whatever the agent holds open, and some
/// of what it holds (its log) lives on the host.
pub fn guard_agent(path: &Path) -> Result<(), ConnectError> {
    let resolved = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if is_agent_proc(&resolved) || through_magic_link(path) {
        return Err(agent_only(path));
    }
    Ok(())
}

fn agent_only(path: &Path) -> ConnectError {
    ConnectError::new(
        Code::PermissionDenied,
        format!(
            "{} belongs to the sandbox agent or passes through a /proc magic link \
             (/proc/*/fd, /dev/stderr, ...) and is not accessible",
            path.display()
        ),
    )
}

/// True when resolving `path` (or, for a path that does not exist yet, its
/// parent) needs a `/proc` magic link.
fn through_magic_link(path: &Path) -> bool {
    let probe = |p: &Path| {
        rustix::fs::openat2(
            rustix::fs::CWD,
            p,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::NO_MAGICLINKS,
        )
    };
    match probe(path) {
        Ok(_) => false,
        Err(rustix::io::Errno::NOENT) => match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => through_magic_link(parent),
            _ => false,
        },
        // ELOOP is also a real symlink loop: only a magic link when an
        // ordinary resolution succeeds.
        Err(rustix::io::Errno::LOOP) => {
            fs::symlink_metadata(path).is_ok() && fs::metadata(path).is_ok()
        }
        Err(_) => false,
    }
}

/// Opens `path` without following `/proc` magic links, so that a symlink
/// swapped in after [`guard_agent`] cannot lead to the agent's descriptors.
fn open_no_magic(path: &Path, flags: rustix::fs::OFlags, mode: u32) -> io::Result<fs::File> {
    let flags = flags | rustix::fs::OFlags::CLOEXEC;
    let mode = rustix::fs::Mode::from_bits_truncate(mode);
    let fd = match rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        flags,
        mode,
        rustix::fs::ResolveFlags::NO_MAGICLINKS,
    ) {
        // Kernels before 5.6 and gVisor have no openat2.
        Err(rustix::io::Errno::NOSYS) => rustix::fs::open(path, flags, mode)?,
        other => other?,
    };
    Ok(fs::File::from(fd))
}

/// Refuses a file that, once opened, turns out to be the agent's own
/// `/proc` entry (a symlink swapped in after the path check), or the very
/// file behind the agent's standard streams (its log on the host). The
/// second check holds also where `openat2` is missing (old kernels,
/// gVisor) and magic links cannot be refused while opening.
fn check_opened(file: &fs::File, path: &Path) -> Result<(), ConnectError> {
    use std::os::fd::{AsFd, AsRawFd};
    let actual = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default();
    if is_agent_proc(&actual) {
        return Err(agent_only(path));
    }
    let key = |st: rustix::fs::Stat| (st.st_dev, st.st_ino);
    if let Ok(opened) = rustix::fs::fstat(file) {
        let streams = [
            rustix::fs::fstat(std::io::stdin().as_fd()),
            rustix::fs::fstat(std::io::stdout().as_fd()),
            rustix::fs::fstat(std::io::stderr().as_fd()),
        ];
        // Character devices (/dev/null, a terminal) are shared with
        // sandbox processes on purpose.
        let is_device = rustix::fs::FileType::from_raw_mode(opened.st_mode)
            == rustix::fs::FileType::CharacterDevice;
        if !is_device && streams.into_iter().flatten().any(|s| key(s) == key(opened)) {
            return Err(agent_only(path));
        }
    }
    Ok(())
}

/// `ls -l` style permission text for a mode.
pub fn permissions_text(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (bit, ch) in bits {
        s.push(if mode & bit != 0 { ch } else { '-' });
    }
    s
}

fn name_of(uid: u32, file: &str) -> String {
    fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

fn rfc3339(secs: i64, nanos: i64) -> Option<String> {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).ok()? + time::Duration::nanoseconds(nanos);
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Describes the entry at `path` the way envd does: the entry's own size,
/// times, owner and permission text; for a symlink, the path it resolves
/// to (its own path when it does not resolve) and the target's type and
/// permission bits.
pub fn entry_info(path: &Path) -> io::Result<EntryInfo> {
    let meta = fs::symlink_metadata(path)?;
    let kind = |m: &fs::Metadata| {
        if m.is_dir() {
            FileType::Directory
        } else if m.is_file() {
            FileType::File
        } else {
            FileType::Unspecified
        }
    };
    let (file_type, mode, symlink_target) = if meta.file_type().is_symlink() {
        match fs::canonicalize(path).and_then(|t| Ok((fs::metadata(&t)?, t))) {
            Ok((target, resolved)) => (
                kind(&target),
                target.mode() & 0o7777,
                Some(resolved.display().to_string()),
            ),
            Err(_) => (FileType::Unspecified, 0, Some(path.display().to_string())),
        }
    } else {
        (kind(&meta), meta.mode() & 0o7777, None)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    Ok(EntryInfo {
        name,
        file_type,
        path: path.display().to_string(),
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        mode,
        permissions: permissions_text(meta.mode()),
        owner: name_of(meta.uid(), "/etc/passwd"),
        group: name_of(meta.gid(), "/etc/group"),
        modified_time: rfc3339(meta.mtime(), meta.mtime_nsec()),
        symlink_target,
    })
}

pub fn stat(path: &Path) -> Result<EntryInfo, ConnectError> {
    guard_agent(path)?;
    entry_info(path).map_err(|e| io_error("stat", path, &e))
}

/// Lists `path` down to `depth` levels (0 and 1 both mean its own entries).
pub fn list_dir(path: &Path, depth: u32) -> Result<Vec<EntryInfo>, ConnectError> {
    guard_agent(path)?;
    let meta = fs::metadata(path).map_err(|e| io_error("list", path, &e))?;
    if !meta.is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "list {}: not a directory",
            path.display()
        )));
    }
    let mut out = Vec::new();
    walk(path, depth.max(1), &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, depth: u32, out: &mut Vec<EntryInfo>) -> Result<(), ConnectError> {
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io_error("list", dir, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    children.sort();
    for child in children {
        // Entries can vanish while listing; skip those.
        let Ok(info) = entry_info(&child) else {
            continue;
        };
        let descend =
            depth > 1 && info.file_type == FileType::Directory && info.symlink_target.is_none();
        out.push(info);
        if descend {
            walk(&child, depth - 1, out)?;
        }
        if out.len() > 100_000 {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!(
                    "listing {} returned more than 100000 entries; use a smaller depth",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

pub fn make_dir(path: &Path) -> Result<EntryInfo, ConnectError> {
    guard_agent(path)?;
    if fs::symlink_metadata(path).is_ok() {
        return Err(ConnectError::new(
            Code::AlreadyExists,
            format!("make directory {}: already exists", path.display()),
        ));
    }
    fs::create_dir_all(path).map_err(|e| io_error("make directory", path, &e))?;
    entry_info(path).map_err(|e| io_error("stat", path, &e))
}

pub fn rename(source: &Path, destination: &Path) -> Result<EntryInfo, ConnectError> {
    guard_agent(source)?;
    guard_agent(destination)?;
    fs::symlink_metadata(source).map_err(|e| io_error("move", source, &e))?;
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error("make directory", parent, &e))?;
    }
    fs::rename(source, destination).map_err(|e| io_error("move", source, &e))?;
    entry_info(destination).map_err(|e| io_error("stat", destination, &e))
}

pub fn remove(path: &Path) -> Result<(), ConnectError> {
    guard_agent(path)?;
    let meta = fs::symlink_metadata(path).map_err(|e| io_error("remove", path, &e))?;
    if meta.is_dir() {
        // Moved aside first: that needs exactly the permission removing the
        // directory itself needs, so a refusal leaves its contents alone
        // instead of failing after they are gone.
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => {
                return Err(ConnectError::invalid_argument(format!(
                    "remove {}: cannot remove the root directory",
                    path.display()
                )));
            }
        };
        let aside = parent.join(format!(".capsule-removing-{}", random_hex(6)));
        fs::rename(path, &aside).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => ConnectError::invalid_argument(format!(
                "remove {}: it is a mount point",
                path.display()
            )),
            _ => io_error("remove", path, &e),
        })?;
        fs::remove_dir_all(&aside).map_err(|e| {
            // Put what is left back where it was.
            let _ = fs::rename(&aside, path);
            io_error("remove", path, &e)
        })
    } else {
        fs::remove_file(path).map_err(|e| io_error("remove", path, &e))
    }
}

/// `bytes` random bytes in hex, for names nobody else picks.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Creates the parent directories of `path` for a write, as `id`.
pub fn ensure_parent(path: &Path) -> Result<(), ConnectError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(|e| io_error("make directory", parent, &e))?;
    }
    Ok(())
}

/// Opens `path` for writing (creating or truncating), as the current fs identity.
pub fn open_for_write(path: &Path, mode: Option<u32>) -> Result<fs::File, ConnectError> {
    guard_agent(path)?;
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(ConnectError::invalid_argument(format!(
            "write {}: is a directory",
            path.display()
        )));
    }
    ensure_parent(path)?;
    use rustix::fs::OFlags;
    let file = open_no_magic(path, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC, 0o666)
        .map_err(|e| io_error("write", path, &e))?;
    check_opened(&file, path)?;
    if let Some(mode) = mode {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| io_error("chmod", path, &e))?;
    }
    Ok(file)
}

/// Opens `path` for reading, as the current fs identity.
pub fn open_for_read(path: &Path) -> Result<(fs::File, u64), ConnectError> {
    guard_agent(path)?;
    let file = open_no_magic(path, rustix::fs::OFlags::RDONLY, 0)
        .map_err(|e| io_error("read", path, &e))?;
    check_opened(&file, path)?;
    let meta = file.metadata().map_err(|e| io_error("read", path, &e))?;
    if meta.is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "read {}: is a directory",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_text() {
        assert_eq!(permissions_text(0o100644), "-rw-r--r--");
        assert_eq!(permissions_text(0o040755), "drwxr-xr-x");
        assert_eq!(permissions_text(0o120777), "lrwxrwxrwx");
    }

    #[test]
    fn list_walks_to_depth_and_reports_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
        fs::write(tmp.path().join("a/f.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/nowhere", tmp.path().join("dangling")).unwrap();
        let one = list_dir(tmp.path(), 1).unwrap();
        assert_eq!(
            one.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a", "dangling"]
        );
        let link = &one[1];
        // A link that does not resolve names itself, as envd's do.
        let own = tmp.path().join("dangling").display().to_string();
        assert_eq!(link.symlink_target.as_deref(), Some(own.as_str()));
        assert_eq!(link.file_type, FileType::Unspecified);
        let three = list_dir(tmp.path(), 3).unwrap();
        let names: Vec<_> = three.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "f.txt", "dangling"]);
        let f = three.iter().find(|e| e.name == "f.txt").unwrap();
        assert_eq!(f.size, 5);
        assert_eq!(f.file_type, FileType::File);
        assert!(list_dir(&tmp.path().join("a/f.txt"), 1).is_err());
        assert_eq!(
            list_dir(&tmp.path().join("missing"), 1).unwrap_err().code,
            Code::NotFound
        );
    }

    #[test]
    fn make_move_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("x/y");
        make_dir(&d).unwrap();
        assert_eq!(make_dir(&d).unwrap_err().code, Code::AlreadyExists);
        fs::write(d.join("f"), "1").unwrap();
        let moved = rename(&d.join("f"), &tmp.path().join("z/g")).unwrap();
        assert_eq!(moved.name, "g");
        remove(&tmp.path().join("x")).unwrap();
        assert!(!tmp.path().join("x").exists());
        assert_eq!(
            remove(&tmp.path().join("x")).unwrap_err().code,
            Code::NotFound
        );
    }
}

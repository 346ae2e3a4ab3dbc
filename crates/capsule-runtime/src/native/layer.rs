//! The read-only base layer every native sandbox's root starts from: the
//! directory skeleton, a generated `/etc`, and the files of the host's
//! `/etc` that programs need to run (dynamic linker cache, certificates,
//! alternatives). The host's system directories are bound over it read-only
//! at start; everything the sandbox writes goes to its own upper layer.
//!
//! The layer is content-addressed (`base-<hash>`) and immutable: a new host
//! configuration produces a new layer beside the old one, which stays until
//! no sandbox uses it.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// The system directories of the host that sandboxes see read-only, and
/// the top-level names that are symlinks into `/usr` on merged-usr hosts.
pub const SYSTEM_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Entries of the host's `/etc` copied into the layer.
const HOST_ETC: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "ethertypes",
    "fonts",
    "gai.conf",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "lsb-release",
    "magic",
    "magic.mime",
    "matplotlibrc",
    "mime.types",
    "os-release",
    "perl",
    "protocols",
    "rpc",
    "services",
    "ssl",
    "timezone",
];

/// `/etc` entries copied by prefix (interpreter configuration).
const HOST_ETC_PREFIXES: &[&str] = &["python3"];

/// Largest single host file copied into the layer.
const MAX_COPIED_FILE: u64 = 16 << 20;

/// One entry of the layer, before it is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: PathBuf },
}

/// Who owns what in the layer, as host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ownership {
    /// The host ids of sandbox root; `None` to leave files owned by the
    /// caller (who is sandbox root when rootless).
    pub root: Option<(u32, u32)>,
    /// The host ids of the sandbox user (uid 1000).
    pub user: Option<(u32, u32)>,
}

/// How the host's top-level system directories look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    /// Directories to bind read-only at the same path.
    pub binds: Vec<PathBuf>,
    /// Top-level symlinks to reproduce (merged /usr).
    pub symlinks: Vec<(String, PathBuf)>,
}

pub fn host_layout() -> HostLayout {
    let mut binds = Vec::new();
    let mut symlinks = Vec::new();
    for name in SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(&host) {
                    symlinks.push((name.to_owned(), target));
                }
            }
            Ok(m) if m.is_dir() => binds.push(host),
            _ => {}
        }
    }
    HostLayout { binds, symlinks }
}

fn generated_etc() -> Vec<(&'static str, String)> {
    vec![
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\n\
             user:x:1000:1000:user:/home/user:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                .to_owned(),
        ),
        (
            "group",
            "root:x:0:\ntty:x:5:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n".to_owned(),
        ),
        ("hostname", "capsule\n".to_owned()),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n127.0.1.1\tcapsule\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_owned(),
        ),
        (
            "resolv.conf",
            "# This sandbox has no network access.\n".to_owned(),
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\nethers: files\nrpc: files\n"
                .to_owned(),
        ),
        (
            "profile",
            "# Capsule sandbox login shell settings. PATH comes from the sandbox environment.\n\
             if [ -d /etc/profile.d ]; then\n  for f in /etc/profile.d/*.sh; do [ -r \"$f\" ] && . \"$f\"; done\n  unset f\nfi\n\
             if [ -n \"$BASH_VERSION\" ] && [ -n \"$PS1\" ] && [ -r /etc/bash.bashrc ]; then . /etc/bash.bashrc; fi\n"
                .to_owned(),
        ),
        (
            "bash.bashrc",
            "[ -z \"$PS1\" ] && return\nPS1='\\u@\\h:\\w\\$ '\nalias ls='ls --color=auto'\n".to_owned(),
        ),
        ("shells", "/bin/sh\n/bin/bash\n/usr/bin/bash\n".to_owned()),
        ("machine-id", format!("{:032x}\n", random_u128())),
    ]
}

fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u128::from_le_bytes(b)
}

/// Reads a host file tree into entries (symlinks kept, not followed).
fn read_host_tree(host: &Path, rel: &Path, out: &mut Vec<(PathBuf, Entry)>) {
    let Ok(meta) = fs::symlink_metadata(host) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        if let Ok(target) = fs::read_link(host) {
            out.push((rel.to_path_buf(), Entry::Symlink { target }));
        }
    } else if meta.is_dir() {
        out.push((rel.to_path_buf(), Entry::Dir { mode }));
        let Ok(children) = fs::read_dir(host) else {
            return;
        };
        let mut names: Vec<_> = children.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            read_host_tree(&host.join(&name), &rel.join(&name), out);
        }
    } else if meta.is_file() && meta.len() <= MAX_COPIED_FILE {
        // Unreadable files (secrets) are skipped rather than copied.
        if meta.mode() & 0o004 != 0
            && let Ok(content) = fs::read(host)
        {
            out.push((rel.to_path_buf(), Entry::File { mode, content }));
        }
    }
}

/// Everything the layer holds, in creation order.
fn entries(layout: &HostLayout) -> Vec<(PathBuf, Entry)> {
    let mut out: Vec<(PathBuf, Entry)> = Vec::new();
    let dir = |p: &str, mode: u32| (PathBuf::from(p), Entry::Dir { mode });
    for (p, mode) in [
        ("dev", 0o755),
        ("etc", 0o755),
        ("etc/profile.d", 0o755),
        ("home", 0o755),
        ("home/user", 0o750),
        ("media", 0o755),
        ("mnt", 0o755),
        ("opt", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("run/lock", 0o1777),
        ("srv", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("var", 0o755),
        ("var/cache", 0o755),
        ("var/lib", 0o755),
        ("var/log", 0o755),
        ("var/tmp", 0o1777),
        ("workspace", 0o755),
    ] {
        out.push(dir(p, mode));
    }
    out.push((
        PathBuf::from("var/run"),
        Entry::Symlink {
            target: "../run".into(),
        },
    ));
    out.push((
        PathBuf::from("var/lock"),
        Entry::Symlink {
            target: "../run/lock".into(),
        },
    ));
    for bind in &layout.binds {
        let rel = bind.strip_prefix("/").unwrap_or(bind);
        if rel != Path::new("usr") {
            out.push((rel.to_path_buf(), Entry::Dir { mode: 0o755 }));
        }
    }
    for (name, target) in &layout.symlinks {
        out.push((
            PathBuf::from(name),
            Entry::Symlink {
                target: target.clone(),
            },
        ));
    }
    for (name, content) in generated_etc() {
        let mode = 0o644;
        out.push((
            Path::new("etc").join(name),
            Entry::File {
                mode,
                content: content.into_bytes(),
            },
        ));
    }
    let mut copied = Vec::new();
    for name in HOST_ETC {
        read_host_tree(
            &Path::new("/etc").join(name),
            &Path::new("etc").join(name),
            &mut copied,
        );
    }
    if let Ok(entries) = fs::read_dir("/etc") {
        let mut names: Vec<_> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| HOST_ETC_PREFIXES.iter().any(|p| n.starts_with(p)))
            .collect();
        names.sort();
        for name in names {
            read_host_tree(
                &Path::new("/etc").join(&name),
                &Path::new("etc").join(&name),
                &mut copied,
            );
        }
    }
    out.extend(copied);
    out
}

/// A digest of the layer's content and ownership: its directory name.
fn digest(entries: &[(PathBuf, Entry)], owners: &Ownership) -> String {
    let mut h = DefaultHasher::new();
    for (path, entry) in entries {
        path.hash(&mut h);
        // The machine id is random per build; it does not make a layer new.
        if path != Path::new("etc/machine-id") {
            entry.hash(&mut h);
        }
    }
    owners.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Beside a finished layer `base-<hash>` sits `base-<hash>.complete`.
fn complete_mark(layer: &Path) -> PathBuf {
    let mut name = layer.file_name().unwrap_or_default().to_os_string();
    name.push(".complete");
    layer.with_file_name(name)
}

/// Makes sure the base layer for this host exists under `layers_dir` and
/// returns its path.
pub fn ensure_base_layer(
    layers_dir: &Path,
    layout: &HostLayout,
    owners: &Ownership,
) -> io::Result<PathBuf> {
    let entries = entries(layout);
    let name = format!("base-{}", digest(&entries, owners));
    let final_dir = layers_dir.join(&name);
    if complete_mark(&final_dir).exists() && final_dir.is_dir() {
        return Ok(final_dir);
    }
    fs::create_dir_all(layers_dir)?;
    let tmp = layers_dir.join(format!(".build-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir(&tmp)?;
    let result = write_layer(&tmp, &entries, owners).and_then(|()| {
        if final_dir.exists() {
            // An incomplete build from an earlier crash.
            fs::remove_dir_all(&final_dir)?;
        }
        fs::rename(&tmp, &final_dir)?;
        fs::write(complete_mark(&final_dir), "complete\n")
    });
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(final_dir)
}

fn write_layer(dir: &Path, entries: &[(PathBuf, Entry)], owners: &Ownership) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for (rel, entry) in entries {
        let path = dir.join(rel);
        match entry {
            Entry::Dir { mode } => {
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(with_path(e, &path)),
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                    .map_err(|e| with_path(e, &path))?;
            }
            Entry::File { mode, content } => {
                fs::write(&path, content).map_err(|e| with_path(e, &path))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                    .map_err(|e| with_path(e, &path))?;
            }
            Entry::Symlink { target } => {
                let _ = fs::remove_file(&path);
                symlink(target, &path).map_err(|e| with_path(e, &path))?;
            }
        }
        let owner = if rel.starts_with("home/user") || rel == Path::new("workspace") {
            owners.user
        } else {
            owners.root
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(|e| with_path(e, &path))?;
        }
    }
    if let Some((uid, gid)) = owners.root {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Removes layers other than `keep` that no sandbox uses.
pub fn collect_garbage(layers_dir: &Path, keep: &[PathBuf]) {
    let Ok(entries) = fs::read_dir(layers_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let owner = path
            .to_str()
            .and_then(|p| p.strip_suffix(".complete"))
            .map(PathBuf::from)
            .unwrap_or_else(|| path.clone());
        if !keep.contains(&owner) {
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_is_complete_reused_and_content_addressed() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = host_layout();
        let owners = Ownership {
            root: None,
            user: None,
        };
        let a = ensure_base_layer(tmp.path(), &layout, &owners).unwrap();
        let b = ensure_base_layer(tmp.path(), &layout, &owners).unwrap();
        assert_eq!(a, b, "an existing layer is reused");
        let passwd = fs::read_to_string(a.join("etc/passwd")).unwrap();
        assert!(passwd.contains("user:x:1000:1000"));
        assert!(a.join("workspace").is_dir());
        assert_eq!(
            fs::metadata(a.join("tmp")).unwrap().permissions().mode() & 0o7777,
            0o1777
        );
        // Secrets of the host are never copied.
        assert!(!a.join("etc/shadow").exists());
        for (name, target) in &layout.symlinks {
            assert_eq!(&fs::read_link(a.join(name)).unwrap(), target);
        }
        // Nothing half-built is left beside it.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "the layer and its completion mark: {names:?}"
        );
        assert!(!a.join(".complete").exists());
        collect_garbage(tmp.path(), std::slice::from_ref(&a));
        assert!(a.exists());
        assert!(complete_mark(&a).exists());
        collect_garbage(tmp.path(), &[]);
        assert!(!a.exists());
        assert!(!complete_mark(&a).exists());
    }
}

//! The Landlock policy of every sandbox (where the kernel has Landlock):
//! files may be created, written or removed only inside the sandbox's own
//! top-level directories; `/proc`, `/sys` and `/dev` are off limits for that
//! except the standard devices, `/dev/pts`, `/dev/shm` and writes to
//! existing `/proc` files (a process's own settings).

use std::fs;
use std::path::Path;

use landlock::{
    ABI, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};

use crate::error::{Result, SysError};

/// What Landlock could enforce on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Full,
    Partial,
    /// The kernel has no Landlock; the other layers still apply.
    None,
}

/// Device nodes sandboxed programs may write.
pub const WRITABLE_DEVICES: [&str; 7] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
];

/// Top-level directories that never get write access.
const SYSTEM_TREES: [&str; 3] = ["proc", "sys", "dev"];

fn rules_error(e: impl std::fmt::Display) -> SysError {
    SysError::Unsupported(format!("landlock: {e}"))
}

/// The top-level directories of `root` that get full write access.
pub fn writable_trees(root: &Path) -> Result<Vec<String>> {
    let mut trees = Vec::new();
    let entries = fs::read_dir(root).map_err(|e| SysError::path("list", root, e))?;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if kind.is_dir() && !SYSTEM_TREES.contains(&name.as_str()) {
            trees.push(name);
        }
    }
    trees.sort();
    Ok(trees)
}

/// Restricts the calling process (and everything it starts) with the
/// sandbox policy. Call after `pivot_root`, once the tree is final.
pub fn restrict_sandbox(root: &Path) -> Result<Enforcement> {
    // Write-type rights up to ABI 3; device ioctls stay unrestricted so
    // terminals keep working.
    let handled: BitFlags<AccessFs> = AccessFs::from_write(ABI::V3);
    let file_rights: BitFlags<AccessFs> = AccessFs::WriteFile | AccessFs::Truncate;
    let mut ruleset = Ruleset::default()
        .handle_access(handled)
        .map_err(rules_error)?
        .create()
        .map_err(rules_error)?;
    let mut add = |path: &Path, rights: BitFlags<AccessFs>| -> Result<()> {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // Optional entries (a device the host lacks) are skipped.
            Err(_) if !path.exists() => return Ok(()),
            Err(e) => return Err(rules_error(e)),
        };
        ruleset
            .as_mut()
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(rules_error)?;
        Ok(())
    };
    for tree in writable_trees(root)? {
        add(&root.join(&tree), handled)?;
    }
    for dev in WRITABLE_DEVICES {
        add(&root.join(dev.trim_start_matches('/')), file_rights)?;
    }
    add(&root.join("dev/pts"), handled)?;
    add(&root.join("dev/shm"), handled)?;
    add(&root.join("proc"), file_rights)?;
    let status = ruleset.restrict_self().map_err(rules_error)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_trees_are_never_writable() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["proc", "sys", "dev", "workspace", "tmp"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        fs::write(tmp.path().join("file"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", tmp.path().join("bin")).unwrap();
        assert_eq!(
            writable_trees(tmp.path()).unwrap(),
            vec!["tmp", "workspace"]
        );
    }

    #[test]
    fn restricts_writes_outside_the_allowed_trees() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["proc", "workspace"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        let root = tmp.path().to_path_buf();
        // Landlock applies to the calling thread and its future children;
        // a dedicated thread keeps the test process unrestricted.
        let outcome = std::thread::spawn(move || {
            let enforcement = restrict_sandbox(&root).unwrap();
            let inside = fs::write(root.join("workspace/ok.txt"), "x").is_ok();
            let outside = fs::write(root.join("proc/nope.txt"), "x").is_err();
            let top = fs::create_dir(root.join("newtop")).is_err();
            (enforcement, inside, outside, top)
        })
        .join()
        .unwrap();
        match outcome {
            (Enforcement::None, ..) => eprintln!("kernel without Landlock; nothing to check"),
            (_, inside, outside, top) => {
                assert!(inside, "writes inside an allowed tree must work");
                assert!(outside, "writes under proc must be refused");
                assert!(top, "new top-level directories must be refused");
            }
        }
    }
}

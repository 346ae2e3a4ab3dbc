//! Ending a process tree. Every process the agent starts sits below its own
//! shim, a child subreaper, so the tree is exactly the shim's descendants,
//! however they detached themselves.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use capsule_sys::process::{kill, read_stat};

/// Parent links of every process visible in `proc_root`.
fn parents(proc_root: &Path) -> HashMap<i32, i32> {
    let mut map = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = read_stat(proc_root, pid)
            && stat.state != 'Z'
        {
            map.insert(pid, stat.ppid);
        }
    }
    map
}

/// The living descendants of `root`.
pub fn descendants(proc_root: &Path, root: i32) -> BTreeSet<i32> {
    let parents = parents(proc_root);
    let mut found = BTreeSet::new();
    loop {
        let before = found.len();
        for (&pid, &ppid) in &parents {
            if ppid == root || found.contains(&ppid) {
                found.insert(pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found
}

/// Kills `root` (a shim) and all its descendants. Descendants are stopped
/// first, so none can fork or be re-parented away while the tree is
/// collected, then everything is killed.
///
/// Runs on the agent's own thread: under a fork bomb at the sandbox's
/// process limit, no new thread could be started to do it.
pub async fn kill_tree(root: i32) {
    let proc_root = Path::new("/proc");
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let now = descendants(proc_root, root);
        let fresh: Vec<i32> = now.difference(&seen).copied().collect();
        if fresh.is_empty() {
            break;
        }
        for pid in &fresh {
            let _ = kill(*pid, libc::SIGSTOP);
        }
        seen.extend(fresh);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for pid in &seen {
        let _ = kill(*pid, libc::SIGKILL);
    }
    let _ = kill(root, libc::SIGKILL);
}

/// Asks the tree of `root` (a shim) to terminate: SIGTERM to its process
/// group and to its direct children (which may have moved to groups of
/// their own, as shells with job control do).
pub fn terminate(root: i32) {
    let _ = kill(-root, libc::SIGTERM);
    let parents = parents(Path::new("/proc"));
    for (&pid, &ppid) in &parents {
        if ppid == root {
            let _ = kill(pid, libc::SIGTERM);
        }
    }
}

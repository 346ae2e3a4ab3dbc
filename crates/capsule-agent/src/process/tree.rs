//! Ending a process together with everything it started.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use capsule_sys::process::{kill, read_stat};

/// The processes that belong to the tree of `root`: the ones in its session
/// (every process the agent starts leads a session of its own), plus any
/// descendant by parent link.
pub fn members(proc_root: &Path, root: i32) -> BTreeSet<i32> {
    let mut parents: HashMap<i32, i32> = HashMap::new();
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = read_stat(proc_root, pid) else {
            continue;
        };
        if stat.state == 'Z' {
            continue;
        }
        if pid == root || stat.session == root || stat.pgrp == root {
            found.insert(pid);
        }
        parents.insert(pid, stat.ppid);
    }
    // Add descendants that left the session (setsid) but not the tree.
    loop {
        let before = found.len();
        for (&pid, &ppid) in &parents {
            if found.contains(&ppid) {
                found.insert(pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found.remove(&1);
    found
}

/// Sends `signal` to the whole tree of `root`. With SIGKILL, repeats until
/// nothing of the tree is left running (a fork racing the scan is caught on
/// the next pass).
pub fn signal_tree(root: i32, signal: i32) {
    let proc_root = Path::new("/proc");
    for _ in 0..20 {
        let pids = members(proc_root, root);
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            let _ = kill(*pid, signal);
        }
        if signal != libc::SIGKILL {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

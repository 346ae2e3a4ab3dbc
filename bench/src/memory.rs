//! Host memory as the kernel accounts it.

use std::time::Duration;

/// MemTotal - MemAvailable, in bytes: memory the host cannot hand out.
pub fn used_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    field("MemTotal:").saturating_sub(field("MemAvailable:"))
}

/// Lets the kernel settle (deferred frees, RCU) before a reading.
pub fn settled_used_bytes() -> u64 {
    std::thread::sleep(Duration::from_millis(2000));
    used_bytes()
}

/// Proportional set size of a process (shared pages split between users).
pub fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

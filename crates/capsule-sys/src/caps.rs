//! Capabilities: what sandbox root keeps, as data.

use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::error::{Result, SysError};

/// The capabilities root inside a sandbox keeps (the set container engines
/// grant by default, minus raw sockets). Everything else leaves the bounding
/// set, so no process in the sandbox can ever regain it.
pub fn sandbox_root_set() -> CapabilitySet {
    CapabilitySet::CHOWN
        | CapabilitySet::DAC_OVERRIDE
        | CapabilitySet::FOWNER
        | CapabilitySet::FSETID
        | CapabilitySet::KILL
        | CapabilitySet::SETGID
        | CapabilitySet::SETUID
        | CapabilitySet::SETPCAP
        | CapabilitySet::NET_BIND_SERVICE
        | CapabilitySet::SYS_CHROOT
        | CapabilitySet::SETFCAP
        | CapabilitySet::AUDIT_WRITE
}

/// The highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability outside `keep` from the bounding set, the
/// effective, permitted and inheritable sets, and clears the ambient set.
pub fn restrict_to(keep: CapabilitySet) -> Result<()> {
    for bit in 0..=last_cap().min(63) {
        let cap = CapabilitySet::from_bits_retain(1u64 << bit);
        if keep.contains(cap) {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(SysError::syscall("prctl(PR_CAPBSET_DROP)", e)),
        }
    }
    let current = rustix::thread::capabilities(None).map_err(|e| SysError::syscall("capget", e))?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: current.effective & keep,
            permitted: current.permitted & keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| SysError::syscall("capset", e))?;
    rustix::thread::clear_ambient_capability_set()
        .map_err(|e| SysError::syscall("prctl(PR_CAP_AMBIENT)", e))
}

/// True when `cap` is still in the calling thread's bounding set.
pub fn in_bounding_set(cap: CapabilitySet) -> bool {
    rustix::thread::capability_is_in_bounding_set(cap).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_root_never_keeps_admin_capabilities() {
        let set = sandbox_root_set();
        for forbidden in [
            CapabilitySet::SYS_ADMIN,
            CapabilitySet::SYS_PTRACE,
            CapabilitySet::SYS_MODULE,
            CapabilitySet::NET_ADMIN,
            CapabilitySet::NET_RAW,
            CapabilitySet::SYS_RAWIO,
            CapabilitySet::BPF,
            CapabilitySet::PERFMON,
            CapabilitySet::SYS_RESOURCE,
            CapabilitySet::MKNOD,
        ] {
            assert!(!set.contains(forbidden), "{forbidden:?} must not be kept");
        }
    }
}

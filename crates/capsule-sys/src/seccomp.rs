//! The seccomp policy of every sandbox, as data: a deny-list of system calls
//! that reach kernel surfaces a sandbox has no business touching, compiled to
//! BPF with `seccompiler`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Result, SysError};

/// The `CLONE_NEW*` flags: creating any new namespace is refused.
const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// How one system call is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Always refused with EPERM.
    Deny,
    /// Refused with EPERM when argument `arg` carries any namespace flag.
    DenyNamespaceFlags { arg: u8 },
    /// Refused with EPERM when the low 32 bits of argument `arg` are one of
    /// `values` (ioctl request numbers).
    DenyValues { arg: u8, values: &'static [u32] },
}

/// The deny-list: (name, number, rule). The reason for each group is the
/// comment above it.
pub const DENY_LIST: &[(&str, i64, Rule)] = &[
    // Kernel keyrings are not namespaced.
    ("add_key", libc::SYS_add_key, Rule::Deny),
    ("request_key", libc::SYS_request_key, Rule::Deny),
    ("keyctl", libc::SYS_keyctl, Rule::Deny),
    // eBPF and perf expose large, bug-prone kernel surfaces.
    ("bpf", libc::SYS_bpf, Rule::Deny),
    ("perf_event_open", libc::SYS_perf_event_open, Rule::Deny),
    // Loading kernels and modules.
    ("kexec_load", libc::SYS_kexec_load, Rule::Deny),
    ("kexec_file_load", libc::SYS_kexec_file_load, Rule::Deny),
    ("init_module", libc::SYS_init_module, Rule::Deny),
    ("finit_module", libc::SYS_finit_module, Rule::Deny),
    ("delete_module", libc::SYS_delete_module, Rule::Deny),
    // Mounting in any form; the sandbox's tree is fixed at start.
    ("mount", libc::SYS_mount, Rule::Deny),
    ("umount2", libc::SYS_umount2, Rule::Deny),
    ("pivot_root", libc::SYS_pivot_root, Rule::Deny),
    ("fsopen", libc::SYS_fsopen, Rule::Deny),
    ("fsconfig", libc::SYS_fsconfig, Rule::Deny),
    ("fsmount", libc::SYS_fsmount, Rule::Deny),
    ("fspick", libc::SYS_fspick, Rule::Deny),
    ("move_mount", libc::SYS_move_mount, Rule::Deny),
    ("open_tree", libc::SYS_open_tree, Rule::Deny),
    ("mount_setattr", libc::SYS_mount_setattr, Rule::Deny),
    // New namespaces and joining others.
    ("setns", libc::SYS_setns, Rule::Deny),
    (
        "unshare",
        libc::SYS_unshare,
        Rule::DenyNamespaceFlags { arg: 0 },
    ),
    (
        "clone",
        libc::SYS_clone,
        Rule::DenyNamespaceFlags { arg: 0 },
    ),
    // Making or removing btrfs subvolumes (see `btrfs::SUBVOLUME_IOCTLS`).
    (
        "ioctl",
        libc::SYS_ioctl,
        Rule::DenyValues {
            arg: 1,
            values: &crate::btrfs::SUBVOLUME_IOCTLS,
        },
    ),
    // userfaultfd makes kernel races easy to win.
    ("userfaultfd", libc::SYS_userfaultfd, Rule::Deny),
    // io_uring bypasses seccomp for the operations it submits.
    ("io_uring_setup", libc::SYS_io_uring_setup, Rule::Deny),
    ("io_uring_enter", libc::SYS_io_uring_enter, Rule::Deny),
    ("io_uring_register", libc::SYS_io_uring_register, Rule::Deny),
    // File handles can open files outside the sandbox's mount tree.
    ("open_by_handle_at", libc::SYS_open_by_handle_at, Rule::Deny),
    ("name_to_handle_at", libc::SYS_name_to_handle_at, Rule::Deny),
    // Host-wide state: swap, reboot, accounting, clocks, quotas, the kernel log.
    ("swapon", libc::SYS_swapon, Rule::Deny),
    ("swapoff", libc::SYS_swapoff, Rule::Deny),
    ("reboot", libc::SYS_reboot, Rule::Deny),
    ("acct", libc::SYS_acct, Rule::Deny),
    ("settimeofday", libc::SYS_settimeofday, Rule::Deny),
    ("clock_settime", libc::SYS_clock_settime, Rule::Deny),
    ("clock_adjtime", libc::SYS_clock_adjtime, Rule::Deny),
    ("adjtimex", libc::SYS_adjtimex, Rule::Deny),
    ("quotactl", libc::SYS_quotactl, Rule::Deny),
    ("syslog", libc::SYS_syslog, Rule::Deny),
    ("vhangup", libc::SYS_vhangup, Rule::Deny),
    ("lookup_dcookie", libc::SYS_lookup_dcookie, Rule::Deny),
    // Raw port I/O and obsolete interfaces.
    ("iopl", libc::SYS_iopl, Rule::Deny),
    ("ioperm", libc::SYS_ioperm, Rule::Deny),
    ("uselib", libc::SYS_uselib, Rule::Deny),
    ("ustat", libc::SYS_ustat, Rule::Deny),
    ("sysfs", libc::SYS_sysfs, Rule::Deny),
    ("_sysctl", libc::SYS__sysctl, Rule::Deny),
    ("nfsservctl", libc::SYS_nfsservctl, Rule::Deny),
    // Moving other processes' memory between NUMA nodes.
    ("migrate_pages", libc::SYS_migrate_pages, Rule::Deny),
    ("move_pages", libc::SYS_move_pages, Rule::Deny),
];

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        SysError::Unsupported(format!(
            "seccomp: unsupported architecture {}",
            std::env::consts::ARCH
        ))
    })
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch()?,
    )
    .map_err(|e| SysError::Unsupported(format!("seccomp filter: {e}")))?;
    BpfProgram::try_from(filter).map_err(|e| SysError::Unsupported(format!("seccomp compile: {e}")))
}

/// Compiles the sandbox policy: the deny-list (EPERM), and `clone3`
/// answering ENOSYS so that libc falls back to `clone`, whose flags the
/// filter can inspect.
pub fn sandbox_filters() -> Result<Vec<BpfProgram>> {
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(name, nr, rule) in DENY_LIST {
        let rules = match rule {
            Rule::Deny => Vec::new(),
            Rule::DenyNamespaceFlags { arg } => NAMESPACE_FLAGS
                .iter()
                .map(|&flag| {
                    let cond = SeccompCondition::new(
                        arg,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(flag),
                        flag,
                    )
                    .map_err(|e| SysError::Unsupported(format!("seccomp rule for {name}: {e}")))?;
                    SeccompRule::new(vec![cond])
                        .map_err(|e| SysError::Unsupported(format!("seccomp rule for {name}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?,
            Rule::DenyValues { arg, values } => values
                .iter()
                .map(|&value| {
                    let cond = SeccompCondition::new(
                        arg,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        u64::from(value),
                    )
                    .map_err(|e| SysError::Unsupported(format!("seccomp rule for {name}: {e}")))?;
                    SeccompRule::new(vec![cond])
                        .map_err(|e| SysError::Unsupported(format!("seccomp rule for {name}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        deny.insert(nr, rules);
    }
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    Ok(vec![
        compile(deny, libc::EPERM)?,
        compile(clone3, libc::ENOSYS)?,
    ])
}

/// Installs the filters on the calling thread (and so on everything it
/// starts afterwards). `no_new_privs` must already be set.
pub fn install(filters: &[BpfProgram]) -> Result<()> {
    for f in filters {
        seccompiler::apply_filter(f)
            .map_err(|e| SysError::Unsupported(format!("seccomp install: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_and_names_are_unique() {
        let filters = sandbox_filters().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters[0].len() > DENY_LIST.len());
        let mut names: Vec<_> = DENY_LIST.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DENY_LIST.len());
    }

    #[test]
    fn filter_blocks_namespaces_but_not_plain_forks() {
        let filters = sandbox_filters().unwrap();
        // SAFETY: the test harness is multi-threaded, so the child below only
        // makes async-signal-safe system calls (no allocation) before `_exit`.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let code = (|| {
                if install(&filters).is_err() {
                    return 9;
                }
                // SAFETY: unshare takes an integer flag set.
                if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != -1 {
                    return 10;
                }
                // SAFETY: __errno_location returns this thread's errno slot.
                if unsafe { *libc::__errno_location() } != libc::EPERM {
                    return 11;
                }
                // A subvolume cannot be made (the request is refused
                // before the kernel reads the argument).
                // SAFETY: the ioctl is refused by the filter; its argument is never read.
                let made = unsafe {
                    libc::ioctl(
                        0,
                        crate::btrfs::SUBVOLUME_IOCTLS[1] as _,
                        std::ptr::null_mut::<u8>(),
                    )
                };
                // SAFETY: __errno_location returns this thread's errno slot.
                if made != -1 || unsafe { *libc::__errno_location() } != libc::EPERM {
                    return 13;
                }
                // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) reads no memory.
                if unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) } != -1 {
                    return 12;
                }
                // A plain fork still works.
                // SAFETY: the grandchild only calls `_exit`.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: `_exit` never returns.
                    unsafe { libc::_exit(0) };
                }
                if pid < 0 {
                    return 13;
                }
                let mut status = 0;
                // SAFETY: `status` is a valid writable int.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                0
            })();
            crate::process::exit_immediately(code);
        }
        let status = crate::process::wait_child(child).unwrap();
        assert_eq!(status, crate::process::ExitStatus::Exited(0));
    }
}

//! Privilege attacks: becoming real root, regaining capabilities, the
//! kernel's dangerous interfaces, devices, and reaching the agent, the host's
//! processes or another sandbox's.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::json;

use crate::common::attack::{
    Recorder, one_line, probe, record_probe, sandbox_file, server_healthy, sh_as, upper_dir,
};
use crate::common::{Server, eventually};

/// Capabilities sandbox root may hold (see docs/design.md).
const ALLOWED_CAPS: u64 = (1 << 0) // CHOWN
    | (1 << 1) // DAC_OVERRIDE
    | (1 << 3) // FOWNER
    | (1 << 4) // FSETID
    | (1 << 5) // KILL
    | (1 << 6) // SETGID
    | (1 << 7) // SETUID
    | (1 << 8) // SETPCAP
    | (1 << 10) // NET_BIND_SERVICE
    | (1 << 18) // SYS_CHROOT
    | (1 << 29) // AUDIT_WRITE
    | (1 << 31); // SETFCAP

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn sandbox_root_is_an_unprivileged_stranger_on_the_host() {
    let mut rec = Recorder::new(
        "privilege",
        "sandbox_root_is_an_unprivileged_stranger_on_the_host",
    );
    let server = Server::start();
    let id = server.create("python");
    // Root inside is an ordinary id outside.
    let maps = sh_as(
        &server,
        &id,
        "root",
        "cat /proc/self/uid_map /proc/self/gid_map",
    );
    let maps = maps["stdout"].as_str().unwrap_or("").to_owned();
    let zero_maps_to_zero = maps.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 3 && f[0] == "0" && f[1] == "0"
    });
    rec.check(
        "sandbox root is host root (uid_map/gid_map)",
        "0 maps to an unprivileged host id",
        one_line(&maps, 120),
        !zero_maps_to_zero && !maps.is_empty(),
    );
    sh_as(
        &server,
        &id,
        "root",
        "touch /workspace/root-file; cp /usr/bin/id /workspace/suid-id; chmod 4755 /workspace/suid-id",
    );
    let upper = upper_dir(&server, &id).join("workspace");
    let owner = std::fs::metadata(upper.join("root-file"))
        .expect("the file in the writable layer on the host")
        .uid();
    rec.check(
        "files sandbox root creates belong to host root",
        "owned by the mapped, unprivileged host id",
        format!("host owner uid {owner}"),
        owner != 0,
    );
    let suid = std::fs::metadata(upper.join("suid-id"))
        .map(|m| (m.uid(), m.mode()))
        .expect("the planted binary in the writable layer on the host");
    rec.check(
        "plant a set-uid-root binary in the writable layer",
        "on the host it is set-uid to an unprivileged id only",
        format!("host owner {} mode {:o}", suid.0, suid.1 & 0o7777),
        suid.0 != 0,
    );
    let r = sh_as(
        &server,
        &id,
        "user",
        "/workspace/suid-id -u; /workspace/suid-id -un",
    );
    rec.check(
        "run the planted set-uid-root binary as the sandbox user",
        "still uid 1000 (nosuid, no_new_privs)",
        one_line(r["stdout"].as_str().unwrap_or(""), 80),
        r["stdout"].as_str().unwrap_or("").starts_with("1000\n"),
    );
    // Set-uid programs of the host's /usr.
    let r = sh_as(
        &server,
        &id,
        "user",
        "for p in su sudo mount passwd newgrp chsh; do b=$(command -v $p) || continue; \
         echo \"$p: $(timeout 5 $b --help >/dev/null 2>&1; echo rc=$?)\"; done; \
         echo | timeout 5 su -c 'id -u' root 2>&1; timeout 5 sudo -n id -u 2>&1; true",
    );
    let out = r["stdout"].as_str().unwrap_or("");
    rec.check(
        "become root through the host's set-uid programs (su, sudo)",
        "refused; nothing runs as uid 0",
        one_line(out, 200),
        !out.lines().any(|l| l.trim() == "0"),
    );
    // Rewriting /etc/passwd.
    let r = sh_as(
        &server,
        &id,
        "user",
        "echo 'r00t::0:0::/root:/bin/sh' >> /etc/passwd; echo rc=$?",
    );
    rec.check(
        "append a uid-0 account to /etc/passwd as the sandbox user",
        "permission denied",
        one_line(&r.to_string(), 160),
        !r["stdout"].as_str().unwrap_or("").contains("rc=0"),
    );
    sh_as(
        &server,
        &id,
        "root",
        "cp /etc/passwd /etc/passwd.bak; echo 'r00t::0:0::/root:/bin/sh' >> /etc/passwd",
    );
    let r = sh_as(
        &server,
        &id,
        "user",
        "echo | timeout 5 su r00t -c 'id -u' 2>&1; echo rc=$?",
    );
    rec.check(
        "after root adds a password-less uid-0 account, su to it as the user",
        "refused (su is not set-uid here)",
        one_line(r["stdout"].as_str().unwrap_or(""), 120),
        !r["stdout"]
            .as_str()
            .unwrap_or("")
            .lines()
            .any(|l| l.trim() == "0"),
    );
    sh_as(&server, &id, "root", "mv /etc/passwd.bak /etc/passwd");

    // Capabilities, for root and for the user.
    for user in ["root", "user"] {
        let st = sh_as(&server, &id, user, "cat /proc/self/status");
        let st = st["stdout"].as_str().unwrap_or("").to_owned();
        let eff = status_field(&st, "CapEff:");
        let bnd = status_field(&st, "CapBnd:");
        let amb = status_field(&st, "CapAmb:");
        let inh = status_field(&st, "CapInh:");
        let ok = if user == "root" {
            eff & !ALLOWED_CAPS == 0 && bnd & !ALLOWED_CAPS == 0 && amb == 0 && inh == 0
        } else {
            eff == 0 && amb == 0 && inh == 0 && bnd & !ALLOWED_CAPS == 0
        };
        rec.check(
            &format!("capabilities beyond the allowed set (as {user})"),
            "none: no SYS_ADMIN, NET_ADMIN, SYS_PTRACE, MKNOD, DAC_READ_SEARCH, ...",
            format!("CapEff {eff:016x} CapBnd {bnd:016x} CapAmb {amb:x} CapInh {inh:x}"),
            ok,
        );
        let nnp = st
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1'));
        let seccomp = st
            .lines()
            .any(|l| l.starts_with("Seccomp:") && l.ends_with('2'));
        rec.check(
            &format!("run without no_new_privs or seccomp (as {user})"),
            "NoNewPrivs 1, Seccomp 2",
            format!("no_new_privs {nnp}, seccomp filter {seccomp}"),
            nnp && seccomp,
        );
    }
    // File capabilities: root may write them; they give nothing.
    let caps_probe = r#"
import struct, shutil, subprocess
shutil.copy("/usr/bin/cat", "/workspace/capcat")
os.chmod("/workspace/capcat", 0o755)
want = (1 << 21) | (1 << 2) | (1 << 19)   # SYS_ADMIN, DAC_READ_SEARCH, SYS_PTRACE
xattr = struct.pack("<IIIII", 0x02000001, want, want, 0, 0)
ok, out = tryit(lambda: os.setxattr("/workspace/capcat", "security.capability", xattr))
row("write file capabilities (SYS_ADMIN, DAC_READ_SEARCH, SYS_PTRACE) on a binary", "allowed or refused", out if not ok else "written", False)
"#;
    let rows = probe(&server, &id, "root", &json!({}), caps_probe);
    record_probe(&mut rec, "root", &rows);
    let r = sh_as(&server, &id, "user", "/workspace/capcat /proc/self/status");
    let eff = status_field(r["stdout"].as_str().unwrap_or(""), "CapEff:");
    rec.check(
        "gain capabilities by running a binary with file capabilities",
        "CapEff stays 0",
        format!("CapEff {eff:016x}"),
        eff == 0,
    );
    let regain = r#"
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
ctypes.set_errno(0)
r = libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 21, 0, 0)
row("raise CAP_SYS_ADMIN into the ambient set", "EPERM", errno.errorcode.get(ctypes.get_errno(), r), r == 0)
ok, out = tryit(lambda: os.setuid(0))
row("setuid(0)", "refused for the user; a no-op for root", out, ok and os.geteuid() == 0 and P["user"] == "user")
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
ok, out = tryit(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 16, hard * 16)))
row("raise the hard descriptor limit", "EPERM (no CAP_SYS_RESOURCE)", out if not ok else f"raised above {hard}", ok)
ok, out = tryit(lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99)))
row("switch to real-time scheduling (SCHED_FIFO 99) to starve the host", "EPERM", out if not ok else "real-time", ok)
ok, out = tryit(lambda: os.setpriority(os.PRIO_PROCESS, 0, -20))
row("raise CPU priority (nice -20)", "EPERM", out if not ok else "nice -20", ok)
def exempt():
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")
    return rd("/proc/self/oom_score_adj").strip()
ok, out = tryit(exempt)
row("exempt itself from the out-of-memory killer (oom_score_adj -1000)", "refused", out if not ok else f"oom_score_adj now {out}", ok and out == "-1000")
"#;
    for user in ["root", "user"] {
        let rows = probe(&server, &id, user, &json!({"user": user}), regain);
        record_probe(&mut rec, user, &rows);
    }
    server.shutdown_and_check_clean();
    rec.finish();
}

/// System calls the seccomp filter and the missing capabilities refuse.
/// Each is called with arguments that would work if it were allowed, and
/// none that would do harm if it did (e.g. reboot's Ctrl-Alt-Del toggle).
const SYSCALL_PROBE: &str = r#"
import platform, struct
arch = platform.machine()
NR = {
 "x86_64": dict(keyctl=250, add_key=248, request_key=249, bpf=321, perf_event_open=298, userfaultfd=323,
   io_uring_setup=425, init_module=175, finit_module=313, delete_module=176, kexec_load=246, kexec_file_load=320,
   ptrace=101, mount=165, umount2=166, unshare=272, setns=308, pivot_root=155, open_by_handle_at=304,
   name_to_handle_at=303, fsopen=430, fsmount=432, open_tree=428, move_mount=429, fspick=433, mount_setattr=442,
   mknodat=259, swapon=167, swapoff=168, reboot=169, settimeofday=164, clock_settime=227, acct=163, syslog=103,
   process_vm_readv=310, process_vm_writev=311, pidfd_getfd=438, quotactl=179, sethostname=170,
   setdomainname=171, vhangup=153, kcmp=312, iopl=172, ioperm=173, lookup_dcookie=212, clone3=435),
 "aarch64": dict(keyctl=219, add_key=217, request_key=218, bpf=280, perf_event_open=241, userfaultfd=282,
   io_uring_setup=425, init_module=105, finit_module=273, delete_module=106, kexec_load=104, kexec_file_load=294,
   ptrace=117, mount=40, umount2=39, unshare=97, setns=268, pivot_root=41, open_by_handle_at=265,
   name_to_handle_at=264, fsopen=430, fsmount=432, open_tree=428, move_mount=429, fspick=433, mount_setattr=442,
   mknodat=33, swapon=224, swapoff=225, reboot=142, settimeofday=170, clock_settime=112, acct=89, syslog=116,
   process_vm_readv=270, process_vm_writev=271, pidfd_getfd=438, quotactl=60, sethostname=161,
   setdomainname=162, vhangup=58, kcmp=272, lookup_dcookie=18, clone3=435),
}.get(arch)
if NR is None:
    row("dangerous system calls", "refused", f"no syscall table for {arch}; skipped", False)
else:
    buf = ctypes.create_string_buffer(4096)
    s = lambda b: ctypes.c_char_p(b)
    bpf_attr = ctypes.create_string_buffer(struct.pack("<IIII", 1, 4, 4, 1) + b"\0" * 112)
    perf_attr = ctypes.create_string_buffer(struct.pack("<IIQ", 1, 128, 0) + b"\0" * 112)
    ts = ctypes.create_string_buffer(16)
    CLOCK_REALTIME = 0
    libc.clock_gettime(CLOCK_REALTIME, ts)
    uring = ctypes.create_string_buffer(120)
    nsfd = os.open("/proc/self/ns/user", os.O_RDONLY)
    nullfd = os.open("/dev/null", os.O_RDONLY)
    # One 8-byte iovec each way; the remote one at address 0, so that an
    # allowed call fails with EFAULT instead of touching the agent.
    local_iov = ctypes.create_string_buffer(struct.pack("<QQ", ctypes.addressof(buf), 8))
    remote_iov = ctypes.create_string_buffer(struct.pack("<QQ", 0, 8))
    clone_args = ctypes.create_string_buffer(struct.pack("<QQQQQQQQ", 0x10000000, 0, 0, 0, 17, 0, 0, 0))
    calls = [
        ("keyctl(JOIN_SESSION_KEYRING)", "keyctl", (1, 0)),
        ("add_key(user, session keyring)", "add_key", (s(b"user"), s(b"capsule"), s(b"x"), 1, -3)),
        ("request_key", "request_key", (s(b"user"), s(b"capsule"), 0, 0)),
        ("bpf(BPF_MAP_CREATE)", "bpf", (0, bpf_attr, 128)),
        ("perf_event_open(software clock, self)", "perf_event_open", (perf_attr, 0, -1, -1, 0)),
        ("userfaultfd", "userfaultfd", (0o2000000,)),
        ("io_uring_setup", "io_uring_setup", (4, uring)),
        ("init_module", "init_module", (buf, 16, s(b""))),
        ("finit_module(/dev/null)", "finit_module", (nullfd, s(b""), 0)),
        ("delete_module(loop)", "delete_module", (s(b"loop"), 0o4000)),
        ("kexec_load", "kexec_load", (0, 0, 0, 0)),
        ("kexec_file_load", "kexec_file_load", (nullfd, nullfd, 1, s(b""), 0)),
        ("ptrace(ATTACH, agent pid 1)", "ptrace", (16, 1, 0, 0)),
        ("mount(tmpfs on /mnt)", "mount", (s(b"none"), s(b"/mnt"), s(b"tmpfs"), 0, 0)),
        ("mount(bind / on /mnt)", "mount", (s(b"/"), s(b"/mnt"), 0, 4096, 0)),
        ("mount(remount / read-write)", "mount", (0, s(b"/usr"), 0, 32, 0)),
        ("umount2(/proc, detach)", "umount2", (s(b"/proc"), 2)),
        ("umount2(/usr, detach)", "umount2", (s(b"/usr"), 2)),
        ("unshare(CLONE_NEWUSER)", "unshare", (0x10000000,)),
        ("unshare(CLONE_NEWNS)", "unshare", (0x00020000,)),
        ("unshare(CLONE_NEWNET)", "unshare", (0x40000000,)),
        ("unshare(CLONE_NEWPID)", "unshare", (0x20000000,)),
        ("unshare(CLONE_NEWCGROUP)", "unshare", (0x02000000,)),
        ("unshare(CLONE_NEWTIME)", "unshare", (0x00000080,)),
        ("clone3(CLONE_NEWUSER)", "clone3", (clone_args, 64)),
        ("setns(own user namespace)", "setns", (nsfd, 0)),
        ("pivot_root", "pivot_root", (s(b"/tmp"), s(b"/tmp"))),
        ("name_to_handle_at(/)", "name_to_handle_at", (-100, s(b"/"), buf, buf, 0)),
        ("open_by_handle_at", "open_by_handle_at", (-100, buf, 0)),
        ("fsopen(tmpfs)", "fsopen", (s(b"tmpfs"), 0)),
        ("fspick(/)", "fspick", (-100, s(b"/"), 0)),
        ("open_tree(/, clone)", "open_tree", (-100, s(b"/"), 1)),
        ("move_mount", "move_mount", (-100, s(b"/tmp"), -100, s(b"/mnt"), 0)),
        ("mount_setattr(/usr, clear read-only)", "mount_setattr", (-100, s(b"/usr"), 0, buf, 32)),
        ("mknodat(block device 8:0)", "mknodat", (-100, s(b"/workspace/sda"), 0o60600, (8 << 8))),
        ("mknodat(/dev/mem 1:1)", "mknodat", (-100, s(b"/workspace/mem"), 0o20600, (1 << 8) | 1)),
        ("swapon", "swapon", (s(b"/workspace/swap"), 0)),
        ("swapoff", "swapoff", (s(b"/workspace/swap"),)),
        ("reboot(Ctrl-Alt-Del off)", "reboot", (0xfee1dead, 672274793, 0, 0)),
        ("settimeofday(NULL, NULL)", "settimeofday", (0, 0)),
        ("clock_settime(REALTIME, now)", "clock_settime", (CLOCK_REALTIME, ts)),
        ("acct(NULL)", "acct", (0,)),
        ("syslog(READ_ALL)", "syslog", (3, buf, 4096)),
        ("process_vm_readv(agent pid 1)", "process_vm_readv", (1, local_iov, 1, remote_iov, 1, 0)),
        ("process_vm_writev(agent pid 1)", "process_vm_writev", (1, local_iov, 1, remote_iov, 1, 0)),
        ("pidfd_getfd", "pidfd_getfd", (0, 0, 0)),
        ("quotactl", "quotactl", (0x800007, s(b"/"), 0, buf)),
        ("sethostname", "sethostname", (s(b"pwned"), 5)),
        ("setdomainname", "setdomainname", (s(b"pwned"), 5)),
        ("vhangup", "vhangup", ()),
        ("kcmp(agent pid 1)", "kcmp", (1, os.getpid(), 0, 0, 0)),
        ("lookup_dcookie", "lookup_dcookie", (0, buf, 16)),
        ("iopl(3)", "iopl", (3,)),
        ("ioperm(0x80)", "ioperm", (0x80, 1, 1)),
    ]
    for label, name, args in calls:
        if name not in NR:
            continue
        r, err = sys_call(NR[name], *args)
        # pidfd_getfd on fd 0 (not a pidfd) answers EBADF when allowed: still no gain.
        harmless = err in ("EBADF",) and name == "pidfd_getfd"
        # EFAULT means the permission check passed and only the address failed.
        reached = r >= 0 or (err == "EFAULT" and name.startswith("process_vm"))
        row(label, "refused (EPERM/EACCES/ENOSYS)", err, reached and not harmless)
    ok, out = tryit(lambda: __import__("subprocess").run(["unshare", "-Ur", "id", "-u"], capture_output=True, text=True, timeout=10))
    row("unshare -Ur (nested user namespace with root mapping)", "refused",
        (out.stdout + out.stderr).strip() if ok else out, ok and out.returncode == 0)
"#;

#[test]
fn dangerous_system_calls_are_refused() {
    let mut rec = Recorder::new("privilege", "dangerous_system_calls_are_refused");
    let server = Server::start();
    let id = server.create("python");
    for user in ["root", "user"] {
        let rows = probe(&server, &id, user, &json!({}), SYSCALL_PROBE);
        record_probe(&mut rec, user, &rows);
    }
    rec.check(
        "the server after the system call attacks",
        "healthy",
        format!("{}", server_healthy(&server)),
        server_healthy(&server),
    );
    server.shutdown_and_check_clean();
    rec.finish();
}

/// The kernel's configuration, the devices and the kernel's memory.
/// Writable things are only opened, never written: an `open` that works
/// is the escape, and nothing is changed even then.
const KERNEL_PROBE: &str = r#"
def try_open_write(path):
    fd = os.open(path, os.O_WRONLY)
    os.close(fd)
    return "opened for writing"
for path, why in [
    ("/proc/sys/kernel/core_pattern", "a core_pattern pipe runs as host root"),
    ("/proc/sys/kernel/modprobe", "the module loader runs as host root"),
    ("/proc/sys/vm/swappiness", "host-wide memory tuning"),
    ("/proc/sys/kernel/hostname", "the host's name"),
    ("/proc/sys/net/ipv4/ip_forward", "routing"),
    ("/proc/sysrq-trigger", "sysrq reboots or crashes the host"),
    ("/proc/sys/fs/binfmt_misc/register", "a binfmt handler runs as host root"),
    ("/sys/kernel/uevent_helper", "the hotplug helper runs as host root"),
    ("/sys/kernel/mm/transparent_hugepage/enabled", "host-wide memory tuning"),
    ("/sys/power/state", "suspends the host"),
    ("/sys/class/net/lo/mtu", "network devices"),
    ("/sys/fs/cgroup/cgroup.procs", "the host's cgroup tree"),
    ("/proc/1/oom_score_adj", "the agent's OOM protection"),
    ("/proc/1/mem", "the agent's memory"),
]:
    ok, out = tryit(lambda p=path: try_open_write(p))
    row(f"open {path} for writing ({why})", "refused or absent", out, ok)

for path in ("/proc/kcore", "/proc/kmsg", "/dev/kmsg", "/dev/mem", "/dev/kmem", "/dev/port", "/proc/1/environ",
             "/proc/1/mem", "/proc/1/maps", "/sys/firmware/efi/efivars", "/proc/self/../1/environ"):
    ok, out = tryit(lambda p=path: rd(p, 64))
    row(f"read {path}", "refused, absent or empty", out if not ok else f"read {len(out)} bytes", ok and len(out) > 0)

ok, out = tryit(lambda: rd("/proc/kallsyms", 1 << 16))
addrs = [l.split()[0] for l in out.splitlines()[:2000]] if ok else []
nonzero = [a for a in addrs if a.strip("0")]
row("read kernel addresses from /proc/kallsyms", "all zero (KASLR kept)", f"{len(nonzero)} non-zero of {len(addrs)}", bool(nonzero))

bad = []
for dirpath, dirs, files in os.walk("/dev"):
    for name in dirs + files:
        p = os.path.join(dirpath, name)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        import stat as S
        if S.S_ISBLK(st.st_mode):
            bad.append(f"{p} (block {os.major(st.st_rdev)}:{os.minor(st.st_rdev)})")
        elif S.S_ISCHR(st.st_mode):
            dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if dev not in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] and os.major(st.st_rdev) != 136:
                bad.append(f"{p} (char {dev[0]}:{dev[1]})")
row("find raw disks or kernel devices in /dev", "only null, zero, full, random, urandom, tty, ptmx, pts",
    f"found {bad}" if bad else "none", bool(bad))
ok, out = tryit(lambda: rd("/proc/self/cgroup"))
row("see the host's cgroup tree (/proc/self/cgroup)", "every hierarchy at its root (cgroup namespace)", out.strip(),
    ok and any(not l.endswith(":/") for l in out.strip().splitlines()))
ok, out = tryit(lambda: os.listdir("/sys/fs/cgroup"))
row("list the host's cgroups under /sys/fs/cgroup", "empty or absent", out if not ok else f"{len(out)} entries", ok and len(out) > 0)
ok, out = tryit(lambda: os.listdir("/sys/kernel/debug"))
row("list /sys/kernel/debug (debugfs)", "empty or refused", out if not ok else f"{len(out)} entries", ok and len(out) > 0)
"#;

#[test]
fn kernel_interfaces_and_devices_stay_closed() {
    let mut rec = Recorder::new("privilege", "kernel_interfaces_and_devices_stay_closed");
    let knobs = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/swappiness",
        "/proc/sys/kernel/hostname",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ];
    let before: Vec<String> = knobs
        .iter()
        .map(|k| std::fs::read_to_string(k).unwrap_or_default())
        .collect();
    let server = Server::start();
    let id = server.create("python");
    for user in ["root", "user"] {
        let rows = probe(&server, &id, user, &json!({}), KERNEL_PROBE);
        record_probe(&mut rec, user, &rows);
    }
    // Shell-level attempts that write (they must fail before anything changes).
    for (what, script) in [
        (
            "echo to /proc/sys/vm/swappiness",
            "echo 77 > /proc/sys/vm/swappiness",
        ),
        (
            "echo to /proc/sysrq-trigger",
            "echo h > /proc/sysrq-trigger",
        ),
        ("mknod /dev/sda-like node", "mknod /workspace/disk b 8 0"),
        (
            "mount /proc/sys read-write again",
            "mount -o remount,rw /proc/sys",
        ),
        ("mount a cgroup2 hierarchy", "mount -t cgroup2 none /mnt"),
        ("dmesg", "dmesg"),
        ("sysctl -w", "sysctl -w kernel.hostname=pwned"),
    ] {
        let r = sh_as(
            &server,
            &id,
            "root",
            &format!("{script} >/dev/null 2>&1; echo rc=$?"),
        );
        let out = r["stdout"].as_str().unwrap_or("");
        rec.check(
            &format!("{what} (as root)"),
            "fails",
            one_line(out, 80),
            !out.contains("rc=0\n"),
        );
    }
    let after: Vec<String> = knobs
        .iter()
        .map(|k| std::fs::read_to_string(k).unwrap_or_default())
        .collect();
    rec.check(
        "host kernel settings after the attacks (core_pattern, modprobe, swappiness, hostname, THP)",
        "unchanged",
        if before == after {
            "unchanged".to_owned()
        } else {
            format!("changed: {before:?} -> {after:?}")
        },
        before == after,
    );
    server.shutdown_and_check_clean();
    rec.finish();
}

const PROCESS_PROBE: &str = r#"
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cmdlines = {}
for pid in pids:
    ok, out = tryit(lambda p=pid: rd(f"/proc/{p}/cmdline"))
    cmdlines[pid] = out.replace("\0", " ") if ok else ""
me = {os.getpid(), os.getppid()}
state = P["state_rev"][::-1]
hostly = [f"{p}: {c[:60]}" for p, c in cmdlines.items()
          if p not in me and (state in c or "capsule serve" in c or "systemd" in c or "sshd" in c)]
row("see host processes (the server, systemd, sshd) in /proc", "only the sandbox's own",
    f"visible: {hostly}" if hostly else f"{len(pids)} processes, all the sandbox's", bool(hostly))
for what, fn in [
    ("read the agent's environment (/proc/1/environ)", lambda: rd("/proc/1/environ")),
    ("read the agent's memory map (/proc/1/maps)", lambda: rd("/proc/1/maps")),
    ("list the agent's descriptors (/proc/1/fd)", lambda: os.listdir("/proc/1/fd")),
    ("read the agent's working directory (/proc/1/cwd)", lambda: os.listdir("/proc/1/cwd")),
    ("open the agent's memory (/proc/1/mem)", lambda: open("/proc/1/mem", "rb").read(1)),
]:
    ok, out = tryit(fn)
    row(what, "permission denied (the agent is not dumpable)", out if not ok else "allowed", ok)
ok, out = tryit(lambda: os.kill(P["host_pid"], 0))
row(f"signal a host process by its host pid ({P['host_pid']})", "no such process", out if not ok else "reachable", ok)
ok, out = tryit(lambda: os.kill(1, 9))
alive = os.path.exists("/proc/1")
row("SIGKILL the agent (pid 1)", "refused or ignored: the agent survives", f"{out if not ok else 'sent'}; agent alive: {alive}", not alive)
ok, out = tryit(lambda: os.kill(1, 19))
time.sleep(0.2)
state = rd("/proc/1/stat").split()[2] if os.path.exists("/proc/1/stat") else "?"
ok2, _ = tryit(lambda: os.kill(1, 18))
row("SIGSTOP the agent (pid 1)", "refused or ignored: the agent keeps running", f"{out if not ok else 'sent'}; state {state}", state == "T")
"#;

#[test]
fn the_agent_host_processes_and_neighbours_are_out_of_reach() {
    let mut rec = Recorder::new(
        "privilege",
        "the_agent_host_processes_and_neighbours_are_out_of_reach",
    );
    let server = Server::start();
    let id = server.create("python");
    let neighbour = server.create("base");
    let doomed = server.create("base");
    server.sh(
        &neighbour,
        "(exec -a neighbour-sleeper sleep 300) >/dev/null 2>&1 &",
    );
    let params = json!({
        "state_rev": server.state.display().to_string().chars().rev().collect::<String>(),
        "host_pid": std::process::id(),
    });
    for user in ["user", "root"] {
        let rows = probe(&server, &id, user, &params, PROCESS_PROBE);
        record_probe(&mut rec, user, &rows);
        let alive = server.exec(&id, json!(["true"]))["exit_code"] == 0;
        rec.check(
            &format!("the agent after SIGKILL and SIGSTOP from {user}"),
            "still serving",
            format!("exec works: {alive}"),
            alive,
        );
    }
    // Killing everything it can see reaches only its own processes.
    let r = server.rpc(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "kill -9 -1; echo sent", "user": "root", "timeout_ms": 10000}),
    );
    let r = if r["result"].is_object() {
        r["result"].clone()
    } else {
        r["error"].clone()
    };
    let neighbour_alive = server.sh(&neighbour, "pgrep -c -f neighbour-sleeper")["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        == "1";
    rec.check(
        "kill -9 -1 as sandbox root (every process it can signal)",
        "only its own processes die; the neighbour and the host live",
        format!(
            "{}; neighbour's process alive: {neighbour_alive}; server healthy: {}",
            one_line(&r.to_string(), 60),
            server_healthy(&server)
        ),
        neighbour_alive && server_healthy(&server),
    );
    // SIGTERM to the agent ends that sandbox, and only that one.
    let _ = server.rpc(
        "sandbox.v1.exec",
        json!({"id": doomed, "cmd": "kill -TERM 1; sleep 5", "user": "root", "timeout_ms": 8000}),
    );
    let ended = eventually(Duration::from_secs(10), || {
        server.rpc("sandbox.v1.get", json!({"id": doomed}))["result"]["state"] != "running"
    });
    let state = server.rpc("sandbox.v1.get", json!({"id": doomed}))["result"]["state"].clone();
    let others = server.exec(&neighbour, json!(["true"]))["exit_code"] == 0
        && server.exec(&id, json!(["true"]))["exit_code"] == 0;
    rec.check(
        "SIGTERM the agent as sandbox root",
        "ends that sandbox only (it is reported, its resources freed); others and the server unaffected",
        format!("sandbox state {state}; others serve: {others}; server healthy: {}", server_healthy(&server)),
        others && server_healthy(&server),
    );
    if ended {
        // Deleting a failed sandbox frees what is left of it.
        let _ = server.rpc("sandbox.v1.delete", json!({"id": doomed}));
    }
    server.shutdown_and_check_clean();
    rec.finish();
}

const DESCRIPTOR_PROBE: &str = r#"
foreign, checked = [], 0
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        link = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(link)
            st = os.stat(link)
        except OSError:
            continue
        checked += 1
        if not target.startswith("/"):
            continue
        try:
            st2 = os.stat(target)
            same = (st2.st_dev, st2.st_ino) == (st.st_dev, st.st_ino)
        except OSError:
            same = False
        if not same and not target.startswith(f"/proc/{pid}/"):
            foreign.append(f"{pid}/{fd} -> {target}")
row("find an open descriptor of a sandbox process that points outside the sandbox", "none",
    f"{checked} descriptors checked; foreign: {foreign}" if foreign else f"{checked} descriptors checked, none foreign", bool(foreign))
ok, out = tryit(lambda: rd("/proc/net/unix", 1 << 20))
paths = [l.split()[-1] for l in out.splitlines()[1:] if len(l.split()) >= 8] if ok else []
row("find the agent's socket in /proc/net/unix", "not in the sandbox's network namespace",
    f"{len(paths)} named sockets: {paths[:5]}", any("agent.sock" in p for p in paths))
found = []
for dirpath, dirs, files in os.walk("/"):
    if dirpath in ("/proc", "/sys", "/usr", "/dev"):
        dirs[:] = []
        continue
    for f in files:
        if f == "agent.sock" or f == "state.db" or f == "agent.log":
            found.append(os.path.join(dirpath, f))
row("find the agent's socket, log or the server's database by name", "none inside", f"found {found}" if found else "none", bool(found))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ok, out = tryit(lambda: s.connect(P["socket"]))
row("connect to the agent's socket by its host path", "does not exist inside", out if not ok else "connected", ok)
"#;

#[test]
fn inherited_descriptors_and_the_agent_socket_lead_nowhere() {
    let mut rec = Recorder::new(
        "privilege",
        "inherited_descriptors_and_the_agent_socket_lead_nowhere",
    );
    let server = Server::start();
    let id = server.create("python");
    // Some long-lived processes of both users, a kernel of the interpreter too.
    server.sh(&id, "sleep 120 >/dev/null 2>&1 &");
    sh_as(&server, &id, "root", "sleep 120 >/dev/null 2>&1 &");
    let _ = server.rpc(
        "sandbox.v1.runCode",
        json!({"id": id, "code": "x = 1", "language": "python"}),
    );
    let params = json!({
        "socket": sandbox_file(&server, &id, "agent.sock").display().to_string(),
    });
    for user in ["root", "user"] {
        let rows = probe(&server, &id, user, &params, DESCRIPTOR_PROBE);
        record_probe(&mut rec, user, &rows);
    }
    server.shutdown_and_check_clean();
    rec.finish();
}

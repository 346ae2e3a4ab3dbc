//! The sandbox as an OCI bundle's `config.json`: the same sandbox the
//! native backend builds (overlay root, read-only system directories,
//! minimal `/dev`, memory-backed `/tmp`, user namespace onto an
//! unprivileged host range, reduced capabilities, seccomp deny-list, cgroup
//! limits), with the agent as the container's init.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use capsule_sys::seccomp::{DENY_LIST, Rule};
use capsule_sys::userns::{IdMapping, IdRange};
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use super::flavor::OciFlavor;

/// The agent binary inside the sandbox (bound read-only from the host).
pub const AGENT_PATH: &str = "/run/capsule-agent";
/// The directory shared with the host that holds the agent's socket.
pub const SOCKET_DIR: &str = "/run/capsule";
/// The agent's socket inside the sandbox.
pub const SOCKET_PATH: &str = "/run/capsule/agent.sock";
/// The sandbox's root directory, relative to the bundle.
pub const ROOTFS: &str = "rootfs";

/// The CFS period CPU limits are expressed in.
const CPU_PERIOD_US: u64 = 100_000;

/// Host tasks gVisor needs beside the sandbox's own: the Sentry's and the
/// gofer's threads (about 140 when idle). The pids cgroup counts them all.
pub const RUNSC_PIDS_HEADROOM: u64 = 512;

/// `CLONE_NEW*` flags unshare and clone may not carry (as in the native
/// seccomp policy, which keeps its list private to its BPF compiler).
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

/// Everything that differs between bundles.
#[derive(Debug, Clone)]
pub struct BundleParams<'a> {
    pub flavor: OciFlavor,
    pub hostname: &'a str,
    /// The environment every process starts with.
    pub env: &'a BTreeMap<String, String>,
    pub mapping: &'a IdMapping,
    /// Host directories bound read-only at the same path.
    pub binds: &'a [PathBuf],
    /// Host directory mounted at [`SOCKET_DIR`].
    pub socket_dir: &'a Path,
    /// Host path of the agent binary.
    pub agent: &'a Path,
    /// The user requests act as by default.
    pub default_user: &'a str,
    pub memory_bytes: u64,
    /// Limit swap as well (the host accounts for it).
    pub limit_swap: bool,
    pub cpu: f64,
    pub pids: u64,
    pub tmp_bytes: u64,
    pub shm_bytes: u64,
    /// `linux.cgroupsPath`, relative to the cgroup roots.
    pub cgroups_path: Option<&'a str>,
}

fn build_error(what: &str) -> impl FnOnce(OciSpecError) -> String + '_ {
    move |e| format!("building the OCI {what}: {e}")
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(build_error("mounts"))
}

fn id_mappings(ranges: &[IdRange]) -> Result<Vec<LinuxIdMapping>, String> {
    ranges
        .iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.inside)
                .host_id(r.outside)
                .size(r.count)
                .build()
                .map_err(build_error("id mappings"))
        })
        .collect()
}

/// The capabilities sandbox root keeps: the native backend's set.
fn capabilities() -> Result<HashSet<Capability>, String> {
    capsule_sys::caps::sandbox_root_set()
        .iter_names()
        .map(|(name, _)| {
            Capability::from_str(name).map_err(|_| format!("unknown capability {name}"))
        })
        .collect()
}

/// The native backend's seccomp deny-list in OCI form, for `flavor`.
///
/// gVisor (release 20221219, Debian 12's) answers every rule with EPERM
/// whatever its `errnoRet`, and matches every `clone` against a rule with
/// argument conditions; either would stop threads from starting (libc
/// falls back from `clone3` to `clone` only on ENOSYS). So runsc sandboxes
/// get neither the `clone3` rule nor the `clone` flag rules. `unshare`
/// keeps its rules, which gVisor evaluates correctly, and sandbox root
/// lacks the capabilities for any namespace but a user namespace, which
/// lives inside gVisor's kernel.
pub fn seccomp(flavor: OciFlavor) -> Result<LinuxSeccomp, String> {
    let runsc = flavor == OciFlavor::Runsc;
    let arch = match std::env::consts::ARCH {
        "x86_64" => Arch::ScmpArchX86_64,
        "aarch64" => Arch::ScmpArchAarch64,
        other => return Err(format!("seccomp: unsupported architecture {other}")),
    };
    // Each argument test is (index, mask, value): `arg & mask == value`.
    let deny =
        |name: &str, errno: i32, args: Vec<(usize, u64, u64)>| -> Result<LinuxSyscall, String> {
            let mut b = LinuxSyscallBuilder::default()
                .names(vec![name.to_owned()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(errno as u32);
            if !args.is_empty() {
                let args = args
                    .into_iter()
                    .map(|(index, mask, value)| {
                        LinuxSeccompArgBuilder::default()
                            .index(index)
                            .value(mask)
                            .value_two(value)
                            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                            .build()
                            .map_err(build_error("seccomp rules"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                b = b.args(args);
            }
            b.build().map_err(build_error("seccomp rules"))
        };
    let mut syscalls = Vec::new();
    for &(name, _, rule) in DENY_LIST {
        match rule {
            Rule::Deny => syscalls.push(deny(name, libc::EPERM, vec![])?),
            // One rule per flag: the arguments of one rule must all match.
            Rule::DenyNamespaceFlags { .. } if runsc && name == "clone" => {}
            Rule::DenyNamespaceFlags { arg } => {
                for flag in NAMESPACE_FLAGS {
                    syscalls.push(deny(
                        name,
                        libc::EPERM,
                        vec![(usize::from(arg), flag, flag)],
                    )?);
                }
            }
            // The low 32 bits (ioctl request numbers), compared exactly.
            Rule::DenyValues { arg, values } => {
                for &value in values {
                    syscalls.push(deny(
                        name,
                        libc::EPERM,
                        vec![(usize::from(arg), u64::from(u32::MAX), u64::from(value))],
                    )?);
                }
            }
        }
    }
    if !runsc {
        // clone3 hides its flags in memory; ENOSYS makes libc use clone.
        syscalls.push(deny("clone3", libc::ENOSYS, vec![])?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![arch])
        .syscalls(syscalls)
        .build()
        .map_err(build_error("seccomp profile"))
}

/// Builds the bundle's configuration.
pub fn config(p: &BundleParams<'_>) -> Result<Spec, String> {
    let caps = capabilities()?;
    let mut env: Vec<String> = p.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !p.env.contains_key("PATH") {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let single_id = !p.mapping.maps_uid(super::SANDBOX_USER_ID);
    let mut args = vec![
        AGENT_PATH.to_owned(),
        "--socket".into(),
        SOCKET_PATH.into(),
        "--user".into(),
        p.default_user.to_owned(),
        "--inherit-env".into(),
    ];
    if single_id {
        args.push("--single-id".into());
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(build_error("user"))?,
        )
        .args(args)
        .env(env)
        .cwd("/")
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()
                .map_err(build_error("capabilities"))?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(4096u64)
                .hard(8192u64)
                .build()
                .map_err(build_error("rlimits"))?,
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitCore)
                .soft(0u64)
                .hard(0u64)
                .build()
                .map_err(build_error("rlimits"))?,
        ])
        .no_new_privileges(true)
        .build()
        .map_err(build_error("process"))?;

    let tmp_size = format!("size={}", p.tmp_bytes);
    let shm_size = format!("size={}", p.shm_bytes);
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &tmp_size],
        )?,
    ];
    for bind in p.binds {
        let path = bind.to_string_lossy();
        mounts.push(mount(
            &path,
            "bind",
            &path,
            &["rbind", "ro", "nosuid", "nodev"],
        )?);
    }
    mounts.push(mount(
        SOCKET_DIR,
        "bind",
        &p.socket_dir.to_string_lossy(),
        &["bind", "rw", "nosuid", "nodev", "noexec"],
    )?);
    mounts.push(mount(
        AGENT_PATH,
        "bind",
        &p.agent.to_string_lossy(),
        &["bind", "ro", "nosuid", "nodev"],
    )?);

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::User,
    ];
    if p.flavor != OciFlavor::Runsc {
        // gVisor has no cgroup namespace; its Sentry shows no host cgroups.
        namespaces.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| {
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(build_error("namespaces"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let memory = i64::try_from(p.memory_bytes).unwrap_or(i64::MAX);
    let mut memory_limits = LinuxMemoryBuilder::default().limit(memory);
    if p.limit_swap {
        // Memory plus swap: no swap at all.
        memory_limits = memory_limits.swap(memory);
    }
    let quota = ((p.cpu * CPU_PERIOD_US as f64).round() as i64).max(1000);
    let pids = match p.flavor {
        OciFlavor::Runsc => p.pids.saturating_add(RUNSC_PIDS_HEADROOM),
        OciFlavor::Runc | OciFlavor::Crun => p.pids,
    };
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .map_err(build_error("device rules"))?,
        ])
        .memory(memory_limits.build().map_err(build_error("memory limit"))?)
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(build_error("CPU limit"))?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(pids).unwrap_or(i64::MAX))
                .build()
                .map_err(build_error("pids limit"))?,
        )
        .build()
        .map_err(build_error("resources"))?;

    let mut linux = LinuxBuilder::default()
        .uid_mappings(id_mappings(&p.mapping.uids)?)
        .gid_mappings(id_mappings(&p.mapping.gids)?)
        .namespaces(namespaces)
        .resources(resources)
        .seccomp(seccomp(p.flavor)?)
        .rootfs_propagation("private")
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths());
    if let Some(path) = p.cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(path));
    }
    let linux = linux.build().map_err(build_error("linux section"))?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(ROOTFS)
                .readonly(false)
                .build()
                .map_err(build_error("root"))?,
        )
        .hostname(p.hostname)
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .build()
        .map_err(build_error("configuration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(
        env: &'a BTreeMap<String, String>,
        mapping: &'a IdMapping,
        binds: &'a [PathBuf],
    ) -> BundleParams<'a> {
        BundleParams {
            flavor: OciFlavor::Runc,
            hostname: "capsule",
            env,
            mapping,
            binds,
            socket_dir: Path::new("/state/sandboxes/abc/run"),
            agent: Path::new("/state/agent/capsule-agent-1"),
            default_user: "user",
            memory_bytes: 256 << 20,
            limit_swap: true,
            cpu: 0.5,
            pids: 128,
            tmp_bytes: 64 << 20,
            shm_bytes: 64 << 20,
            cgroups_path: Some("/capsule-oci-x/abc"),
        }
    }

    #[test]
    fn the_bundle_isolates_like_a_native_sandbox() {
        let env: BTreeMap<String, String> = [("LANG".to_owned(), "C.UTF-8".to_owned())].into();
        let mapping = IdMapping::rooted(1_500_000_000);
        let binds = vec![PathBuf::from("/usr")];
        let spec = config(&params(&env, &mapping, &binds)).unwrap();
        let json = serde_json::to_value(&spec).unwrap();

        let process = &json["process"];
        assert_eq!(process["args"][0], AGENT_PATH);
        assert_eq!(process["user"]["uid"], 0);
        assert_eq!(process["noNewPrivileges"], true);
        let env: Vec<&str> = process["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"LANG=C.UTF-8"));
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        let bounding: Vec<&str> = process["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(bounding.contains(&"CAP_SETUID"));
        assert!(!bounding.contains(&"CAP_SYS_ADMIN"));
        assert!(!bounding.contains(&"CAP_NET_RAW"));

        let linux = &json["linux"];
        assert_eq!(linux["uidMappings"][0]["hostID"], 1_500_000_000u32);
        assert_eq!(linux["uidMappings"][0]["containerID"], 0);
        assert_eq!(linux["resources"]["memory"]["limit"], 256 << 20);
        assert_eq!(linux["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(linux["resources"]["pids"]["limit"], 128);
        assert_eq!(linux["cgroupsPath"], "/capsule-oci-x/abc");
        let namespaces: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for ns in ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"] {
            assert!(namespaces.contains(&ns), "{ns} namespace missing");
        }
        assert!(
            linux["maskedPaths"]
                .as_array()
                .unwrap()
                .contains(&"/proc/kcore".into())
        );

        let mounts = json["mounts"].as_array().unwrap();
        let find = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).unwrap();
        assert_eq!(find("/usr")["options"][1], "ro");
        assert_eq!(find(SOCKET_DIR)["source"], "/state/sandboxes/abc/run");
        assert_eq!(find(AGENT_PATH)["options"][1], "ro");
        assert!(
            find("/tmp")["options"]
                .as_array()
                .unwrap()
                .contains(&format!("size={}", 64 << 20).into())
        );
    }

    #[test]
    fn seccomp_denies_what_native_denies() {
        let profile = serde_json::to_value(seccomp(OciFlavor::Runc).unwrap()).unwrap();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = profile["syscalls"].as_array().unwrap();
        for (name, _, rule) in DENY_LIST {
            let matching: Vec<_> = rules.iter().filter(|r| r["names"][0] == *name).collect();
            match rule {
                Rule::Deny => {
                    assert_eq!(matching.len(), 1, "{name}");
                    assert_eq!(matching[0]["errnoRet"], libc::EPERM);
                    assert!(matching[0].get("args").is_none());
                }
                Rule::DenyNamespaceFlags { .. } => {
                    assert_eq!(matching.len(), NAMESPACE_FLAGS.len(), "{name}");
                    assert_eq!(matching[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
                }
                Rule::DenyValues { values, .. } => {
                    assert_eq!(matching.len(), values.len(), "{name}");
                    assert_eq!(matching[0]["args"][0]["value"], u64::from(u32::MAX));
                    assert_eq!(matching[0]["args"][0]["valueTwo"], u64::from(values[0]));
                }
            }
        }
        assert!(rules.iter().any(|r| r["names"][0] == "clone3"));
        let runsc = serde_json::to_value(seccomp(OciFlavor::Runsc).unwrap()).unwrap();
        let runsc = runsc["syscalls"].as_array().unwrap();
        assert!(
            !runsc
                .iter()
                .any(|r| r["names"][0] == "clone" || r["names"][0] == "clone3"),
            "runsc sandboxes have no clone rules"
        );
        assert!(runsc.iter().any(|r| r["names"][0] == "unshare"));
        assert!(runsc.iter().any(|r| r["names"][0] == "mount"));
    }

    #[test]
    fn runsc_gets_no_cgroup_namespace_and_single_id_sandboxes_say_so() {
        let env = BTreeMap::new();
        let mapping = IdMapping {
            uids: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            gids: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            method: capsule_sys::userns::MapMethod::SelfOnly,
        };
        let mut p = params(&env, &mapping, &[]);
        p.flavor = OciFlavor::Runsc;
        let json = serde_json::to_value(config(&p).unwrap()).unwrap();
        assert_eq!(
            json["linux"]["resources"]["pids"]["limit"],
            128 + RUNSC_PIDS_HEADROOM
        );
        assert!(
            !json["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "cgroup")
        );
        assert!(
            json["process"]["args"]
                .as_array()
                .unwrap()
                .contains(&"--single-id".into())
        );
    }
}

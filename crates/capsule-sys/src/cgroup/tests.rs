use std::fs;
use std::path::Path;

use super::*;

const HYBRID_MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
36 30 0:32 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
";

const HYBRID_SELF: &str = "\
6:freezer:/
5:pids:/
4:cpu,cpuacct:/
3:memory:/session/abc
2:name=systemd:/
0::/
";

const V2_MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
";

#[test]
fn hybrid_hosts_are_v1_with_one_dir_per_hierarchy() {
    let cg =
        Cgroups::from_host_text(HYBRID_MOUNTINFO, HYBRID_SELF, Path::new("/"), "capsule").unwrap();
    assert_eq!(cg.version, Version::V1);
    assert_eq!(cg.hierarchies.len(), 4, "{cg:?}");
    let memory = cg
        .hierarchies
        .iter()
        .find(|h| h.controllers.contains("memory"))
        .unwrap();
    assert_eq!(
        memory.parent,
        Path::new("/sys/fs/cgroup/memory/session/abc/capsule")
    );
    let cpu = cg
        .hierarchies
        .iter()
        .find(|h| h.controllers.contains("cpu"))
        .unwrap();
    assert!(cpu.controllers.contains("cpuacct"));
    assert_eq!(cpu.parent, Path::new("/sys/fs/cgroup/cpu,cpuacct/capsule"));
    assert!(!cg.controllers().contains("name=systemd"));
}

/// A fake unified hierarchy: the files a real cgroup2 mount would show.
fn fake_v2_tree(root: &Path, own: &str) {
    let mount = root.join("sys/fs/cgroup");
    fs::create_dir_all(mount.join(own.trim_start_matches('/'))).unwrap();
    fs::write(
        mount.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )
    .unwrap();
    fs::write(mount.join("cgroup.subtree_control"), "").unwrap();
    fs::write(
        mount
            .join(own.trim_start_matches('/'))
            .join("cgroup.subtree_control"),
        "",
    )
    .unwrap();
}

#[test]
fn v2_enables_controllers_and_writes_limits() {
    let tmp = tempfile::tempdir().unwrap();
    fake_v2_tree(tmp.path(), "/user.slice/capsule.service");
    let cg = Cgroups::from_host_text(
        V2_MOUNTINFO,
        "0::/user.slice/capsule.service\n",
        tmp.path(),
        "capsule",
    )
    .unwrap();
    assert_eq!(cg.version, Version::V2);
    let h = &cg.hierarchies[0];
    assert_eq!(
        h.controllers,
        ["cpu", "memory", "pids"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    cg.prepare().unwrap();
    let own = tmp.path().join("sys/fs/cgroup/user.slice/capsule.service");
    assert_eq!(
        fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
        "+memory +cpu +pids"
    );
    assert_eq!(
        fs::read_to_string(own.join("capsule/cgroup.subtree_control")).unwrap(),
        "+memory +cpu +pids"
    );

    let limits = Limits {
        memory_bytes: Some(512 << 20),
        cpu_quota_us: Some(150_000),
        cpu_period_us: 100_000,
        pids_max: Some(256),
    };
    let sandbox = cg.create("abc12345", &limits).unwrap();
    let dir = own.join("capsule/abc12345");
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap(),
        "536870912"
    );
    assert_eq!(
        fs::read_to_string(dir.join("cpu.max")).unwrap(),
        "150000 100000"
    );
    assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "256");
    assert_eq!(sandbox.procs_files(), vec![dir.join("cgroup.procs")]);
    assert_eq!(
        cg.existing().into_iter().collect::<Vec<_>>(),
        vec!["abc12345".to_owned()]
    );

    // Freezing, killing and usage go through the v2 files.
    sandbox.set_frozen(true).unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "1");
    fs::write(dir.join("cgroup.kill"), "").unwrap();
    sandbox.kill_all().unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.kill")).unwrap(), "1");
    fs::write(dir.join("memory.current"), "1048576\n").unwrap();
    fs::write(dir.join("memory.peak"), "2097152\n").unwrap();
    fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
    fs::write(dir.join("pids.current"), "3\n").unwrap();
    let stats = sandbox.stats();
    assert_eq!(stats.memory_bytes, Some(1 << 20));
    assert_eq!(stats.memory_peak_bytes, Some(2 << 20));
    assert_eq!(stats.cpu_usage_ns, Some(1_500_000));
    assert_eq!(stats.pids, Some(3));

    // A warm pool's sandbox yields the CPU until it is claimed.
    sandbox.set_background(true).unwrap();
    assert_eq!(fs::read_to_string(dir.join("cpu.weight")).unwrap(), "1");
    sandbox.set_background(false).unwrap();
    assert_eq!(fs::read_to_string(dir.join("cpu.weight")).unwrap(), "100");

    sandbox.remove().unwrap();
    assert!(!dir.exists());
    assert!(cg.existing().is_empty());
}

#[test]
fn v2_already_enabled_controllers_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    fake_v2_tree(tmp.path(), "/");
    fs::write(
        tmp.path().join("sys/fs/cgroup/cgroup.subtree_control"),
        "cpu memory pids\n",
    )
    .unwrap();
    let cg = Cgroups::from_host_text(V2_MOUNTINFO, "0::/\n", tmp.path(), "capsule").unwrap();
    cg.prepare().unwrap();
    assert_eq!(
        fs::read_to_string(tmp.path().join("sys/fs/cgroup/cgroup.subtree_control")).unwrap(),
        "cpu memory pids\n"
    );
    assert_eq!(
        cg.hierarchies[0].parent,
        tmp.path().join("sys/fs/cgroup/capsule")
    );
}

#[test]
fn v1_limits_go_to_each_controller() {
    let tmp = tempfile::tempdir().unwrap();
    for d in [
        "memory/session/abc",
        "cpu,cpuacct",
        "pids",
        "freezer",
        "unified",
    ] {
        fs::create_dir_all(tmp.path().join("sys/fs/cgroup").join(d)).unwrap();
    }
    let cg = Cgroups::from_host_text(HYBRID_MOUNTINFO, HYBRID_SELF, tmp.path(), "capsule").unwrap();
    cg.prepare().unwrap();
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        cpu_quota_us: Some(50_000),
        cpu_period_us: 100_000,
        pids_max: Some(32),
    };
    let sandbox = cg.create("zz999999", &limits).unwrap();
    let base = tmp.path().join("sys/fs/cgroup");
    assert_eq!(
        fs::read_to_string(base.join("memory/session/abc/capsule/zz999999/memory.limit_in_bytes"))
            .unwrap(),
        "67108864"
    );
    assert_eq!(
        fs::read_to_string(base.join("cpu,cpuacct/capsule/zz999999/cpu.cfs_quota_us")).unwrap(),
        "50000"
    );
    assert_eq!(
        fs::read_to_string(base.join("pids/capsule/zz999999/pids.max")).unwrap(),
        "32"
    );
    assert_eq!(sandbox.procs_files().len(), 4);
    let shares = base.join("cpu,cpuacct/capsule/zz999999/cpu.shares");
    sandbox.set_background(true).unwrap();
    assert_eq!(fs::read_to_string(&shares).unwrap(), "2");
    sandbox.set_background(false).unwrap();
    assert_eq!(fs::read_to_string(&shares).unwrap(), "1024");
    sandbox.set_frozen(true).unwrap();
    assert_eq!(
        fs::read_to_string(base.join("freezer/capsule/zz999999/freezer.state")).unwrap(),
        "FROZEN"
    );
    sandbox.remove().unwrap();
    assert!(!sandbox.exists());
}

#[test]
fn mountinfo_unescapes_paths() {
    let text = "40 30 0:33 / /sys/fs/cgroup/a\\040b rw - cgroup cgroup rw,pids\n";
    let mounts = parse_mountinfo(text);
    assert_eq!(mounts[0].mount_point, Path::new("/sys/fs/cgroup/a b"));
    assert_eq!(mounts[0].controllers, vec!["pids".to_owned()]);
}

//! The same work done by the tools users would otherwise reach for:
//! bubblewrap and runc, started the way their users start them, with the
//! same isolation (user or root-owned namespaces for pid, mount, network,
//! IPC and UTS; the host's /usr read-only; a fresh /proc, /dev and /tmp).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

pub fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bwrap_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.args([
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for (link, target) in [
        ("/bin", "usr/bin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
        ("/sbin", "usr/sbin"),
    ] {
        if Path::new(link).is_symlink() {
            cmd.args(["--symlink", target, link]);
        }
    }
    cmd.args([
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp", "--",
    ]);
    cmd.args(args);
    cmd
}

/// `bwrap ... echo hi`: a sandbox per command, the way bwrap is used.
pub fn bwrap_create_and_exec(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = bwrap_command(&["/bin/echo", "hi"])
            .output()
            .context("running bwrap")?;
        samples.push(t.elapsed());
        if out.stdout != b"hi\n" {
            bail!("bwrap failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(samples)
}

pub fn bwrap_idle_memory(count: usize) -> anyhow::Result<f64> {
    let before = crate::memory::settled_used_bytes();
    let mut children: Vec<Child> = Vec::with_capacity(count);
    for _ in 0..count {
        children.push(
            bwrap_command(&["/bin/sleep", "3600"])
                .stdout(Stdio::null())
                .spawn()
                .context("starting bwrap")?,
        );
    }
    let after = crate::memory::settled_used_bytes();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(after.saturating_sub(before) as f64 / count as f64)
}

/// An OCI bundle whose root has the host's /usr bound read-only.
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    pub fn new(args: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("capsule-bench-oci")
            .tempdir_in("/tmp")?;
        let rootfs = dir.path().join("rootfs");
        for d in ["usr", "proc", "dev", "tmp", "sys"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("sbin", "usr/sbin"),
        ] {
            std::os::unix::fs::symlink(target, rootfs.join(link))?;
        }
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"],
                "cwd": "/tmp",
                "noNewPrivileges": true,
                "capabilities": {
                    "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
                }
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "bench",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
                {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"]}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "resources": {"memory": {"limit": 134217728}, "pids": {"limit": 256}},
                "maskedPaths": ["/proc/kcore", "/proc/timer_list", "/proc/sched_debug"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"]
            }
        });
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&config)?,
        )?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn runc(args: &[&str]) -> Command {
    let mut cmd = Command::new("runc");
    cmd.args(["--root", "/tmp/capsule-bench-runc"]).args(args);
    cmd
}

/// `runc run` of a bundle whose process is `echo hi`.
pub fn runc_create_and_exec(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let bundle = Bundle::new(&["/bin/echo", "hi"])?;
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("bench-{}-{i}", std::process::id());
        let t = Instant::now();
        let out = runc(&[
            "run",
            "--bundle",
            bundle.path().to_str().expect("utf-8 path"),
            &name,
        ])
        .stdin(Stdio::null())
        .output()
        .context("running runc")?;
        samples.push(t.elapsed());
        if out.stdout != b"hi\n" {
            bail!("runc failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(samples)
}

/// `runc exec` of `echo hi` in a running container.
pub fn runc_exec_round_trip(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let bundle = Bundle::new(&["/bin/sleep", "3600"])?;
    let name = format!("bench-exec-{}", std::process::id());
    let status = runc(&[
        "run",
        "-d",
        "--bundle",
        bundle.path().to_str().expect("utf-8 path"),
        &name,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .status()?;
    if !status.success() {
        bail!("runc run -d failed");
    }
    let result = (|| {
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let out = runc(&["exec", &name, "/bin/echo", "hi"]).output()?;
            samples.push(t.elapsed());
            if out.stdout != b"hi\n" {
                bail!("runc exec failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(samples)
    })();
    let _ = runc(&["delete", "--force", &name]).status();
    result
}

pub fn runc_idle_memory(count: usize) -> anyhow::Result<f64> {
    let bundle = Bundle::new(&["/bin/sleep", "3600"])?;
    let before = crate::memory::settled_used_bytes();
    let mut names = Vec::new();
    let result = (|| {
        for i in 0..count {
            let name = format!("bench-idle-{}-{i}", std::process::id());
            let status = runc(&[
                "run",
                "-d",
                "--bundle",
                bundle.path().to_str().expect("utf-8 path"),
                &name,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
            if !status.success() {
                bail!("runc run -d failed");
            }
            names.push(name);
        }
        Ok(crate::memory::settled_used_bytes())
    })();
    for name in &names {
        let _ = runc(&["delete", "--force", name]).status();
    }
    Ok(result?.saturating_sub(before) as f64 / count as f64)
}

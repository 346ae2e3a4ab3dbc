//! The same work done by the tools users would otherwise reach for:
//! bubblewrap, and the OCI runtimes runc, crun and gVisor's runsc, each
//! started the way its users start it, with the same isolation (namespaces
//! for pid, mount, network, IPC and UTS; the host's /usr read-only; a fresh
//! /proc, /dev and /tmp).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::stats::Throughput;

/// A tool measured against Capsule.
pub enum Alternative {
    /// `bwrap ... CMD`: a sandbox per command.
    Bwrap,
    /// An OCI runtime driving a bundle: `run`, `run --detach` + `exec`.
    Oci(Oci),
}

/// A sandbox left idle for the memory figure.
pub enum Idle {
    Process(Child),
    Container(String),
}

impl Alternative {
    /// Every alternative, in report order.
    pub fn all() -> Vec<(&'static str, Option<Self>)> {
        let bwrap = installed("bwrap").then_some(Alternative::Bwrap);
        let mut all = vec![("bwrap", bwrap)];
        for flavor in [Flavor::Runc, Flavor::Crun, Flavor::Runsc] {
            let oci = installed(flavor.program())
                .then(|| Oci::new(flavor).map(Alternative::Oci))
                .transpose();
            match oci {
                Ok(oci) => all.push((flavor.program(), oci)),
                Err(e) => {
                    eprintln!("{}: cannot prepare a bundle: {e:#}", flavor.program());
                    all.push((flavor.program(), None));
                }
            }
        }
        all
    }

    /// How a sandbox is created, for the report.
    pub fn how(&self) -> String {
        match self {
            Alternative::Bwrap => "`bwrap ... echo hi`".into(),
            Alternative::Oci(oci) if oci.wrapper.is_empty() => {
                format!("`{} run` of a bundle", oci.display())
            }
            Alternative::Oci(oci) => format!(
                "`{} run` of a bundle, in a mount namespace without the cgroup v2 mount it refuses",
                oci.display()
            ),
        }
    }

    /// How a command runs in a live sandbox, if the tool can.
    pub fn how_exec(&self) -> Option<String> {
        match self {
            Alternative::Bwrap => None,
            Alternative::Oci(oci) => Some(format!("`{} exec`", oci.display())),
        }
    }

    /// Creates a sandbox that runs `echo hi`, and waits for it to end.
    pub fn create_and_exec(&self) -> anyhow::Result<()> {
        let out = match self {
            Alternative::Bwrap => bwrap(&["/bin/echo", "hi"]).output()?,
            Alternative::Oci(oci) => oci
                .command(&["run", "--bundle", oci.echo.path(), &unique_name()])
                .output()?,
        };
        expect_hi(self.name(), out)
    }

    /// A live sandbox and a way to run `echo hi` in it, if the tool has one.
    pub fn exec_session(&self) -> anyhow::Result<Option<ExecSession<'_>>> {
        match self {
            Alternative::Bwrap => Ok(None),
            Alternative::Oci(oci) => {
                let name = oci.start_detached()?;
                Ok(Some(ExecSession { oci, name }))
            }
        }
    }

    pub fn start_idle(&self) -> anyhow::Result<Idle> {
        match self {
            Alternative::Bwrap => Ok(Idle::Process(
                bwrap(&["/bin/sleep", "3600"])
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting bwrap")?,
            )),
            Alternative::Oci(oci) => oci.start_detached().map(Idle::Container),
        }
    }

    pub fn stop_idle(&self, idle: Idle) {
        match (self, idle) {
            (_, Idle::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            (Alternative::Oci(oci), Idle::Container(name)) => oci.delete(&name),
            (Alternative::Bwrap, Idle::Container(_)) => {}
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Alternative::Bwrap => "bwrap",
            Alternative::Oci(oci) => oci.flavor.program(),
        }
    }
}

/// A detached container for `exec` round trips; deleted on drop.
pub struct ExecSession<'a> {
    oci: &'a Oci,
    name: String,
}

impl ExecSession<'_> {
    pub fn exec_echo(&self) -> anyhow::Result<()> {
        let out = self
            .oci
            .command(&["exec", &self.name, "/bin/echo", "hi"])
            .output()?;
        expect_hi(self.oci.flavor.program(), out)
    }
}

impl Drop for ExecSession<'_> {
    fn drop(&mut self) {
        self.oci.delete(&self.name);
    }
}

/// `clients` threads creating sandboxes back to back for `duration`.
pub fn throughput(
    alt: &Alternative,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let start = Instant::now();
    let per_client: Vec<anyhow::Result<Vec<Duration>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut samples = Vec::new();
                    while start.elapsed() < duration {
                        let t = Instant::now();
                        alt.create_and_exec()?;
                        samples.push(t.elapsed());
                    }
                    Ok(samples)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a throughput client panicked"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut samples = Vec::new();
    for client in per_client {
        samples.extend(client?);
    }
    Ok(Throughput::new(clients, elapsed, &samples))
}

/// Memory per idle sandbox: the host's used memory before and after
/// starting `count` sandboxes that sleep, divided by `count`.
pub fn idle_memory(alt: &Alternative, count: usize) -> anyhow::Result<f64> {
    let before = crate::memory::settled_used_bytes();
    let mut idle = Vec::with_capacity(count);
    let started = (0..count).try_for_each(|_| {
        idle.push(alt.start_idle()?);
        Ok::<_, anyhow::Error>(())
    });
    let after = crate::memory::settled_used_bytes();
    for i in idle {
        alt.stop_idle(i);
    }
    started?;
    Ok((after as f64 - before as f64) / count as f64)
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn expect_hi(tool: &str, out: Output) -> anyhow::Result<()> {
    if out.stdout != b"hi\n" {
        bail!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn bwrap(args: &[&str]) -> Command {
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
    cmd.args(args).stdin(Stdio::null());
    cmd
}

#[derive(Clone, Copy)]
pub enum Flavor {
    Runc,
    Crun,
    Runsc,
}

impl Flavor {
    fn program(self) -> &'static str {
        match self {
            Flavor::Runc => "runc",
            Flavor::Crun => "crun",
            Flavor::Runsc => "runsc",
        }
    }
}

/// An OCI runtime with its state directory and two bundles.
pub struct Oci {
    flavor: Flavor,
    global: Vec<String>,
    /// What the runtime runs under (crun on hybrid cgroup hosts).
    wrapper: Vec<String>,
    echo: Bundle,
    sleep: Bundle,
}

impl Oci {
    fn new(flavor: Flavor) -> anyhow::Result<Self> {
        let root = format!("/tmp/capsule-bench-{}", flavor.program());
        let mut global = vec!["--root".to_owned(), root];
        let mut wrapper = Vec::new();
        match flavor {
            Flavor::Runc => {}
            // gVisor as its users run it on a host without KVM: the ptrace
            // platform, and no network (its netstack needs a configured
            // namespace this bundle does not have).
            Flavor::Runsc => global.extend(["--platform=ptrace".into(), "--network=none".into()]),
            // crun refuses a hybrid host whose cgroup v2 mount has
            // controllers; its users hide that mount, as Capsule's OCI
            // backend does (see crates/capsule-runtime/src/oci/mod.rs).
            Flavor::Crun => {
                if let Some(v2) = hybrid_v2_with_controllers() {
                    wrapper = vec![
                        "unshare".into(),
                        "--mount".into(),
                        "--propagation".into(),
                        "private".into(),
                        "sh".into(),
                        "-c".into(),
                        format!("umount {} && exec \"$@\"", v2.display()),
                        "crun".into(),
                    ];
                }
            }
        }
        Ok(Self {
            flavor,
            global,
            wrapper,
            echo: Bundle::new(&["/bin/echo", "hi"])?,
            sleep: Bundle::new(&["/bin/sleep", "3600"])?,
        })
    }

    /// The command line as the report shows it.
    fn display(&self) -> String {
        let mut words = vec![self.flavor.program()];
        words.extend(
            self.global
                .iter()
                .filter(|g| g.starts_with("--") && g.contains('='))
                .map(String::as_str),
        );
        words.join(" ")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(self.flavor.program());
                cmd
            }
            None => Command::new(self.flavor.program()),
        };
        cmd.args(&self.global).args(args).stdin(Stdio::null());
        cmd
    }

    fn start_detached(&self) -> anyhow::Result<String> {
        let name = unique_name();
        // The container inherits stdout and stderr: a pipe would stay open
        // for as long as it runs, so errors go to a file.
        let mut errors = tempfile::tempfile()?;
        let status = self
            .command(&["run", "--detach", "--bundle", self.sleep.path(), &name])
            .stdout(Stdio::null())
            .stderr(errors.try_clone()?)
            .status()?;
        if !status.success() {
            let mut text = String::new();
            errors.seek(SeekFrom::Start(0))?;
            errors.read_to_string(&mut text)?;
            bail!(
                "{} run --detach failed ({status}): {}",
                self.flavor.program(),
                text.trim()
            );
        }
        Ok(name)
    }

    fn delete(&self, name: &str) {
        let _ = self
            .command(&["delete", "--force", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Oci {
    fn drop(&mut self) {
        // The runtime's state directory, empty once every container is gone.
        if let Some(root) = self.global.get(1) {
            let _ = std::fs::remove_dir(root);
        }
    }
}

/// The cgroup v2 mount of a hybrid host when it holds controllers.
fn hybrid_v2_with_controllers() -> Option<PathBuf> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let mount_point = f.nth(1)?;
            (f.next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .find(|m| {
            std::fs::read_to_string(m.join("cgroup.controllers"))
                .is_ok_and(|c| !c.trim().is_empty())
        })
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

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temporary path")
    }
}

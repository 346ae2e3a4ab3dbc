//! The OCI backend: each sandbox is an OCI bundle run by an external
//! runtime (gVisor's `runsc`, `runc` or `crun`), with the same agent as
//! the container's init and the same root file system as a native
//! sandbox: the shared read-only base layer (see [`crate::native::layer`])
//! under a per-sandbox overlay upper, mounted on the host as the bundle's
//! root.
//!
//! Per-sandbox state lives in `<dir>/sandboxes/<id>/`: the bundle
//! (`config.json`, `rootfs/`), the overlay's `upper/` and `work/`, the
//! directory shared with the agent for its socket (`run/`), the runtime's
//! and agent's output (`console.log`) and the init's identity
//! (`init.json`). The runtime keeps its own state under `<dir>/state`, so
//! nothing touches the host's global runtime state.

mod bundle;
mod cgroups;
mod command;
mod flavor;
mod rootfs;
mod sandbox;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capsule_api::SandboxId;
use capsule_sys::error::chain;
use capsule_sys::userns::IdMapping;

pub use self::bundle::{AGENT_PATH, SOCKET_PATH};
use self::cgroups::CgroupLayout;
use self::command::{Cli, CommandError};
pub use self::flavor::{DetectedRuntime, OciFlavor, UnknownFlavor, detect};
use crate::native::layer::{self, HostLayout, Ownership};
use crate::native::{NativeRuntime, SANDBOX_USER_ID, instance_id};
use crate::{Attached, Result, Runtime, RuntimeError, SandboxSpec, TemplateSpec, Usage};

/// `create` may take this long (runsc starts a Sentry and a gofer).
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Every other runtime command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// From `start` until the agent answers its health check.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a sandbox's init is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// gVisor releases before this date refuse `statx(AT_NO_AUTOMOUNT)` and
/// ignore `errnoRet` in seccomp rules (Debian 12 ships 20221219).
const RUNSC_KNOWN_GOOD: u32 = 20230101;

/// Reaps, every few seconds, the zombies the runtimes' processes leave to
/// this process as their subreaper (a gVisor sandbox that ended by
/// itself, say); one thread for every backend of the process.
fn start_orphan_reaper() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("capsule-oci-reaper".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_secs(2));
                    capsule_sys::process::reap_foreign_zombies();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the OCI orphan reaper: {e}");
        }
    });
}

/// Settings of one OCI backend (one runtime flavor).
#[derive(Debug, Clone)]
pub struct OciOptions {
    /// Where this backend's sandboxes, layers and runtime state live
    /// (`<state>/oci-<flavor>`); one backend instance per directory.
    pub dir: PathBuf,
    pub flavor: OciFlavor,
    /// The runtime binary; `None` finds the flavor's in `PATH` and the
    /// usual system directories.
    pub runtime_path: Option<PathBuf>,
    /// The stand-alone agent (`scripts/build-agent`), copied into `dir`.
    pub agent_bin: PathBuf,
    /// First host id of the 65536 ids sandbox ids map to.
    pub uid_base: u32,
    /// The largest `/tmp` a sandbox gets (memory-backed, and never more
    /// than half of the sandbox's memory).
    pub tmp_bytes: u64,
}

/// The OCI backend.
pub struct OciRuntime {
    opts: OciOptions,
    cli: Cli,
    version: String,
    mapping: IdMapping,
    cgroups: Option<CgroupLayout>,
    layer: PathBuf,
    layout: HostLayout,
    agent: PathBuf,
    warnings: Vec<String>,
    /// Held for the life of the backend: one instance per directory.
    _lock: OwnedFd,
}

fn io_ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::io(what, e)
}

fn command_error(e: CommandError) -> RuntimeError {
    RuntimeError::Unavailable(chain(&e))
}

/// What `<runtime> state` says about a container.
#[derive(Debug, serde::Deserialize)]
struct ContainerState {
    status: String,
}

/// Output of a runtime that means the container is not there.
fn is_missing_container(output: &str) -> bool {
    let o = output.to_ascii_lowercase();
    o.contains("does not exist") || o.contains("not found") || o.contains("no such")
}

impl OciRuntime {
    /// Checks the runtime, prepares the state directory, the cgroup parent
    /// and the base layer.
    pub fn new(opts: OciOptions) -> Result<Arc<Self>> {
        let flavor = opts.flavor;
        if !rustix::process::geteuid().is_root() {
            return Err(RuntimeError::Unavailable(format!(
                "the OCI backend ({flavor}) needs root: it mounts each sandbox's root overlay on \
                 the host and maps sandbox ids to a reserved host id range. Running rootless \
                 (runc/crun in a user namespace of the server's user, runsc --rootless) is not \
                 supported yet; as an unprivileged user use the native backend, which is"
            )));
        }
        let path = match &opts.runtime_path {
            Some(p) => p.clone(),
            None => flavor.find_binary().ok_or_else(|| {
                RuntimeError::Unavailable(format!(
                    "{flavor} is not installed: no {flavor} binary in PATH or the system directories{}",
                    match flavor {
                        OciFlavor::Runsc => " (Debian: apt-get install runsc)",
                        OciFlavor::Runc => " (Debian: apt-get install runc)",
                        OciFlavor::Crun => " (Debian: apt-get install crun)",
                    }
                ))
            })?,
        };
        let version = flavor::version_of(&path)
            .map_err(|e| RuntimeError::Unavailable(format!("{flavor} is not usable: {e}")))?;
        if opts.uid_base == 0
            || opts
                .uid_base
                .checked_add(capsule_sys::userns::SANDBOX_ID_COUNT)
                .is_none()
        {
            return Err(RuntimeError::Unavailable(format!(
                "uid base {} leaves no room for 65536 sandbox ids",
                opts.uid_base
            )));
        }
        let mapping = IdMapping::rooted(opts.uid_base);
        let mut warnings = vec![format!(
            "the OCI backend ({flavor}) keeps each sandbox's files in a plain directory: \
             per-sandbox disk limits are not enforced, and snapshots and volumes are not supported"
        )];

        fs::create_dir_all(opts.dir.join("sandboxes"))
            .map_err(io_ctx(format!("creating {}", opts.dir.display())))?;
        let lock = Self::lock(&opts.dir)?;
        fs::create_dir_all(opts.dir.join("state"))
            .map_err(io_ctx(format!("creating {}/state", opts.dir.display())))?;
        for (d, mode) in [
            (opts.dir.clone(), 0o711),
            (opts.dir.join("sandboxes"), 0o711),
            (opts.dir.join("state"), 0o700),
        ] {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode))
                .map_err(io_ctx(format!("chmod {}", d.display())))?;
        }
        // Sandbox root (a host id of the range) resolves bundle paths.
        NativeRuntime::check_reachable(&opts.dir.join("sandboxes"), opts.uid_base)?;
        let instance = instance_id(&opts.dir)?;

        let cgroups = match CgroupLayout::detect(&format!("capsule-oci-{instance}")) {
            Ok(c) => {
                warnings.extend(c.cgroups.missing_limits_warning());
                Some(c)
            }
            Err(e) => {
                warnings.push(format!(
                    "cgroups are not usable ({}): memory, CPU and process limits are not enforced",
                    chain(&e)
                ));
                None
            }
        };
        // crun refuses to run where it sees a hybrid host's cgroup v2 mount
        // with controllers, and has no option to look away: it runs in a
        // mount namespace of its own without that mount (it then manages
        // the v1 hierarchies like runc does).
        let mut wrapper = Vec::new();
        if flavor == OciFlavor::Crun
            && let Some(v2) = cgroups
                .as_ref()
                .and_then(|c| c.hybrid_v2_with_controllers.clone())
        {
            let (Some(unshare), Some(shell)) = (
                capsule_sys::userns::find_program("unshare"),
                capsule_sys::userns::find_program("sh"),
            ) else {
                return Err(RuntimeError::Unavailable(format!(
                    "crun needs unshare(1) and sh on this hybrid cgroup host (it refuses to run \
                     while {} holds controllers); install util-linux",
                    v2.display()
                )));
            };
            wrapper = vec![
                unshare.display().to_string(),
                "--mount".into(),
                "--propagation".into(),
                "private".into(),
                shell.display().to_string(),
                "-c".into(),
                format!("umount {} && exec \"$@\"", v2.display()),
                "crun-in-private-mounts".into(),
            ];
            warnings.push(format!(
                "crun refuses hybrid cgroup hosts whose v2 mount ({}) has controllers: every crun \
                 command runs in a private mount namespace without that mount (crun then uses the \
                 v1 hierarchies)",
                v2.display()
            ));
        }
        if flavor == OciFlavor::Runsc {
            warnings.push(format!(
                "runsc (gVisor) runs the sandbox on its own application kernel: processes see \
                 gVisor's user namespace, not the host mapping (on the host its gofer runs as the \
                 mapped unprivileged id range and its Sentry as nobody); a sandbox that exceeds its \
                 memory limit ends as a whole (the host kills the Sentry, which holds all of its \
                 memory); its pids limit gets {} more for gVisor's own threads",
                bundle::RUNSC_PIDS_HEADROOM
            ));
            if flavor::runsc_release_date(&version).is_none_or(|d| d < RUNSC_KNOWN_GOOD) {
                warnings.push(format!(
                    "{version} is old: it has no PR_SET_CHILD_SUBREAPER, which the agent needs to \
                     start processes; it refuses statx(AT_NO_AUTOMOUNT), so coreutils' ls, stat \
                     and du fail with \"Invalid argument\"; and it answers every seccomp rule \
                     with EPERM, so its sandboxes go without the clone and clone3 rules (which \
                     would stop threads). Install a current gVisor release"
                ));
            }
        }

        let layout = layer::host_layout();
        let owners = Ownership {
            root: mapping.host_uid(0).zip(mapping.host_gid(0)),
            user: mapping
                .host_uid(SANDBOX_USER_ID)
                .zip(mapping.host_gid(SANDBOX_USER_ID)),
        };
        let layers_dir = opts.dir.join("layers");
        let layer = layer::ensure_base_layer(&layers_dir, &layout, &owners).map_err(io_ctx(
            format!("building the base layer in {}", layers_dir.display()),
        ))?;
        let mut in_use = vec![layer.clone()];
        if let Ok(entries) = fs::read_dir(opts.dir.join("sandboxes")) {
            for e in entries.flatten() {
                if let Ok(p) = fs::read_to_string(e.path().join("layer")) {
                    in_use.push(PathBuf::from(p.trim()));
                }
            }
        }
        layer::collect_garbage(&layers_dir, &in_use);
        let agent = rootfs::install_agent(&opts.agent_bin, &opts.dir.join("agent")).map_err(
            io_ctx(format!(
                "installing the agent {} (build it with scripts/build-agent)",
                opts.agent_bin.display()
            )),
        )?;

        let mut global = vec![
            "--root".to_owned(),
            opts.dir.join("state").display().to_string(),
        ];
        match flavor {
            OciFlavor::Runsc => global.extend(
                [
                    "--platform=ptrace",
                    "--network=none",
                    // The agent creates its socket in a directory shared with the host.
                    "--host-uds=create",
                    "--oci-seccomp",
                    // Writes go to the sandbox's overlay upper, not to memory.
                    "--overlay2=none",
                ]
                .map(str::to_owned),
            ),
            OciFlavor::Crun | OciFlavor::Runc => {}
        }
        start_orphan_reaper();
        Ok(Arc::new(Self {
            cli: Cli {
                flavor,
                path,
                global,
                wrapper,
            },
            version,
            mapping,
            cgroups,
            layer,
            layout,
            agent,
            warnings,
            opts,
            _lock: lock,
        }))
    }

    /// Takes `<dir>/lock` for the life of the backend.
    fn lock(dir: &Path) -> Result<OwnedFd> {
        let path = dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_ctx(format!("opening {}", path.display())))?;
        let fd = OwnedFd::from(file);
        match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(fd),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(RuntimeError::Unavailable(format!(
                "{} is in use by another OCI backend; give each backend its own directory",
                dir.display()
            ))),
            Err(e) => Err(RuntimeError::io(
                format!("locking {}", path.display()),
                e.into(),
            )),
        }
    }

    /// The runtime this backend drives.
    pub fn flavor(&self) -> OciFlavor {
        self.opts.flavor
    }

    /// The runtime's `--version` line.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The runtime binary.
    pub fn runtime_path(&self) -> &Path {
        &self.cli.path
    }
}

#[async_trait]
impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        self.opts.flavor.runtime_name()
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn check_template(&self, template: &TemplateSpec) -> std::result::Result<(), String> {
        crate::native::check_template_on(&self.layout, template)
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Attached> {
        if spec.snapshot.is_some() {
            return Err(RuntimeError::Unsupported {
                operation: "starting from a snapshot",
                backend: self.name(),
            });
        }
        if !spec.volumes.is_empty() {
            return Err(RuntimeError::Unsupported {
                operation: "volumes",
                backend: self.name(),
            });
        }
        if spec.network.is_some() {
            return Err(RuntimeError::Unsupported {
                operation: "egress networking",
                backend: self.name(),
            });
        }
        let dir = self.sandbox_dir(spec.id);
        fs::create_dir(&dir).map_err(io_ctx(format!("creating {}", dir.display())))?;
        let result = self.create_in(spec, &dir).await;
        if let Err(e) = &result {
            tracing::warn!(sandbox = %spec.id, "creating an {} sandbox failed: {}", self.cli.flavor, chain(e));
            if let Err(cleanup) = self.destroy(spec.id).await {
                tracing::warn!(sandbox = %spec.id, "cleaning up after the failed create: {}", chain(&cleanup));
            }
        }
        result
    }

    async fn attach(&self, id: SandboxId) -> Result<Option<Attached>> {
        let Some(init) = self.read_init(id) else {
            return Ok(None);
        };
        let Some(pidfd) = init
            .open()
            .map_err(|e| RuntimeError::sys("opening the container's init", e))?
        else {
            return Ok(None);
        };
        let status = match self.state(id).await {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        let attached = self.attached(id, pidfd);
        match status.as_str() {
            // A frozen agent cannot answer; it is there all the same.
            "paused" => Ok(Some(attached)),
            "running" => {
                let healthy =
                    tokio::time::timeout(Duration::from_secs(3), attached.agent.health()).await;
                Ok(matches!(healthy, Ok(Ok(()))).then_some(attached))
            }
            _ => Ok(None),
        }
    }

    async fn destroy(&self, id: SandboxId) -> Result<()> {
        // Every step runs even when an earlier one failed, so that as
        // little as possible stays behind; the first failure is reported.
        let mut first_error = self.stop(id).await.err();
        let mut note = |r: Result<()>| {
            if let Err(e) = r
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        };
        if let Some(cg) = &self.cgroups {
            let cg = cg.clone();
            let name = id.to_string();
            let removed =
                tokio::task::spawn_blocking(move || cg.remove(&name, Duration::from_secs(5)))
                    .await
                    .map_err(|e| RuntimeError::io("removing cgroups", io::Error::other(e)))
                    .and_then(|r| {
                        r.map_err(|e| RuntimeError::sys(format!("removing the cgroup of {id}"), e))
                    });
            note(removed);
        }
        let dir = self.sandbox_dir(id);
        let rootfs = dir.join(bundle::ROOTFS);
        let unmounted = rootfs::unmount_all(&rootfs)
            .map_err(|e| RuntimeError::sys(format!("unmounting the root of {id}"), e));
        let mounted = unmounted.is_err();
        note(unmounted);
        for (_, path) in self.state_entries(Some(id)) {
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            note(match removed {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(RuntimeError::io(format!("removing {}", path.display()), e))
                }
                _ => Ok(()),
            });
        }
        // Never recurse into a root that is still mounted: that would
        // delete the base layer's files through the overlay.
        if !mounted {
            let target = dir.clone();
            let removed = tokio::task::spawn_blocking(move || fs::remove_dir_all(&target))
                .await
                .map_err(|e| RuntimeError::io("removing a sandbox directory", io::Error::other(e)));
            note(match removed {
                Ok(Err(e)) if e.kind() != io::ErrorKind::NotFound => {
                    Err(RuntimeError::io(format!("removing {}", dir.display()), e))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            });
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn leftovers(&self) -> Vec<SandboxId> {
        let mut ids = BTreeSet::new();
        if let Ok(entries) = fs::read_dir(self.opts.dir.join("sandboxes")) {
            ids.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<SandboxId>().ok()),
            );
        }
        ids.extend(self.state_entries(None).into_iter().map(|(id, _)| id));
        if let Some(cg) = &self.cgroups {
            ids.extend(
                cg.existing()
                    .iter()
                    .filter_map(|n| n.parse::<SandboxId>().ok()),
            );
        }
        ids.into_iter().collect()
    }

    async fn usage(&self, id: SandboxId) -> Result<Usage> {
        let mut usage = Usage::default();
        if let Some(cg) = &self.cgroups {
            let stats = cg.sandbox(id.as_str()).stats();
            usage.cpu_ns = stats.cpu_usage_ns;
            usage.memory_bytes = stats.memory_bytes;
            usage.memory_peak_bytes = stats.memory_peak_bytes;
            usage.pids = stats.pids;
        }
        let upper = self.sandbox_dir(id).join("upper");
        usage.disk_bytes = tokio::task::spawn_blocking(move || NativeRuntime::disk_usage(&upper))
            .await
            .ok();
        Ok(usage)
    }

    fn storage(&self) -> &'static str {
        "dir"
    }

    fn disk_capacity(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.opts.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    async fn shutdown(&self) {
        let no_sandboxes =
            fs::read_dir(self.opts.dir.join("sandboxes")).map_or(true, |mut d| d.next().is_none());
        if no_sandboxes && let Some(cg) = &self.cgroups {
            cg.remove_parents();
        }
    }

    async fn pause(&self, id: SandboxId) -> Result<()> {
        self.cli
            .run(&["pause", id.as_str()], COMMAND_TIMEOUT)
            .await
            .map(drop)
            .map_err(command_error)
    }

    async fn resume(&self, id: SandboxId) -> Result<()> {
        self.cli
            .run(&["resume", id.as_str()], COMMAND_TIMEOUT)
            .await
            .map(drop)
            .map_err(command_error)
    }
}

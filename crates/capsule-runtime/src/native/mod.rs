//! The native backend: each sandbox is a set of fresh Linux namespaces with
//! an overlay root, cgroup limits, seccomp, Landlock and dropped
//! capabilities, built by the launcher in [`init`] and run by the agent as
//! PID 1. It works started as root (sandbox ids map to a reserved host id
//! range) and as an unprivileged user (subordinate ids via newuidmap, or
//! just the user's own id).

mod egress;
pub mod init;
pub mod layer;
mod slots;
pub mod spec;
pub mod storage;

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
use capsule_protocol::client::AgentClient;
use capsule_sys::cgroup::{Cgroups, Limits};
use capsule_sys::error::chain;
use capsule_sys::process::{ExitStatus, PidFd, ProcessRef};
use capsule_sys::rlimit::SandboxRlimits;
use capsule_sys::userns::{IdMapping, MapMethod};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::layer::{HostLayout, Ownership};
use self::spec::{AgentSettings, InitAnswer, InitSpec, OwnedDir, RemoveSpec, VolumeBind};
pub use self::storage::StorageMode;
use crate::{
    Attached, ExitReason, NetworkSpec, Result, Runtime, RuntimeError, SandboxSpec, TemplateSpec,
    Usage,
};

/// The uid/gid of the unprivileged sandbox user.
pub const SANDBOX_USER_ID: u32 = 1000;

/// How long the launcher may take before the create is abandoned.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Directories searched for a template's programs (inside the sandbox).
pub(crate) const PROGRAM_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Settings of the native backend.
#[derive(Debug, Clone)]
pub struct NativeOptions {
    /// Where sandboxes and layers live (`<state>/native`).
    pub dir: PathBuf,
    /// The program that contains the launcher (`capsule`).
    pub launcher: PathBuf,
    /// First host id of the range sandbox ids map to when running as root.
    pub uid_base: u32,
    /// Use cgroups for limits when the host allows it.
    pub cgroups: bool,
    /// The largest `/tmp` a sandbox gets (it is memory-backed, so it is
    /// never larger than the sandbox's memory limit either).
    pub tmp_bytes: u64,
    /// Launchers kept ready in their cgroups (see `slots`).
    pub ready_launchers: usize,
    /// Where writable layers, snapshots and volumes live (see `storage`).
    pub storage: StorageMode,
}

/// The native Linux-namespaces backend.
pub struct NativeRuntime {
    opts: NativeOptions,
    mapping: IdMapping,
    cgroups: Option<Cgroups>,
    layer: PathBuf,
    layout: HostLayout,
    storage: storage::Storage,
    warnings: Vec<String>,
    pool: Arc<slots::Pool>,
    proxies: egress::Proxies,
}

fn io_ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::io(what, e)
}

fn current_user_name(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_owned())
            })
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

/// A random id for this state directory, made once and kept: it names the
/// server's cgroups, so that two servers never touch each other's sandboxes.
pub(crate) fn instance_id(dir: &Path) -> Result<String> {
    let path = dir.join("instance-id");
    if let Ok(id) = fs::read_to_string(&path) {
        let id = id.trim();
        if id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(id.to_owned());
        }
    }
    let mut b = [0u8; 6];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| RuntimeError::io("random instance id", e.into()))?;
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let tmp = dir.join("instance-id.tmp");
    fs::write(&tmp, format!("{id}\n"))
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(io_ctx(format!("writing {}", path.display())))?;
    Ok(id)
}

impl NativeRuntime {
    /// Prepares the backend: id mapping, cgroups, the base layer. Call
    /// inside a Tokio runtime: the launcher pool refills in the background.
    pub fn new(opts: NativeOptions) -> Result<Arc<Self>> {
        let mut warnings = Vec::new();
        let euid = rustix::process::geteuid().as_raw();
        let egid = rustix::process::getegid().as_raw();
        let mapping = if euid == 0 {
            if opts
                .uid_base
                .checked_add(capsule_sys::userns::SANDBOX_ID_COUNT)
                .is_none()
                || opts.uid_base == 0
            {
                return Err(RuntimeError::Unavailable(format!(
                    "uid base {} leaves no room for 65536 sandbox ids",
                    opts.uid_base
                )));
            }
            IdMapping::rooted(opts.uid_base)
        } else {
            let (mapping, warning) =
                capsule_sys::userns::unprivileged_mapping(euid, egid, &current_user_name(euid));
            warnings.extend(warning);
            mapping
        };

        fs::create_dir_all(&opts.dir)
            .map_err(io_ctx(format!("creating {}", opts.dir.display())))?;
        let instance = instance_id(&opts.dir)?;
        let cgroups = if opts.cgroups {
            match Cgroups::detect(&format!("capsule-{instance}"))
                .and_then(|c| c.prepare().map(|()| c))
            {
                Ok(c) => {
                    warnings.extend(c.missing_limits_warning());
                    Some(c)
                }
                Err(e) => {
                    warnings.push(format!(
                        "cgroups are not delegated to this user ({}): memory, CPU and process limits are not enforced",
                        chain(&e)
                    ));
                    None
                }
            }
        } else {
            warnings.push("cgroups disabled by configuration: memory, CPU and process limits are not enforced".into());
            None
        };

        fs::create_dir_all(opts.dir.join("sandboxes"))
            .map_err(io_ctx(format!("creating {}", opts.dir.display())))?;
        // Traversable but not listable: sandboxes' files are private.
        for d in [opts.dir.clone(), opts.dir.join("sandboxes")] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o711))
                .map_err(io_ctx(format!("chmod {}", d.display())))?;
        }
        if let Some(root) = mapping.host_uid(0) {
            Self::check_reachable(&opts.dir.join("sandboxes"), root)?;
        }
        let layout = layer::host_layout();
        let owners = match mapping.method {
            MapMethod::Direct => Ownership {
                root: mapping.host_uid(0).zip(mapping.host_gid(0)),
                user: mapping
                    .host_uid(SANDBOX_USER_ID)
                    .zip(mapping.host_gid(SANDBOX_USER_ID)),
            },
            _ => Ownership {
                root: None,
                user: None,
            },
        };
        let layers_dir = opts.dir.join("layers");
        let layer = layer::ensure_base_layer(&layers_dir, &layout, &owners).map_err(io_ctx(
            format!("building the base layer in {}", layers_dir.display()),
        ))?;
        let mut in_use = vec![layer.clone()];
        // Sandboxes and snapshots pin the base layer they were made on.
        for (dir, file) in [("sandboxes", Some("layer")), ("snapshot-layers", None)] {
            if let Ok(entries) = fs::read_dir(opts.dir.join(dir)) {
                for e in entries.flatten() {
                    let path = match file {
                        Some(f) => e.path().join(f),
                        None => e.path(),
                    };
                    if let Ok(p) = fs::read_to_string(path) {
                        in_use.push(PathBuf::from(p.trim()));
                    }
                }
            }
        }
        layer::collect_garbage(&layers_dir, &in_use);
        let storage = storage::Storage::open(
            &opts.dir,
            opts.storage,
            mapping.method == MapMethod::Direct,
            &mut warnings,
        )?;
        let pool = slots::Pool::new(opts.ready_launchers);
        let runtime = Arc::new(Self {
            opts,
            mapping,
            cgroups,
            layer,
            layout,
            storage,
            warnings,
            pool,
            proxies: egress::Proxies::default(),
        });
        runtime.sweep_cgroups();
        runtime
            .pool
            .spawn_refill(runtime.opts.launcher.clone(), runtime.cgroups.clone());
        Ok(runtime)
    }

    /// The cgroups sandboxes and ready launchers use.
    fn cgroups_in_use(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.pool.cgroup_names().into_iter().collect();
        if let Ok(entries) = fs::read_dir(self.opts.dir.join("sandboxes")) {
            for e in entries.flatten() {
                if let Ok(name) = fs::read_to_string(e.path().join("cgroup")) {
                    names.insert(name.trim().to_owned());
                }
            }
        }
        names
    }

    /// Removes cgroups that no sandbox or ready launcher owns (left by a
    /// crash, or by launchers of a server that was killed).
    fn sweep_cgroups(&self) {
        let Some(cgroups) = &self.cgroups else { return };
        let in_use = self.cgroups_in_use();
        for name in cgroups.existing() {
            if !in_use.contains(&name) {
                let cg = cgroups.open(&name);
                let _ = cg.kill_all();
                if let Err(e) = cg.remove() {
                    tracing::warn!("removing the stale cgroup {name}: {}", chain(&e));
                }
            }
        }
    }

    fn sandbox_dir(&self, id: SandboxId) -> PathBuf {
        self.opts.dir.join("sandboxes").join(id.as_str())
    }

    /// The id of the sandbox user processes run as (1000, or 0 when only one
    /// id can be mapped).
    fn user_ids(&self) -> (u32, u32) {
        if self.mapping.maps_uid(SANDBOX_USER_ID) {
            (SANDBOX_USER_ID, SANDBOX_USER_ID)
        } else {
            (0, 0)
        }
    }

    /// Sandbox root resolves the state directory's paths itself while
    /// building the sandbox, so every parent must let it pass.
    pub(crate) fn check_reachable(dir: &Path, sandbox_root: u32) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut cur = Some(dir);
        while let Some(p) = cur {
            if let Ok(meta) = fs::metadata(p) {
                let passable = meta.mode() & 0o001 != 0 || meta.uid() == sandbox_root;
                if !passable {
                    return Err(RuntimeError::Unavailable(format!(
                        "the state directory {} is not reachable by sandbox processes (host uid {sandbox_root}): \
                         {} has mode {:o}; make it traversable (chmod o+x) or choose another state directory",
                        dir.display(),
                        p.display(),
                        meta.mode() & 0o7777
                    )));
                }
            }
            cur = p.parent();
        }
        Ok(())
    }

    fn chown_to_root(&self, path: &Path) -> Result<()> {
        if self.mapping.method == MapMethod::Direct
            && let (Some(uid), Some(gid)) = (self.mapping.host_uid(0), self.mapping.host_gid(0))
        {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io_ctx(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    async fn launch(
        &self,
        spec: &InitSpec,
        mut child: tokio::process::Child,
    ) -> std::result::Result<(i32, u64), String> {
        let json = serde_json::to_vec(spec).expect("specs serialize");
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let run = async {
            stdin
                .write_all(&json)
                .await
                .map_err(|e| format!("sending the spec: {e}"))?;
            drop(stdin);
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (r1, r2) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            r1.map_err(|e| format!("reading the launcher's answer: {e}"))?;
            let _ = r2;
            let status = child
                .wait()
                .await
                .map_err(|e| format!("waiting for the launcher: {e}"))?;
            Ok::<_, String>((out, err, status))
        };
        let (out, err, status) =
            tokio::time::timeout(LAUNCH_TIMEOUT, run)
                .await
                .map_err(|_| {
                    format!(
                        "the launcher did not finish within {}s",
                        LAUNCH_TIMEOUT.as_secs()
                    )
                })??;
        let answer: Option<InitAnswer> = serde_json::from_slice(&out).ok();
        let stderr_text = String::from_utf8_lossy(&err).trim().to_owned();
        match answer {
            Some(InitAnswer::Started { pid, start_time }) => Ok((pid, start_time)),
            Some(InitAnswer::Failed { error }) => Err(if stderr_text.is_empty() {
                error
            } else {
                format!("{error} ({stderr_text})")
            }),
            None => Err(format!(
                "the launcher {status} without an answer: {stderr_text}"
            )),
        }
    }

    fn exit_future(pidfd: PidFd) -> crate::ExitFuture {
        Box::pin(async move {
            let pid = pidfd.pid();
            let fd: OwnedFd = pidfd.into_fd();
            // SAFETY: `fd` is an open pidfd owned by the AsyncFd from here on.
            let registered =
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
            let async_fd = match registered {
                Ok(a) => a,
                Err(e) => {
                    return ExitReason(format!("cannot watch the sandbox init (pid {pid}): {e}"));
                }
            };
            let _ = async_fd.readable().await;
            let fd = async_fd.into_inner();
            let pidfd = PidFd::from_parts(fd, pid);
            let status = pidfd.try_reap().ok().flatten();
            ExitReason(match status {
                Some(ExitStatus::Signaled(libc::SIGKILL)) => {
                    "the sandbox init was killed (SIGKILL; the out-of-memory killer or an operator)"
                        .to_owned()
                }
                Some(s) => format!("the sandbox init {s}"),
                None => "the sandbox init exited".to_owned(),
            })
        })
    }

    fn attached(&self, id: SandboxId, pidfd: PidFd) -> Attached {
        Attached {
            agent: AgentClient::unix(self.sandbox_dir(id).join("agent.sock")),
            exited: Self::exit_future(pidfd),
        }
    }

    async fn remove_dir(&self, dir: &Path) -> Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        let direct = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || fs::remove_dir_all(&dir))
                .await
                .map_err(|e| {
                    RuntimeError::io("removing a sandbox directory", io::Error::other(e))
                })?
        };
        match direct {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if self.mapping.method == MapMethod::Direct => {
                return Err(RuntimeError::io(format!("removing {}", dir.display()), e));
            }
            Err(_) => {}
        }
        // Rootless: files owned by subordinate ids are removed from inside a
        // user namespace with the sandbox's mapping.
        let spec = RemoveSpec {
            mapping: self.mapping.clone(),
            path: dir.to_path_buf(),
        };
        let mut child = init::helper_command(&self.opts.launcher, init::REMOVER_ARG)
            .spawn()
            .map_err(io_ctx("starting the remover"))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&serde_json::to_vec(&spec).expect("specs serialize"))
            .await
            .map_err(io_ctx("sending the remove spec"))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(io_ctx("waiting for the remover"))?;
        if out.status.success() && !dir.exists() {
            Ok(())
        } else {
            Err(RuntimeError::Unavailable(format!(
                "removing {} failed: {}{}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// The cgroup a sandbox lives in, as recorded in its directory.
    fn cgroup_name(&self, id: SandboxId) -> Option<String> {
        let name = fs::read_to_string(self.sandbox_dir(id).join("cgroup")).ok()?;
        let name = name.trim();
        (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
    }

    fn read_pid_file(&self, id: SandboxId) -> Option<ProcessRef> {
        let text = fs::read(self.sandbox_dir(id).join("init.pid")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Bytes used under `path`, a directory the sandbox can write to.
    ///
    /// The sandbox may swap any directory for a symlink while this runs, so
    /// the walk never resolves a name twice: each directory is opened
    /// relative to its parent's descriptor with `O_NOFOLLOW`, and nothing on
    /// another file system is entered.
    pub(crate) fn disk_usage(path: &Path) -> u64 {
        use rustix::fs::{AtFlags, FileType, Mode, OFlags};
        use std::sync::Arc;
        const MAX_DEPTH: usize = 512;
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(root) = rustix::fs::open(path, dir_flags, Mode::empty()) else {
            return 0;
        };
        let Ok(root_stat) = rustix::fs::fstat(&root) else {
            return 0;
        };
        let device = root_stat.st_dev;
        let mut total = root_stat.st_blocks as u64 * 512;
        // Directories still to read, each as (parent, name, inode, depth):
        // a descriptor stays open only while names under it wait, so at
        // most MAX_DEPTH are open at once however wide the tree.
        let mut pending: Vec<(Arc<rustix::fd::OwnedFd>, std::ffi::CString, u64, usize)> =
            Vec::new();
        let read_dir =
            |dir: Arc<rustix::fd::OwnedFd>, depth: usize, pending: &mut Vec<_>, total: &mut u64| {
                let Ok(entries) = rustix::fs::Dir::read_from(&*dir) else {
                    return;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name.to_bytes() == b"." || name.to_bytes() == b".." {
                        continue;
                    }
                    let Ok(st) = rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                        continue;
                    };
                    *total += st.st_blocks as u64 * 512;
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory
                        && st.st_dev == device
                        && depth + 1 < MAX_DEPTH
                    {
                        pending.push((dir.clone(), name.to_owned(), st.st_ino, depth + 1));
                    }
                }
            };
        read_dir(Arc::new(root), 0, &mut pending, &mut total);
        while let Some((parent, name, ino, depth)) = pending.pop() {
            let Ok(child) = rustix::fs::openat(&*parent, &name, dir_flags, Mode::empty()) else {
                continue;
            };
            drop(parent);
            // The name may have been swapped for another directory since.
            match rustix::fs::fstat(&child) {
                Ok(now) if now.st_dev == device && now.st_ino == ino => {
                    read_dir(Arc::new(child), depth, &mut pending, &mut total);
                }
                _ => {}
            }
        }
        total
    }
}

/// Ok when every program `template` requires is on this host, in a
/// directory sandboxes see (the base layer's binds or the template's own),
/// else the reason. Shared by every backend built on the base layer.
pub(crate) fn check_template_on(
    layout: &layer::HostLayout,
    template: &TemplateSpec,
) -> std::result::Result<(), String> {
    let visible = |p: &Path| {
        layout.binds.iter().any(|b| p.starts_with(b))
            || template.extra_binds.iter().any(|b| p.starts_with(b))
    };
    for bind in &template.extra_binds {
        if !bind.is_absolute() || !bind.is_dir() {
            return Err(format!("{} does not exist on this host", bind.display()));
        }
    }
    let mut dirs: Vec<PathBuf> = template
        .env
        .get("PATH")
        .map(|p| p.split(':').map(PathBuf::from).collect())
        .unwrap_or_default();
    for d in PROGRAM_DIRS {
        let d = PathBuf::from(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    for program in &template.requires {
        let found = dirs.iter().map(|d| d.join(program)).find(|p| p.is_file());
        match found {
            Some(path) => {
                let resolved = fs::canonicalize(&path).unwrap_or(path.clone());
                if !visible(&resolved) && !visible(&path) {
                    return Err(format!(
                        "{program} is at {} on this host, outside the directories sandboxes see",
                        resolved.display()
                    ));
                }
            }
            None => {
                return Err(format!(
                    "{program} was not found on this host (looked in {})",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Runtime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn check_template(&self, template: &TemplateSpec) -> std::result::Result<(), String> {
        check_template_on(&self.layout, template)
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Attached> {
        let id = spec.id;
        let dir = self.sandbox_dir(id);
        fs::create_dir(&dir).map_err(io_ctx(format!("creating {}", dir.display())))?;
        let result = self.create_in(spec, &dir).await;
        if result.is_err() {
            let _ = self.destroy(id).await;
        }
        result
    }

    fn check_network(&self, _network: &NetworkSpec) -> Result<()> {
        // The proxy's listener is made by joining the sandbox's network
        // namespace, which takes CAP_SYS_ADMIN in the server's namespace.
        if self.mapping.method != MapMethod::Direct {
            return Err(RuntimeError::Unsupported {
                operation: "egress networking on a server not started as root",
                backend: "native",
            });
        }
        Ok(())
    }

    async fn attach(&self, id: SandboxId) -> Result<Option<Attached>> {
        let Some(init) = self.read_pid_file(id) else {
            return Ok(None);
        };
        let Some(pidfd) = init
            .open()
            .map_err(|e| RuntimeError::sys("opening the sandbox init", e))?
        else {
            return Ok(None);
        };
        let attached = self.attached(id, pidfd);
        let healthy = tokio::time::timeout(Duration::from_secs(3), attached.agent.health()).await;
        if !matches!(healthy, Ok(Ok(()))) {
            return Ok(None);
        }
        // The proxy died with the previous server; without it the sandbox
        // has no way out, which is safe, so a failure here only warns.
        if let Some(network) = egress::Proxies::load(&self.sandbox_dir(id))
            && let Err(e) = self.proxies.start(id, init.pid, &network)
        {
            tracing::warn!(sandbox = %id, "restoring the egress proxy: {}", chain(&e));
        }
        Ok(Some(attached))
    }

    async fn destroy(&self, id: SandboxId) -> Result<()> {
        self.proxies.stop(id);
        let dir = self.sandbox_dir(id);
        if let Some(init) = self.read_pid_file(id)
            && let Ok(Some(pidfd)) = init.open()
        {
            let _ = pidfd.send_signal(libc::SIGKILL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !pidfd.has_exited() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = pidfd.try_reap();
        }
        if let (Some(cgroups), Some(name)) = (&self.cgroups, self.cgroup_name(id)) {
            let cg = cgroups.open(&name);
            if cg.exists() {
                let cg2 = cg.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = cg2.kill_all();
                    cg2.remove_within(Duration::from_secs(5))
                })
                .await
                .map_err(|e| RuntimeError::io("removing cgroups", io::Error::other(e)))?
                .map_err(|e| RuntimeError::sys(format!("removing the cgroup of {id}"), e))?;
            }
        }
        self.storage.remove_layer(id.as_str())?;
        self.remove_dir(&dir).await
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
        ids.extend(
            self.storage
                .layer_ids()
                .iter()
                .filter_map(|n| n.parse::<SandboxId>().ok()),
        );
        // Cgroups of no sandbox (launchers of a crashed server) go at once.
        self.sweep_cgroups();
        ids.into_iter().collect()
    }

    fn storage(&self) -> &'static str {
        self.storage.name()
    }

    async fn pause(&self, id: SandboxId) -> Result<()> {
        self.freeze(id, true).await
    }

    async fn resume(&self, id: SandboxId) -> Result<()> {
        self.freeze(id, false).await
    }

    async fn set_foreground(&self, id: SandboxId) -> Result<()> {
        let (Some(cgroups), Some(name)) = (&self.cgroups, self.cgroup_name(id)) else {
            return Ok(());
        };
        cgroups
            .open(&name)
            .set_background(false)
            .map_err(|e| RuntimeError::sys(format!("restoring the priority of {id}"), e))
    }

    async fn snapshot(&self, id: SandboxId, snapshot: &str) -> Result<u64> {
        if self.mapping.method != MapMethod::Direct {
            return Err(RuntimeError::Unsupported {
                operation: "snapshots of a rootless server",
                backend: "native",
            });
        }
        let dir = self.sandbox_dir(id);
        if !dir.exists() {
            return Err(RuntimeError::Unavailable(format!(
                "sandbox {id} has no files here"
            )));
        }
        // Frozen while its files are captured, unless it already was.
        let was_frozen = self.frozen(id);
        if !was_frozen && self.cgroups.is_some() {
            self.freeze(id, true).await?;
        }
        let storage = self.storage.clone();
        let (sid, snap, sdir) = (id.to_string(), snapshot.to_owned(), dir.clone());
        let taken = tokio::task::spawn_blocking(move || storage.snapshot(&sid, &sdir, &snap))
            .await
            .map_err(|e| RuntimeError::io("snapshotting", io::Error::other(e)));
        let thawed = if !was_frozen && self.cgroups.is_some() {
            self.freeze(id, false).await
        } else {
            Ok(())
        };
        let files = taken??;
        // From here on a failure must not leave the snapshot behind.
        let finish = async {
            thawed?;
            // The snapshot pins the base layer its files sit on.
            let layers = self.opts.dir.join("snapshot-layers");
            fs::create_dir_all(&layers).map_err(io_ctx("recording the snapshot's layer"))?;
            let layer = fs::read_to_string(dir.join("layer"))
                .unwrap_or_else(|_| self.layer.display().to_string());
            fs::write(layers.join(snapshot), layer)
                .map_err(io_ctx("recording the snapshot's layer"))?;
            // Measured once the sandbox runs again: the walk grows with the
            // number of files, the snapshot itself does not.
            tokio::task::spawn_blocking(move || Self::disk_usage(&files))
                .await
                .map_err(|e| RuntimeError::io("measuring a snapshot", io::Error::other(e)))
        };
        match finish.await {
            Ok(size) => Ok(size),
            Err(e) => {
                let _ = self.delete_snapshot(snapshot).await;
                Err(e)
            }
        }
    }

    async fn delete_snapshot(&self, snapshot: &str) -> Result<()> {
        let storage = self.storage.clone();
        let snap = snapshot.to_owned();
        tokio::task::spawn_blocking(move || storage.delete_snapshot(&snap))
            .await
            .map_err(|e| RuntimeError::io("deleting a snapshot", io::Error::other(e)))??;
        let _ = fs::remove_file(self.opts.dir.join("snapshot-layers").join(snapshot));
        Ok(())
    }

    async fn create_volume(&self, key: &str, bytes: u64) -> Result<()> {
        let (uid, gid) = (
            self.mapping.host_uid(SANDBOX_USER_ID),
            self.mapping.host_gid(SANDBOX_USER_ID),
        );
        let direct = self.mapping.method == MapMethod::Direct;
        let own = move |p: &Path| -> Result<()> {
            if direct && let (Some(uid), Some(gid)) = (uid, gid) {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(io_ctx(format!("chown {}", p.display())))?;
            }
            fs::set_permissions(p, fs::Permissions::from_mode(0o755))
                .map_err(io_ctx(format!("chmod {}", p.display())))
        };
        self.storage.create_volume(key, bytes, &own)
    }

    async fn delete_volume(&self, key: &str) -> Result<()> {
        let storage = self.storage.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || storage.delete_volume(&key))
            .await
            .map_err(|e| RuntimeError::io("deleting a volume", io::Error::other(e)))?
    }

    fn disk_capacity(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.opts.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    async fn shutdown(&self) {
        self.proxies.stop_all();
        self.pool.drain().await;
        // With no sandbox left, nothing of this server stays in the cgroup tree.
        let no_sandboxes =
            fs::read_dir(self.opts.dir.join("sandboxes")).map_or(true, |mut d| d.next().is_none());
        if no_sandboxes {
            if let Some(cgroups) = &self.cgroups {
                self.sweep_cgroups();
                cgroups.remove_parents();
            }
            // Snapshots and volumes stay in the image for the next start.
            self.storage.unmount();
        }
    }

    async fn usage(&self, id: SandboxId) -> Result<Usage> {
        let mut usage = Usage::default();
        if let (Some(cg), Some(name)) = (&self.cgroups, self.cgroup_name(id)) {
            let stats = cg.open(&name).stats();
            usage.cpu_ns = stats.cpu_usage_ns;
            usage.memory_bytes = stats.memory_bytes;
            usage.memory_peak_bytes = stats.memory_peak_bytes;
            usage.pids = stats.pids;
        }
        let upper = self.storage.upper(id.as_str(), &self.sandbox_dir(id));
        usage.disk_bytes = tokio::task::spawn_blocking(move || Self::disk_usage(&upper))
            .await
            .ok();
        Ok(usage)
    }
}

impl NativeRuntime {
    /// Freezes or thaws every process of a sandbox, waiting until frozen.
    async fn freeze(&self, id: SandboxId, frozen: bool) -> Result<()> {
        let (Some(cgroups), Some(name)) = (&self.cgroups, self.cgroup_name(id)) else {
            return Err(RuntimeError::Unavailable(
                "pausing needs cgroups (the freezer), which this server does not use".into(),
            ));
        };
        let cg = cgroups.open(&name);
        cg.set_frozen(frozen).map_err(|e| {
            RuntimeError::sys(
                format!("{} {id}", if frozen { "freezing" } else { "thawing" }),
                e,
            )
        })?;
        if frozen {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !cg.is_frozen().unwrap_or(false) {
                if tokio::time::Instant::now() >= deadline {
                    let _ = cg.set_frozen(false);
                    return Err(RuntimeError::Unavailable(format!(
                        "sandbox {id} did not freeze within 10 s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(())
    }

    fn frozen(&self, id: SandboxId) -> bool {
        match (&self.cgroups, self.cgroup_name(id)) {
            (Some(cgroups), Some(name)) => cgroups.open(&name).is_frozen().unwrap_or(false),
            _ => false,
        }
    }

    async fn create_in(&self, spec: &SandboxSpec, dir: &Path) -> Result<Attached> {
        let id = spec.id;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_ctx("chmod sandbox dir"))?;
        // Sandbox root builds its root from here, and nobody else may look in.
        self.chown_to_root(dir)?;
        fs::write(dir.join("layer"), self.layer.display().to_string())
            .map_err(io_ctx("recording the layer"))?;
        fs::create_dir(dir.join("root")).map_err(io_ctx("creating the root mount point"))?;
        let (upper, work) = self.storage.create_layer(
            id.as_str(),
            dir,
            spec.snapshot.as_deref(),
            spec.disk_mb.map(|mb| mb.saturating_mul(1 << 20)),
            &|p: &Path| self.chown_to_root(p),
        )?;
        let socket = dir.join("agent.sock");
        if socket.as_os_str().len() >= 100 {
            return Err(RuntimeError::Unavailable(format!(
                "the agent socket path {} is too long for a unix socket; choose a shorter state directory",
                socket.display()
            )));
        }

        // Checked before a ready launcher is taken: a refused create must
        // not use one up.
        if let Some(network) = &spec.network {
            self.check_network(network)?;
        }
        let volumes = spec
            .volumes
            .iter()
            .map(|v| {
                let source = self.storage.volume_path(&v.key);
                if source.is_dir() {
                    Ok(VolumeBind {
                        source,
                        target: v.path.clone(),
                        read_only: v.read_only,
                    })
                } else {
                    Err(RuntimeError::Unavailable(format!(
                        "volume {} does not exist",
                        v.key
                    )))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let memory_bytes = spec.memory_mb.saturating_mul(1 << 20);
        let slot = self
            .pool
            .take_or_prepare(&self.opts.launcher, self.cgroups.as_ref())
            .await
            .map_err(|reason| RuntimeError::StartFailed { id, reason })?;
        if let Some(name) = &slot.cgroup_name {
            // Recorded first, so a failure below still cleans the cgroup up.
            let recorded = fs::write(dir.join("cgroup"), name);
            self.pool.release(name);
            recorded.map_err(io_ctx("recording the cgroup"))?;
        }
        if let Some(cg) = &slot.cgroup {
            let period = 100_000u64;
            let limits = Limits {
                memory_bytes: Some(memory_bytes),
                cpu_quota_us: Some(((spec.cpu * period as f64).round() as u64).max(1000)),
                cpu_period_us: period,
                pids_max: Some(spec.pids),
            };
            cg.apply_limits(&limits)
                .map_err(|e| RuntimeError::sys(format!("setting the limits of {id}"), e))?;
            // Before the launcher gets its spec: setting the sandbox up is
            // most of the work.
            if spec.background {
                cg.set_background(true)
                    .map_err(|e| RuntimeError::sys(format!("lowering the priority of {id}"), e))?;
            }
        }
        let (user_uid, user_gid) = self.user_ids();
        let mut env = spec.env.clone();
        if let Some(network) = &spec.network {
            egress::Proxies::save(dir, network)?;
            env.extend(egress::proxy_env().map(|(k, v)| (k.to_owned(), v)));
        }
        let (tmp_size, shm_size) = crate::tmpfs_sizes(memory_bytes, self.opts.tmp_bytes);
        let init_spec = InitSpec {
            id: id.to_string(),
            hostname: "capsule".to_owned(),
            mapping: self.mapping.clone(),
            lower: vec![self.layer.clone()],
            upper,
            work,
            root: dir.join("root"),
            socket: socket.clone(),
            log: dir.join("agent.log"),
            pid_file: dir.join("init.pid"),
            binds: self
                .layout
                .binds
                .iter()
                .chain(spec.template.extra_binds.iter())
                .cloned()
                .collect(),
            volumes,
            tmp_size_bytes: tmp_size,
            shm_size_bytes: shm_size,
            owned_dirs: vec![
                OwnedDir {
                    path: "workspace".into(),
                    uid: user_uid,
                    gid: user_gid,
                    mode: 0o755,
                },
                OwnedDir {
                    path: "home/user".into(),
                    uid: user_uid,
                    gid: user_gid,
                    mode: 0o750,
                },
            ],
            rlimits: SandboxRlimits::default(),
            landlock: true,
            seccomp: true,
            agent: AgentSettings {
                env,
                default_user: "user".to_owned(),
                single_id: !self.mapping.maps_uid(SANDBOX_USER_ID),
            },
        };
        let (pid, start_time) = self
            .launch(&init_spec, slot.launcher)
            .await
            .map_err(|reason| {
                let reason =
                    if reason.contains("unshare") && self.mapping.method != MapMethod::Direct {
                        format!(
                            "{reason}; unprivileged user namespaces may be disabled on this host \
                     (sysctl kernel.unprivileged_userns_clone, or AppArmor's \
                     kernel.apparmor_restrict_unprivileged_userns)"
                        )
                    } else {
                        reason
                    };
                RuntimeError::StartFailed { id, reason }
            })?;
        let pidfd = ProcessRef { pid, start_time }
            .open()
            .map_err(|e| RuntimeError::sys("opening the sandbox init", e))?
            .ok_or_else(|| RuntimeError::StartFailed {
                id,
                reason: "the sandbox init exited right after start".into(),
            })?;
        if let Some(network) = &spec.network {
            self.proxies.start(id, pid, network)?;
        }
        Ok(self.attached(id, pidfd))
    }
}

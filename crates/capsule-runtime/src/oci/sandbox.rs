//! One sandbox's life on the host: its directory, the bundle, the
//! runtime's `create`, `start` and `delete`, and the wait for its agent.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capsule_api::SandboxId;
use capsule_protocol::client::AgentClient;
use capsule_sys::error::chain;
use capsule_sys::process::{PidFd, ProcessRef};

use super::command::{self, CommandError};
use super::{
    COMMAND_TIMEOUT, CREATE_TIMEOUT, ContainerState, EXIT_POLL, OciRuntime, READY_TIMEOUT, bundle,
    command_error, io_ctx, is_missing_container, rootfs,
};
use crate::{Attached, ExitReason, Result, RuntimeError, SandboxSpec};

impl OciRuntime {
    pub(super) fn sandbox_dir(&self, id: SandboxId) -> PathBuf {
        self.opts.dir.join("sandboxes").join(id.as_str())
    }

    pub(super) fn socket(&self, id: SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("run").join("agent.sock")
    }

    pub(super) fn chown_to_root(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, self.mapping.host_uid(0), self.mapping.host_gid(0))
            .map_err(io_ctx(format!("chown {}", path.display())))
    }

    pub(super) fn read_init(&self, id: SandboxId) -> Option<ProcessRef> {
        let text = fs::read(self.sandbox_dir(id).join("init.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub(super) async fn state(&self, id: SandboxId) -> std::result::Result<String, CommandError> {
        let out = self
            .cli
            .run(&["state", id.as_str()], COMMAND_TIMEOUT)
            .await?;
        let state: ContainerState =
            serde_json::from_str(&out).map_err(|e| CommandError::Failed {
                runtime: self.cli.flavor,
                command: format!("{} state {id}", self.cli.path.display()),
                status: "answered".into(),
                output: format!("unreadable state ({e}): {}", out.trim()),
            })?;
        Ok(state.status)
    }

    pub(super) fn exit_future(&self, id: SandboxId, pidfd: PidFd) -> crate::ExitFuture {
        let flavor = self.cli.flavor;
        let cgroups = self.cgroups.clone();
        Box::pin(async move {
            // The init is not our child (the runtime's `create` forked it),
            // so there is no status to reap; the pidfd says when it is gone.
            // Polled, because registering a raw descriptor with Tokio needs
            // `unsafe`, which this crate does not use.
            let mut tick = tokio::time::interval(EXIT_POLL);
            while !pidfd.has_exited() {
                tick.tick().await;
            }
            let oom = cgroups
                .and_then(|c| c.oom_kills(id.as_str()))
                .is_some_and(|n| n > 0);
            let pid = pidfd.pid();
            ExitReason(if oom {
                format!(
                    "the {flavor} container's init (host pid {pid}) exited after the \
                     out-of-memory killer struck in the sandbox"
                )
            } else {
                format!("the {flavor} container's init (host pid {pid}) exited")
            })
        })
    }

    pub(super) fn attached(&self, id: SandboxId, pidfd: PidFd) -> Attached {
        Attached {
            agent: AgentClient::unix(self.socket(id)),
            exited: self.exit_future(id, pidfd),
        }
    }

    /// The last output of the runtime and the agent, for errors.
    pub(super) fn console_tail(&self, id: SandboxId) -> String {
        let text = command::read_log_since(&self.sandbox_dir(id).join("console.log"), 0);
        if text.is_empty() {
            "(no output)".to_owned()
        } else {
            text
        }
    }

    pub(super) async fn create_in(&self, spec: &SandboxSpec, dir: &Path) -> Result<Attached> {
        let id = spec.id;
        let failed = |reason: String| RuntimeError::StartFailed { id, reason };
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_ctx("chmod sandbox dir"))?;
        self.chown_to_root(dir)?;
        fs::write(dir.join("layer"), self.layer.display().to_string())
            .map_err(io_ctx("recording the layer"))?;
        for sub in ["upper", "work", "rootfs", "run"] {
            let p = dir.join(sub);
            fs::create_dir(&p).map_err(io_ctx(format!("creating {}", p.display())))?;
            if sub != "rootfs" {
                self.chown_to_root(&p)?;
            }
        }
        fs::set_permissions(dir.join("upper"), fs::Permissions::from_mode(0o755))
            .map_err(io_ctx("chmod upper"))?;
        let socket = self.socket(id);
        if socket.as_os_str().len() >= 100 {
            return Err(RuntimeError::Unavailable(format!(
                "the agent socket path {} is too long for a unix socket; choose a shorter state directory",
                socket.display()
            )));
        }
        let rootfs = dir.join(bundle::ROOTFS);
        rootfs::mount_overlay(
            std::slice::from_ref(&self.layer),
            &dir.join("upper"),
            &dir.join("work"),
            &rootfs,
        )
        .map_err(|e| RuntimeError::sys(format!("mounting the root overlay of {id}"), e))?;

        let memory_bytes = spec.memory_mb.saturating_mul(1 << 20);
        let cgroup_name = id.to_string();
        let cgroups_path = self.cgroups.as_ref().map(|c| c.runtime_path(&cgroup_name));
        let limit_swap = self.cgroups.as_ref().is_some_and(|c| {
            c.cgroups.hierarchies.iter().any(|h| {
                h.parent.join("memory.memsw.limit_in_bytes").exists()
                    || h.parent.join("memory.swap.max").exists()
            })
        });
        let binds: Vec<PathBuf> = self
            .layout
            .binds
            .iter()
            .chain(spec.template.extra_binds.iter())
            .cloned()
            .collect();
        let (tmp_size, shm_size) = crate::tmpfs_sizes(memory_bytes, self.opts.tmp_bytes);
        let config = bundle::config(&bundle::BundleParams {
            flavor: self.cli.flavor,
            hostname: "capsule",
            env: &spec.env,
            mapping: &self.mapping,
            binds: &binds,
            socket_dir: &dir.join("run"),
            agent: &self.agent,
            default_user: "user",
            memory_bytes,
            limit_swap,
            cpu: spec.cpu,
            pids: spec.pids,
            tmp_bytes: tmp_size,
            shm_bytes: shm_size,
            cgroups_path: cgroups_path.as_deref(),
        })
        .map_err(failed)?;
        let config_path = dir.join("config.json");
        config
            .save(&config_path)
            .map_err(|e| failed(format!("writing {}: {e}", config_path.display())))?;

        let pid_file = dir.join("init.pid");
        let (bundle_dir, pid_path) = (dir.display().to_string(), pid_file.display().to_string());
        self.cli
            .run_logged(
                &[
                    "create",
                    "--bundle",
                    &bundle_dir,
                    "--pid-file",
                    &pid_path,
                    id.as_str(),
                ],
                CREATE_TIMEOUT,
                &dir.join("console.log"),
            )
            .await
            .map_err(|e| failed(chain(&e)))?;
        let pid: i32 = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| failed(format!("{} wrote no pid file", self.cli.flavor)))?;
        let init = ProcessRef::of(pid)
            .map_err(|e| failed(format!("the container's init vanished: {}", chain(&e))))?;
        let record = serde_json::to_vec(&init).expect("process refs serialize");
        fs::write(dir.join("init.json"), record).map_err(io_ctx("recording the init"))?;
        let pidfd = init
            .open()
            .map_err(|e| RuntimeError::sys("opening the container's init", e))?
            .ok_or_else(|| failed("the container's init exited right after create".into()))?;
        self.cli
            .run(&["start", id.as_str()], COMMAND_TIMEOUT)
            .await
            .map_err(|e| failed(format!("{}; output: {}", chain(&e), self.console_tail(id))))?;

        let attached = self.attached(id, pidfd);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let probe = tokio::time::timeout(Duration::from_secs(1), attached.agent.health());
            if let Ok(Ok(())) = probe.await {
                return Ok(attached);
            }
            if !init.is_alive() {
                return Err(failed(format!(
                    "the {} container's init exited before its agent answered; output: {}",
                    self.cli.flavor,
                    self.console_tail(id)
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(failed(format!(
                    "the agent did not answer on {} within {}s; output: {}",
                    socket.display(),
                    READY_TIMEOUT.as_secs(),
                    self.console_tail(id)
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the container through the runtime, then makes sure its init
    /// is gone.
    pub(super) async fn stop(&self, id: SandboxId) -> Result<()> {
        // The init first: its end takes every process of the sandbox with
        // it (it is PID 1 of the pid namespace, or gVisor's Sentry), and
        // the runtime then deletes a stopped container at once (runsc
        // takes over a second to stop a running one itself).
        if let Some(init) = self.read_init(id)
            && let Ok(Some(pidfd)) = init.open()
        {
            let _ = pidfd.send_signal(libc::SIGKILL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !pidfd.has_exited() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if !pidfd.has_exited() {
                return Err(RuntimeError::Unavailable(format!(
                    "the init of {id} (host pid {}) did not die",
                    init.pid
                )));
            }
        }
        // The runtime's own processes (gVisor's Sentry and gofer) are the
        // server's orphans: reaped here, or the runtime waits on zombies.
        capsule_sys::process::reap_foreign_zombies();
        // Also when no init was recorded: a create that failed half-way
        // may have left a container behind.
        let deleted = match self
            .cli
            .run(&["delete", "--force", id.as_str()], COMMAND_TIMEOUT)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_missing_container(e.output()) => Ok(()),
            Err(e) => Err(command_error(e)),
        };
        capsule_sys::process::reap_foreign_zombies();
        deleted
    }

    /// Runtime state entries of a sandbox (`<id>` for runc and crun,
    /// `<id>_sandbox:<id>.state` and friends for runsc).
    pub(super) fn state_entries(&self, id: Option<SandboxId>) -> Vec<(SandboxId, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.opts.dir.join("state")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let sid: SandboxId = name.get(..8)?.parse().ok()?;
                let rest = &name[8..];
                let ours = rest.is_empty() || rest.starts_with(['_', '.', ':']);
                (ours && id.is_none_or(|i| i == sid)).then(|| (sid, e.path()))
            })
            .collect()
    }
}

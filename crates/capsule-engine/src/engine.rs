//! The sandbox lifecycle: create, look up, expire, delete, recover after a
//! restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use capsule_api::sandbox::{CreateParams, CreateResult, SandboxInfo, SandboxState, TemplateInfo};
use capsule_api::timefmt::{UnixMillis, format_rfc3339, now_millis};
use capsule_api::{ApiError, ErrorKind, SandboxId};
use capsule_protocol::client::AgentClient;
use capsule_runtime::{Runtime, SandboxSpec};
use tokio::sync::Notify;

use crate::config::EngineConfig;
use crate::errors::{from_runtime, from_store};
use crate::store::{AccessTokens, SandboxExtra, SandboxRecord, Store, TemplateRecord, VolumeMount};
use crate::templates::{self, Template};
use crate::tenancy::Principal;

/// A running sandbox.
pub(crate) struct Live {
    pub record: Mutex<SandboxRecord>,
    pub agent: AgentClient,
    /// The last call or terminal traffic (for idle auto-pause).
    pub last_active: std::sync::atomic::AtomicI64,
    /// Held while pausing or resuming, so the two never interleave.
    pub transition: tokio::sync::Mutex<()>,
    /// Health checks failed in a row.
    pub health_failures: std::sync::atomic::AtomicU32,
}

/// Everything needed to start one sandbox, checked.
pub(crate) struct Plan {
    pub tenant: String,
    pub template: Template,
    pub ttl_ms: u64,
    pub cpu: f64,
    pub memory_mb: u64,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub extra: SandboxExtra,
    /// The volumes to mount, resolved for the backend.
    pub volumes: Vec<capsule_runtime::VolumeSpec>,
    /// The backend it runs on.
    pub runtime: &'static str,
    /// Egress, when asked for (its secrets are not in `extra`).
    pub network: Option<capsule_runtime::NetworkSpec>,
}

impl Live {
    pub fn record(&self) -> SandboxRecord {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A template and whether this host can serve it.
#[derive(Debug, Clone)]
pub(crate) struct TemplateEntry {
    pub template: Template,
    pub availability: Result<(), String>,
}

pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) store: Store,
    pub(crate) runtime: Arc<dyn Runtime>,
    live: Mutex<HashMap<SandboxId, Arc<Live>>>,
    /// Ids being created, counted against the capacity.
    creating: Mutex<usize>,
    /// Set (under the `creating` lock) when the engine shuts down: warm
    /// pools make no more sandboxes.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    templates: RwLock<BTreeMap<String, TemplateEntry>>,
    pub(crate) reaper_wake: Arc<Notify>,
    pub(crate) keys: crate::tenancy::Keys,
    /// Warm pool sizes, by template.
    pub(crate) pools: Mutex<BTreeMap<String, u32>>,
    pub(crate) pool_wake: Arc<Notify>,
}

const ENV_NAME_MAX: usize = 256;
const ENV_VALUE_MAX: usize = 128 * 1024;
const METADATA_MAX_PAIRS: usize = 64;
const METADATA_KEY_MAX: usize = 256;
const METADATA_VALUE_MAX: usize = 4096;

/// Checks environment variables given to a sandbox or a process.
pub(crate) fn validate_env(env: &BTreeMap<String, String>, field: &str) -> Result<(), ApiError> {
    for (k, v) in env {
        let valid_name = !k.is_empty()
            && k.len() <= ENV_NAME_MAX
            && !k.contains(['=', '\0'])
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(ApiError::invalid_params(format!(
                "`{field}` has an invalid variable name {k:?} (non-empty, no '=' or NUL, not starting with a digit)"
            )));
        }
        if v.contains('\0') || v.len() > ENV_VALUE_MAX {
            return Err(ApiError::invalid_params(format!(
                "`{field}.{k}` must be at most {ENV_VALUE_MAX} bytes without NUL bytes"
            )));
        }
    }
    Ok(())
}

pub(crate) fn validate_metadata(meta: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if meta.len() > METADATA_MAX_PAIRS {
        return Err(ApiError::invalid_params(format!(
            "`metadata` has {} entries; the limit is {METADATA_MAX_PAIRS}",
            meta.len()
        )));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > METADATA_KEY_MAX || v.len() > METADATA_VALUE_MAX {
            return Err(ApiError::invalid_params(format!(
                "`metadata` key {k:?}: keys must be 1..={METADATA_KEY_MAX} bytes and values at most {METADATA_VALUE_MAX}"
            )));
        }
    }
    Ok(())
}

impl Engine {
    /// Opens the engine: loads templates, re-attaches to sandboxes that
    /// survived a restart, cleans up what cannot be re-attached, and starts
    /// the expiry reaper.
    pub async fn start(
        config: EngineConfig,
        store: Store,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Arc<Self>, ApiError> {
        let keys = crate::tenancy::Keys::new(
            config.api_keys.clone(),
            store.keys().map_err(from_store)?,
            config.rate_limit_per_min,
        );
        let engine = Arc::new(Self {
            keys,
            config,
            store,
            runtime,
            live: Mutex::new(HashMap::new()),
            creating: Mutex::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            templates: RwLock::new(BTreeMap::new()),
            reaper_wake: Arc::new(Notify::new()),
            pools: Mutex::new(BTreeMap::new()),
            pool_wake: Arc::new(Notify::new()),
        });
        engine.load_templates()?;
        engine.recover().await?;
        engine.load_pools()?;
        let reaper = Arc::downgrade(&engine);
        tokio::spawn(async move { reap_loop(reaper).await });
        let pools = Arc::downgrade(&engine);
        tokio::spawn(async move { Engine::keep_pools(pools).await });
        if engine.config.health_interval_ms > 0 {
            let health = Arc::downgrade(&engine);
            tokio::spawn(async move { health_loop(health).await });
        }
        Ok(engine)
    }

    /// Pool sizes: those set through the API (kept in the store) over the
    /// server's flags.
    fn load_pools(&self) -> Result<(), ApiError> {
        let mut pools: BTreeMap<String, u32> = self.config.pools.iter().cloned().collect();
        for (template, size) in self.store.pools().map_err(from_store)? {
            pools.insert(template, size);
        }
        pools.retain(|t, size| {
            let ok = *size > 0 && self.template(t).is_ok();
            if !ok && *size > 0 {
                tracing::warn!("no warm pool for template {t}: it cannot run here");
            }
            ok
        });
        *self.pools.lock().unwrap_or_else(|p| p.into_inner()) = pools;
        Ok(())
    }

    /// The live sandboxes.
    pub(crate) fn live_handles(&self) -> Vec<Arc<Live>> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn load_templates(&self) -> Result<(), ApiError> {
        for t in templates::builtin() {
            self.store
                .upsert_template(&TemplateRecord {
                    name: t.name.clone(),
                    builtin: true,
                    definition: serde_json::to_string(&t).expect("templates serialize"),
                })
                .map_err(from_store)?;
        }
        let mut map = BTreeMap::new();
        for rec in self.store.templates().map_err(from_store)? {
            let template: Template = match serde_json::from_str(&rec.definition) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("ignoring template {}: unreadable definition: {e}", rec.name);
                    continue;
                }
            };
            let availability = self.runtime.check_template(&template.spec());
            if let Err(why) = &availability {
                tracing::info!(
                    "template {} is unavailable on this host: {why}",
                    template.name
                );
            }
            map.insert(
                rec.name,
                TemplateEntry {
                    template,
                    availability,
                },
            );
        }
        *self.templates.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// Re-attaches to surviving sandboxes and removes everything else.
    async fn recover(self: &Arc<Self>) -> Result<(), ApiError> {
        let now = now_millis();
        let records = self
            .store
            .sandboxes_in(&[
                SandboxState::Creating,
                SandboxState::Running,
                SandboxState::Stopping,
            ])
            .map_err(from_store)?;
        for rec in records {
            let id = rec.id;
            if rec.state == SandboxState::Running && !self.is_over(&rec, now) {
                // A paused sandbox's agent cannot answer the attach check:
                // thawed for it, frozen again once attached.
                let paused = rec.paused_at.is_some();
                if paused && let Err(e) = self.runtime.resume(id).await {
                    tracing::warn!(sandbox = %id, "thawing to re-attach failed: {e}");
                }
                match self.runtime.attach(id).await {
                    Ok(Some(attached)) => {
                        if paused && let Err(e) = self.runtime.pause(id).await {
                            tracing::warn!(sandbox = %id, "pausing again after re-attaching failed: {e}");
                        }
                        tracing::info!(sandbox = %id, "re-attached after restart");
                        self.adopt(rec, attached);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(sandbox = %id, "re-attaching failed: {e}"),
                }
                let _ = self.runtime.destroy(id).await;
                self.store
                    .set_state(
                        id,
                        SandboxState::Failed,
                        Some("the sandbox did not survive a restart of the server"),
                        Some(now),
                    )
                    .map_err(from_store)?;
                continue;
            }
            if let Err(e) = self.runtime.destroy(id).await {
                tracing::warn!(sandbox = %id, "cleanup failed: {e}");
            }
            let (state, reason) = match rec.state {
                SandboxState::Creating => (
                    SandboxState::Failed,
                    "creation was interrupted by a restart of the server",
                ),
                SandboxState::Stopping if rec.reason.as_deref() == Some("expired") => {
                    (SandboxState::Deleted, "expired")
                }
                SandboxState::Stopping => (SandboxState::Deleted, "deleted"),
                _ => (SandboxState::Deleted, "expired"),
            };
            self.store
                .set_state(id, state, Some(reason), Some(now))
                .map_err(from_store)?;
        }
        self.sweep_leftovers().await;
        Ok(())
    }

    /// Removes host resources no live sandbox owns.
    async fn sweep_leftovers(&self) {
        let live: Vec<SandboxId> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        let creating = *self.creating.lock().unwrap_or_else(|p| p.into_inner());
        for id in self.runtime.leftovers() {
            if live.contains(&id) {
                continue;
            }
            // A sandbox being created right now holds resources before it is live.
            if creating > 0
                && let Ok(Some(rec)) = self.store.get_sandbox(id)
                && rec.state == SandboxState::Creating
            {
                continue;
            }
            tracing::info!(sandbox = %id, "removing leftovers");
            if let Err(e) = self.runtime.destroy(id).await {
                tracing::warn!(sandbox = %id, "removing leftovers failed: {e}");
            }
        }
    }

    /// Registers a running sandbox and watches its init.
    fn adopt(self: &Arc<Self>, rec: SandboxRecord, attached: capsule_runtime::Attached) {
        let id = rec.id;
        let live = Arc::new(Live {
            record: Mutex::new(rec),
            agent: attached.agent,
            last_active: std::sync::atomic::AtomicI64::new(now_millis()),
            transition: tokio::sync::Mutex::new(()),
            health_failures: std::sync::atomic::AtomicU32::new(0),
        });
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, live);
        let engine = Arc::downgrade(self);
        let exited = attached.exited;
        tokio::spawn(async move {
            let reason = exited.await;
            if let Some(engine) = engine.upgrade() {
                engine.init_exited(id, reason.0).await;
            }
        });
        self.reaper_wake.notify_one();
    }

    /// A sandbox whose agent is gone for good: failed, with the reason.
    /// The sandbox's init ended without being asked to: mark it failed and
    /// reclaim what it held.
    async fn init_exited(&self, id: SandboxId, reason: String) {
        let removed = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if removed.is_none() {
            return; // Deleted on purpose; the deleter cleans up.
        }
        tracing::warn!(sandbox = %id, "sandbox failed: {reason}");
        // Reclaimed first: a sandbox shown as failed holds nothing any more.
        if let Err(e) = self.runtime.destroy(id).await {
            tracing::warn!(sandbox = %id, "reclaiming a failed sandbox: {e}");
        }
        let _ = self
            .store
            .set_state(id, SandboxState::Failed, Some(&reason), Some(now_millis()));
    }

    pub(crate) fn template(&self, name: &str) -> Result<Template, ApiError> {
        let templates = self.templates.read().unwrap_or_else(|p| p.into_inner());
        let entry = templates.get(name).ok_or_else(|| {
            ApiError::new(
                ErrorKind::TemplateNotFound,
                format!(
                    "template {name:?} does not exist; available: {}",
                    templates
                        .iter()
                        .filter(|(_, t)| t.availability.is_ok())
                        .map(|(n, _)| n.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_detail("template", name)
        })?;
        match &entry.availability {
            Ok(()) => Ok(entry.template.clone()),
            Err(why) => Err(ApiError::new(
                ErrorKind::TemplateUnavailable,
                format!("template {name:?} cannot run on this host: {why}"),
            )
            .with_detail("template", name)),
        }
    }

    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.templates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| TemplateInfo {
                name: e.template.name.clone(),
                description: e.template.description.clone(),
                available: e.availability.is_ok(),
                reason: e.availability.clone().err(),
                run: e.template.run.describe(),
            })
            .collect()
    }

    /// Warnings about how this host runs sandboxes.
    pub fn warnings(&self) -> Vec<String> {
        self.runtime.warnings()
    }

    pub fn backend(&self) -> &'static str {
        self.runtime.name()
    }

    pub(crate) fn ttl(&self, ttl_ms: Option<u64>) -> Result<u64, ApiError> {
        let ttl = ttl_ms.unwrap_or(self.config.default_ttl_ms);
        if ttl < 1000 || ttl > self.config.max_ttl_ms {
            return Err(ApiError::invalid_params(format!(
                "`ttl_ms` {ttl} is out of range: it must be between 1000 and {}",
                self.config.max_ttl_ms
            ))
            .with_detail("ttl_ms", ttl));
        }
        Ok(ttl)
    }

    pub async fn create(
        self: &Arc<Self>,
        who: &Principal,
        p: CreateParams,
    ) -> Result<CreateResult, ApiError> {
        let result = self.create_checked(who, p).await;
        self.audit(
            who,
            "sandbox.v1.create",
            result.as_ref().ok().map(|r| r.id.as_str()),
            &result,
        );
        result
    }

    /// Checks a CPU count and a memory limit against this server's bounds.
    pub(crate) fn check_shape(&self, cpu: f64, memory_mb: u64) -> Result<(), ApiError> {
        if !cpu.is_finite() || cpu < 0.01 || cpu > self.config.max_cpu {
            return Err(ApiError::invalid_params(format!(
                "`cpu` {cpu} is out of range: it must be between 0.01 and {} (this host's cores)",
                self.config.max_cpu
            ))
            .with_detail("cpu", cpu));
        }
        if memory_mb < self.config.min_memory_mb || memory_mb > self.config.max_memory_mb {
            return Err(ApiError::invalid_params(format!(
                "`memory_mb` {memory_mb} is out of range: it must be between {} and {}",
                self.config.min_memory_mb, self.config.max_memory_mb
            ))
            .with_detail("memory_mb", memory_mb));
        }
        Ok(())
    }

    async fn create_checked(
        self: &Arc<Self>,
        who: &Principal,
        p: CreateParams,
    ) -> Result<CreateResult, ApiError> {
        let snapshot = match &p.snapshot {
            Some(r) => Some(self.resolve_snapshot(who, r)?),
            None => None,
        };
        let template_name = match &snapshot {
            // A snapshot sits on its template's files.
            Some(snap) if p.template != "base" && p.template != snap.template => {
                return Err(ApiError::invalid_params(format!(
                    "snapshot {} was taken of a {:?} sandbox; leave `template` out or give {:?}",
                    snap.id, snap.template, snap.template
                )));
            }
            Some(snap) => snap.template.clone(),
            None => p.template.clone(),
        };
        let template = self.template(&template_name)?;
        let ttl = self.ttl(p.ttl_ms)?;
        let cpu = p.cpu.unwrap_or(self.config.default_cpu);
        let memory_mb = p.memory_mb.unwrap_or(self.config.default_memory_mb);
        self.check_shape(cpu, memory_mb)?;
        validate_env(&p.env, "env")?;
        validate_metadata(&p.metadata)?;
        let network = crate::network::plan_network(p.network.as_ref())?;
        if let Some(network) = &network {
            self.runtime.check_network(network).map_err(from_runtime)?;
        }
        let runtime = self
            .runtime
            .select(p.runtime.as_deref().or(template.runtime.as_deref()))
            .map_err(|why| ApiError::new(ErrorKind::Unsupported, why))?;
        let disk_mb = self.disk_mb(p.disk_mb)?;
        if let Some(ms) = p.auto_pause_ms
            && ms < 1000
        {
            return Err(ApiError::invalid_params(format!(
                "`auto_pause_ms` {ms} is too short: at least 1000"
            )));
        }
        let volumes = self.resolve_volumes(who, &p.volumes)?;
        let mut env = snapshot.as_ref().map(|s| s.env.clone()).unwrap_or_default();
        env.extend(p.env);
        let plan = Plan {
            tenant: who.tenant.clone(),
            template,
            ttl_ms: ttl,
            cpu,
            memory_mb,
            env,
            metadata: p.metadata,
            extra: SandboxExtra {
                volumes: p
                    .volumes
                    .iter()
                    .map(|v| VolumeMount {
                        name: v.name.clone(),
                        path: v.path.clone(),
                        read_only: v.read_only,
                    })
                    .collect(),
                snapshot: snapshot.as_ref().map(|s| s.id.clone()),
                disk_mb,
                auto_pause_ms: p.auto_pause_ms,
                pause_on_expiry: p.pause_on_expiry,
                network: network.as_ref().map(crate::network::redacted),
                ..SandboxExtra::default()
            },
            volumes,
            runtime,
            network,
        };
        if let Some(claimed) = self.claim_pooled(&plan).await {
            return Ok(claimed);
        }
        self.launch(plan).await
    }

    /// The disk limit of a new sandbox's files, in MiB.
    pub(crate) fn disk_mb(&self, asked: Option<u64>) -> Result<Option<u64>, ApiError> {
        match asked.or(self.config.default_disk_mb) {
            Some(mb) if mb < 16 || mb > self.config.max_disk_mb => {
                Err(ApiError::invalid_params(format!(
                    "`disk_mb` {mb} is out of range: it must be between 16 and {}",
                    self.config.max_disk_mb
                ))
                .with_detail("disk_mb", mb))
            }
            other => Ok(other),
        }
    }

    /// Checks quotas and capacity, then starts the planned sandbox.
    pub(crate) async fn launch(self: &Arc<Self>, plan: Plan) -> Result<CreateResult, ApiError> {
        if !plan.extra.pooled {
            self.check_sandbox_quota(&plan.tenant, plan.cpu, plan.memory_mb, 1)?;
        }
        // Capacity, counted with the ones being created.
        {
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            if plan.extra.pooled && self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ApiError::new(
                    ErrorKind::Unavailable,
                    "the server is shutting down",
                ));
            }
            // Unclaimed pooled sandboxes never block a create: only a pool's
            // own refills count them, so the server may run at most the
            // pools' sizes beyond the limit.
            let live = self
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .filter(|l| {
                    plan.extra.pooled
                        || !l
                            .record
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extra
                            .pooled
                })
                .count();
            if live + *creating >= self.config.max_sandboxes {
                return Err(ApiError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "this server already runs {} sandboxes, its limit",
                        self.config.max_sandboxes
                    ),
                )
                .with_detail("limit", self.config.max_sandboxes)
                .with_detail("current", live + *creating));
            }
            *creating += 1;
        }
        let result = self.launch_counted(plan).await;
        *self.creating.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        result
    }

    async fn launch_counted(self: &Arc<Self>, plan: Plan) -> Result<CreateResult, ApiError> {
        let id = loop {
            let id = SandboxId::random();
            let in_use = self
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id);
            if !in_use && !self.store.id_taken(id).map_err(from_store)? {
                break id;
            }
        };
        let now = now_millis();
        let mut rec = SandboxRecord {
            id,
            template: plan.template.name.clone(),
            state: SandboxState::Creating,
            created_at: now,
            expires_at: now + plan.ttl_ms as i64,
            cpu: plan.cpu,
            memory_mb: plan.memory_mb,
            pids: self.config.pids,
            metadata: plan.metadata,
            env: plan.env,
            reason: None,
            ended_at: None,
            tokens: AccessTokens::generate(),
            tenant: plan.tenant,
            runtime: plan.runtime.to_owned(),
            paused_at: None,
            extra: plan.extra,
        };
        self.store.insert_sandbox(&rec).map_err(from_store)?;
        let mut env = plan.template.env.clone();
        env.extend(rec.env.clone());
        let spec = SandboxSpec {
            id,
            template: plan.template.spec(),
            env,
            cpu: plan.cpu,
            memory_mb: plan.memory_mb,
            pids: rec.pids,
            disk_mb: rec.extra.disk_mb,
            snapshot: rec.extra.snapshot.clone(),
            volumes: plan.volumes,
            network: plan.network,
            runtime: Some(plan.runtime.to_owned()),
            background: rec.extra.pooled,
        };
        let attached = match self.runtime.create(&spec).await {
            Ok(a) => a,
            Err(e) => {
                let err = from_runtime(e);
                tracing::warn!(sandbox = %id, "create failed: {}", err.message);
                let _ = self.store.set_state(
                    id,
                    SandboxState::Failed,
                    Some(&err.message),
                    Some(now_millis()),
                );
                // Whatever the backend made before failing goes now.
                if let Err(e) = self.runtime.destroy(id).await {
                    tracing::warn!(sandbox = %id, "cleaning up a failed create: {e}");
                }
                return Err(err);
            }
        };
        self.store
            .set_state(id, SandboxState::Running, None, None)
            .map_err(from_store)?;
        rec.state = SandboxState::Running;
        tracing::info!(sandbox = %id, template = %rec.template, "created");
        let result = CreateResult {
            id,
            template: rec.template.clone(),
            created_at: format_rfc3339(rec.created_at),
            expires_at: format_rfc3339(rec.expires_at),
        };
        self.adopt(rec, attached);
        Ok(result)
    }

    fn expired(id: SandboxId, rec: &SandboxRecord) -> ApiError {
        ApiError::new(
            ErrorKind::SandboxExpired,
            format!("sandbox {id} expired at {}", format_rfc3339(rec.expires_at)),
        )
        .with_detail("id", id.to_string())
        .with_detail("expired_at", format_rfc3339(rec.expires_at))
    }

    /// The error for an id that is not running.
    fn not_running(&self, id: SandboxId) -> ApiError {
        match self.store.get_sandbox(id) {
            Ok(Some(rec)) => match rec.state {
                // Expired: past its end, on its way out, or gone.
                SandboxState::Deleted | SandboxState::Stopping
                    if rec.reason.as_deref() == Some("expired") =>
                {
                    Self::expired(id, &rec)
                }
                SandboxState::Running if self.is_over(&rec, now_millis()) => {
                    Self::expired(id, &rec)
                }
                // Being deleted: for its callers it is gone already.
                SandboxState::Stopping if rec.reason.is_some() => ApiError::sandbox_not_found(id),
                SandboxState::Failed => ApiError::new(
                    ErrorKind::SandboxNotRunning,
                    format!(
                        "sandbox {id} failed: {}",
                        rec.reason.as_deref().unwrap_or("unknown reason")
                    ),
                )
                .with_detail("id", id.to_string())
                .with_detail("state", "failed"),
                SandboxState::Creating | SandboxState::Stopping => ApiError::new(
                    ErrorKind::SandboxNotRunning,
                    format!("sandbox {id} is {}", rec.state),
                )
                .with_detail("id", id.to_string())
                .with_detail("state", rec.state.as_str()),
                _ => ApiError::sandbox_not_found(id),
            },
            _ => ApiError::sandbox_not_found(id),
        }
    }

    /// A running sandbox, or the precise reason it is not available.
    pub(crate) fn running(&self, id: SandboxId) -> Result<Arc<Live>, ApiError> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        match live {
            Some(l) if !self.is_over(&l.record(), now_millis()) => Ok(l),
            _ => Err(self.not_running(id)),
        }
    }

    /// A running sandbox the caller may use; any other id is not found,
    /// whether it never existed or belongs to another tenant.
    pub(crate) fn owned(&self, who: &Principal, id: SandboxId) -> Result<Arc<Live>, ApiError> {
        if !self.visible_to(who, id) {
            return Err(ApiError::sandbox_not_found(id));
        }
        self.running(id)
    }

    /// True when `id` is the caller's (or the caller is an admin); false
    /// for ids that do not exist.
    pub(crate) fn visible_to(&self, who: &Principal, id: SandboxId) -> bool {
        if who.is_admin() {
            return true;
        }
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|l| l.record());
        let rec = match live {
            Some(r) => Some(r),
            None => self.store.get_sandbox(id).ok().flatten(),
        };
        rec.is_some_and(|r| r.tenant == who.tenant && !r.extra.pooled)
    }

    /// The agent of a running sandbox (for front doors that route to it).
    pub fn agent(&self, who: &Principal, id: SandboxId) -> Result<AgentClient, ApiError> {
        Ok(self.owned(who, id)?.agent.clone())
    }

    fn info(rec: &SandboxRecord) -> SandboxInfo {
        SandboxInfo {
            id: rec.id,
            template: rec.template.clone(),
            state: match (rec.state, rec.paused_at) {
                (SandboxState::Running, Some(_)) => SandboxState::Paused,
                (state, _) => state,
            },
            created_at: format_rfc3339(rec.created_at),
            expires_at: format_rfc3339(rec.expires_at),
            cpu: rec.cpu,
            memory_mb: rec.memory_mb,
            metadata: rec.metadata.clone(),
            runtime: rec.runtime.clone(),
            error: (rec.state == SandboxState::Failed)
                .then(|| rec.reason.clone())
                .flatten(),
        }
    }

    pub fn get(&self, who: &Principal, id: SandboxId) -> Result<SandboxInfo, ApiError> {
        match self.owned(who, id) {
            Ok(live) => Ok(Self::info(&live.record())),
            Err(e) => match self.store.get_sandbox(id).map_err(from_store)? {
                // Failed sandboxes stay visible so the owner can see why.
                Some(rec) if rec.state == SandboxState::Failed => Ok(Self::info(&rec)),
                _ => Err(e),
            },
        }
    }

    /// The caller's running sandboxes (and recently failed ones) whose
    /// metadata holds every pair of `filter`.
    pub fn list(
        &self,
        who: &Principal,
        filter: Option<&BTreeMap<String, String>>,
    ) -> Result<Vec<SandboxInfo>, ApiError> {
        let matches = |rec: &SandboxRecord| {
            who.sees(&rec.tenant)
                && !rec.extra.pooled
                && filter.is_none_or(|f| f.iter().all(|(k, v)| rec.metadata.get(k) == Some(v)))
        };
        let now = now_millis();
        let mut out: Vec<SandboxInfo> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|l| l.record())
            .filter(|r| !self.is_over(r, now) && matches(r))
            .map(|r| Self::info(&r))
            .collect();
        for rec in self
            .store
            .sandboxes_in(&[SandboxState::Failed])
            .map_err(from_store)?
        {
            if matches(&rec) {
                out.push(Self::info(&rec));
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn set_timeout(
        &self,
        who: &Principal,
        id: SandboxId,
        ttl_ms: u64,
    ) -> Result<String, ApiError> {
        let result = self.set_timeout_checked(who, id, ttl_ms);
        self.audit(who, "sandbox.v1.setTimeout", Some(id.as_str()), &result);
        result
    }

    fn set_timeout_checked(
        &self,
        who: &Principal,
        id: SandboxId,
        ttl_ms: u64,
    ) -> Result<String, ApiError> {
        let ttl = self.ttl(Some(ttl_ms))?;
        let live = self.owned(who, id)?;
        let expires_at = now_millis() + ttl as i64;
        self.store
            .set_expires_at(id, expires_at)
            .map_err(from_store)?;
        live.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expires_at = expires_at;
        self.reaper_wake.notify_one();
        Ok(format_rfc3339(expires_at))
    }

    pub async fn delete(&self, who: &Principal, id: SandboxId) -> Result<(), ApiError> {
        let result = if self.visible_to(who, id) {
            self.delete_any(id).await
        } else {
            Err(ApiError::sandbox_not_found(id))
        };
        self.audit(who, "sandbox.v1.delete", Some(id.as_str()), &result);
        result
    }

    /// Deletes a sandbox whoever owns it.
    pub(crate) async fn delete_any(&self, id: SandboxId) -> Result<(), ApiError> {
        let removed = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if removed.is_none() {
            // A failed sandbox is already stopped; deleting it just forgets it.
            if let Ok(Some(rec)) = self.store.get_sandbox(id)
                && rec.state == SandboxState::Failed
            {
                self.store
                    .set_state(
                        id,
                        SandboxState::Deleted,
                        Some("deleted"),
                        Some(now_millis()),
                    )
                    .map_err(from_store)?;
                return Ok(());
            }
            return Err(self.not_running(id));
        }
        self.stop(id, "deleted").await
    }

    /// Stops a sandbox that was removed from the live set.
    async fn stop(&self, id: SandboxId, reason: &str) -> Result<(), ApiError> {
        self.store
            .set_state(id, SandboxState::Stopping, Some(reason), None)
            .map_err(from_store)?;
        match self.runtime.destroy(id).await {
            Ok(()) => {
                self.store
                    .set_state(id, SandboxState::Deleted, Some(reason), Some(now_millis()))
                    .map_err(from_store)?;
                tracing::info!(sandbox = %id, "{reason}");
                Ok(())
            }
            Err(e) => {
                let err = from_runtime(e);
                tracing::error!(sandbox = %id, "stopping failed: {}", err.message);
                // Still "stopping": the reaper's leftover sweep retries.
                Err(err)
            }
        }
    }

    /// Deletes every sandbox whose time is up; returns how long until the next one expires.
    async fn expire_due(self: &Arc<Self>) -> Duration {
        let now = now_millis();
        let mut due = Vec::new();
        let mut to_pause = Vec::new();
        let mut next: Option<UnixMillis> = None;
        {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|id, l| {
                let rec = l.record();
                let exp = self.end_of(&rec);
                if exp <= now && rec.extra.pause_on_expiry && rec.paused_at.is_none() {
                    to_pause.push(l.clone());
                    true
                } else if exp <= now {
                    due.push(*id);
                    false
                } else {
                    next = Some(next.map_or(exp, |n| n.min(exp)));
                    true
                }
            });
        }
        for id in due {
            let engine = self.clone();
            tokio::spawn(async move {
                let _ = engine.stop(id, "expired").await;
            });
        }
        for live in to_pause {
            let engine = self.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.pause_live(&live).await {
                    let id = live.record().id;
                    tracing::warn!(sandbox = %id, "pausing at the end time failed, deleting: {}", e.message);
                    let _ = engine.delete_any(id).await;
                }
            });
        }
        let wait = next.map_or(60_000, |n| (n - now).clamp(1, 60_000));
        Duration::from_millis(wait as u64)
    }

    /// Stops supervising sandboxes without stopping them (they keep
    /// running; a restarted server re-attaches) and lets the backend release
    /// what it holds for itself.
    ///
    /// Unclaimed warm-pool sandboxes are the exception: they hold nothing of
    /// anyone's and no client can see them, so they go with the server (the
    /// next start makes new ones) instead of running on unsupervised.
    pub async fn shutdown(&self) {
        // No refill from here on (the pool sizes stay stored for the next start).
        self.wait_for_creates().await;
        let pooled: Vec<SandboxId> = self
            .live_records()
            .into_iter()
            .filter(|r| r.extra.pooled && r.tenant == crate::pools::POOL_TENANT)
            .map(|r| r.id)
            .collect();
        for id in pooled {
            if let Err(e) = self.delete_any(id).await {
                tracing::warn!(sandbox = %id, "deleting a pooled sandbox at shutdown failed: {}", e.message);
            }
        }
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.runtime.shutdown().await;
    }

    /// Stops the warm pools for good (no refill starts after this), then
    /// waits (up to 30 s) for creates in flight to finish.
    async fn wait_for_creates(&self) {
        {
            let _creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            self.closing
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while *self.creating.lock().unwrap_or_else(|p| p.into_inner()) > 0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends every sandbox (pooled ones and ones still being created
    /// included) and whatever any of them left on the host, then shuts
    /// down: for an embedded engine whose sandboxes must not outlive it.
    pub async fn shutdown_destroying_all(&self) {
        self.wait_for_creates().await;
        let ids: Vec<SandboxId> = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let ids = live.keys().copied().collect();
            live.clear();
            ids
        };
        for id in ids {
            if let Err(e) = self.stop(id, "deleted at shutdown").await {
                tracing::warn!(sandbox = %id, "deleting at shutdown failed: {}", e.message);
            }
        }
        self.sweep_leftovers().await;
        self.runtime.shutdown().await;
    }

    /// Records of the sandboxes in the live set.
    pub(crate) fn live_records(&self) -> Vec<SandboxRecord> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|l| l.record())
            .collect()
    }

    /// How many sandboxes run now.
    pub fn running_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

async fn reap_loop(engine: std::sync::Weak<Engine>) {
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        let Some(e) = engine.upgrade() else { return };
        let wait = e.expire_due().await;
        let wait = match e.pause_idle().await {
            Some(idle) => wait.min(idle),
            None => wait,
        };
        if last_sweep.elapsed() > Duration::from_secs(60) {
            last_sweep = tokio::time::Instant::now();
            e.sweep_leftovers().await;
            let cutoff = now_millis() - e.config.ended_retention_ms as i64;
            if let Err(err) = e.store.purge_ended(cutoff) {
                tracing::warn!("purging old records: {err}");
            }
            if e.config.audit_retention_ms > 0 {
                let cutoff = now_millis() - e.config.audit_retention_ms as i64;
                if let Err(err) = e.store.purge_audit(cutoff) {
                    tracing::warn!("purging old audit entries: {err}");
                }
            }
        }
        let wake = e.reaper_wake.clone();
        drop(e);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Checks every agent now and then; a sandbox whose agent stops answering
/// (three checks in a row) is marked failed with the reason and reclaimed.
async fn health_loop(engine: std::sync::Weak<Engine>) {
    use std::sync::atomic::Ordering;
    loop {
        let Some(e) = engine.upgrade() else { return };
        let interval = Duration::from_millis(e.config.health_interval_ms);
        // An agent that takes longer than this to answer counts as failing.
        let patience = interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
        let handles = e.live_handles();
        drop(e);
        for live in handles {
            let rec = live.record();
            if rec.paused_at.is_some() || rec.state != SandboxState::Running {
                continue; // a frozen agent cannot answer
            }
            let healthy = matches!(
                tokio::time::timeout(patience, live.agent.health()).await,
                Ok(Ok(()))
            );
            if healthy {
                live.health_failures.store(0, Ordering::Relaxed);
                continue;
            }
            let failures = live.health_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures >= 3 {
                let Some(e) = engine.upgrade() else { return };
                e.init_exited(
                    rec.id,
                    "the sandbox's agent stopped answering health checks".into(),
                )
                .await;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

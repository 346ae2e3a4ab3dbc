//! Warm pools: per template, sandboxes started ahead of time with the
//! default shape (CPU, memory, disk, no volumes). A `create` that fits the
//! shape claims one (its env, metadata and time to live are applied then)
//! and the pool refills in the background. Pooled sandboxes belong to no
//! tenant until claimed and are invisible to everyone.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use capsule_api::sandbox::{CreateResult, PoolInfo};
use capsule_api::timefmt::{format_rfc3339, now_millis};
use capsule_api::{ApiError, SandboxId};

use crate::engine::{Engine, Live, Plan};
use crate::errors::{from_agent, from_runtime, from_store};
use crate::store::SandboxExtra;
use crate::tenancy::Principal;

/// The tenant pooled sandboxes are recorded under until claimed.
pub(crate) const POOL_TENANT: &str = "";
/// Takes an unclaimed pooled sandbox out of the pool for deleting it: true
/// when it still was unclaimed. Checked and marked under the record's lock,
/// as a claim is, so a sandbox a create has just claimed is never deleted.
fn unclaimed_taken(live: &Live) -> bool {
    let mut r = live.record.lock().unwrap_or_else(|p| p.into_inner());
    if r.extra.pooled && r.tenant == POOL_TENANT {
        // No tenant has this name: no claim matches it any more.
        r.tenant = "\u{0}removed-from-pool".to_owned();
        true
    } else {
        false
    }
}

/// A pooled sandbox lives this long before it is replaced by a fresh one.
const POOLED_TTL_MS: u64 = 3_600_000;

impl Engine {
    fn pool_target(&self, template: &str) -> u32 {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(template)
            .copied()
            .unwrap_or(0)
    }

    fn pooled(&self, template: &str) -> Vec<Arc<Live>> {
        self.live_handles()
            .into_iter()
            .filter(|l| {
                let r = l.record();
                r.extra.pooled && r.tenant == POOL_TENANT && r.template == template
            })
            .collect()
    }

    /// Takes a ready sandbox for `plan` if one fits it.
    pub(crate) async fn claim_pooled(self: &Arc<Self>, plan: &Plan) -> Option<CreateResult> {
        let fits = (plan.cpu - self.config.default_cpu).abs() < 1e-9
            && plan.memory_mb == self.config.default_memory_mb
            && plan.extra.disk_mb == self.config.default_disk_mb
            && plan.volumes.is_empty()
            && plan.extra.snapshot.is_none()
            && plan.network.is_none()
            && self.pool_target(&plan.template.name) > 0;
        if !fits
            || self
                .check_sandbox_quota(&plan.tenant, plan.cpu, plan.memory_mb, 1)
                .is_err()
        {
            return None;
        }
        // One claimer per sandbox: the first to flip `pooled` wins.
        let live = self.pooled(&plan.template.name).into_iter().find(|l| {
            let mut r = l.record.lock().unwrap_or_else(|p| p.into_inner());
            if r.extra.pooled && r.tenant == POOL_TENANT && r.runtime == plan.runtime {
                r.tenant = plan.tenant.clone();
                true
            } else {
                false
            }
        })?;
        let id = live.record().id;
        self.pool_wake.notify_one();
        match self.finish_claim(&live, plan).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(sandbox = %id, "claiming a pooled sandbox failed, making a new one: {}", e.message);
                let _ = self.delete_any(id).await;
                None
            }
        }
    }

    async fn finish_claim(&self, live: &Live, plan: &Plan) -> Result<CreateResult, ApiError> {
        // Made at the lowest CPU priority; from now on it is in use.
        self.runtime
            .set_foreground(live.record().id)
            .await
            .map_err(from_runtime)?;
        if !plan.env.is_empty() {
            live.agent.init_env(&plan.env).await.map_err(from_agent)?;
        }
        let now = now_millis();
        let extra = SandboxExtra {
            pooled: false,
            ..plan.extra.clone()
        };
        let expires_at = now + plan.ttl_ms as i64;
        let rec = live.record();
        self.store
            .set_owner(rec.id, &plan.tenant, &plan.metadata, &plan.env, &extra)
            .map_err(from_store)?;
        self.store
            .set_expires_at(rec.id, expires_at)
            .map_err(from_store)?;
        {
            let mut r = live.record.lock().unwrap_or_else(|p| p.into_inner());
            r.tenant = plan.tenant.clone();
            r.metadata = plan.metadata.clone();
            r.env = plan.env.clone();
            r.extra = extra;
            r.expires_at = expires_at;
            // Its life counts from the claim, like a fresh sandbox's.
            r.created_at = now;
        }
        live.last_active.store(now, Ordering::Relaxed);
        self.reaper_wake.notify_one();
        tracing::info!(sandbox = %rec.id, template = %rec.template, "created (from the warm pool)");
        Ok(CreateResult {
            id: rec.id,
            template: rec.template.clone(),
            created_at: format_rfc3339(now),
            expires_at: format_rfc3339(expires_at),
        })
    }

    pub fn pools(&self) -> Vec<PoolInfo> {
        let targets = self.pools.lock().unwrap_or_else(|p| p.into_inner()).clone();
        targets
            .into_iter()
            .map(|(template, size)| PoolInfo {
                ready: self.pooled(&template).len() as u32,
                template,
                size,
            })
            .collect()
    }

    /// Sets how many ready sandboxes of `template` to keep (0 empties the pool).
    pub fn set_pool(
        &self,
        who: &Principal,
        template: &str,
        size: u32,
    ) -> Result<Vec<PoolInfo>, ApiError> {
        let result = (|| {
            who.require_admin("setting pools")?;
            self.template(template)?;
            if size > 256 {
                return Err(ApiError::invalid_params(format!(
                    "pool size {size} is above 256"
                )));
            }
            self.store.set_pool(template, size).map_err(from_store)?;
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            if size == 0 {
                pools.remove(template);
            } else {
                pools.insert(template.to_owned(), size);
            }
            Ok(())
        })();
        self.audit(who, "admin.v1.setPool", Some(template), &result);
        result?;
        self.pool_wake.notify_one();
        Ok(self.pools())
    }

    /// Tops pools up and trims what is beyond their size; runs until the
    /// engine goes away.
    pub(crate) async fn keep_pools(engine: std::sync::Weak<Engine>) {
        loop {
            let Some(e) = engine.upgrade() else { return };
            if e.closing.load(Ordering::SeqCst) {
                return;
            }
            let wake = e.pool_wake.clone();
            let targets = e.pools.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut made_one = false;
            // Templates no longer pooled give their sandboxes back.
            for live in e.live_handles() {
                let gone = !targets.contains_key(&live.record().template);
                if gone && unclaimed_taken(&live) {
                    let _ = e.delete_any(live.record().id).await;
                }
            }
            for (template, size) in targets {
                let ready = e.pooled(&template);
                if ready.len() > size as usize {
                    for live in ready.iter().skip(size as usize) {
                        if unclaimed_taken(live) {
                            let _ = e.delete_any(live.record().id).await;
                        }
                    }
                } else if ready.len() < size as usize {
                    match e.fill_one(&template).await {
                        Ok(_) => made_one = true,
                        Err(err) => {
                            tracing::warn!(template = %template, "filling the warm pool failed: {}", err.message);
                        }
                    }
                }
            }
            drop(e);
            if made_one {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
            }
        }
    }

    async fn fill_one(self: &Arc<Self>, template: &str) -> Result<SandboxId, ApiError> {
        let t = self.template(template)?;
        let plan = Plan {
            tenant: POOL_TENANT.to_owned(),
            env: Default::default(),
            metadata: Default::default(),
            ttl_ms: POOLED_TTL_MS,
            cpu: self.config.default_cpu,
            memory_mb: self.config.default_memory_mb,
            extra: SandboxExtra {
                pooled: true,
                disk_mb: self.config.default_disk_mb,
                ..SandboxExtra::default()
            },
            runtime: self
                .runtime
                .select(t.runtime.as_deref())
                .unwrap_or(self.runtime.name()),
            template: t,
            volumes: Vec::new(),
            network: None,
        };
        let id = self.launch(plan).await?.id;
        // One command ahead of time, so that the claimer's first command
        // does not pay for the sandbox's first process (the agent's and
        // the dynamic loader's first-use costs). Not a caller's call: no
        // audit entry.
        let warm_up = crate::exec::Job {
            argv: vec!["true".to_owned()],
            env: Default::default(),
            cwd: crate::paths::WORKSPACE.to_owned(),
            stdin: None,
            user: capsule_api::sandbox::RunAs::User,
            timeout: std::time::Duration::from_secs(10),
        };
        let agent = self.running(id)?.agent.clone();
        if let Err(e) = crate::exec::collect(&agent, warm_up, 4096).await {
            tracing::debug!(sandbox = %id, "warming a pooled sandbox up failed: {}", e.message);
        }
        Ok(id)
    }
}

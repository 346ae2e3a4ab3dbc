//! What front doors that route to a sandbox's own APIs need: its agent and
//! the secrets that open it (E2B clients present the envd access token), and
//! raw views of the records for listings in other formats.

use capsule_api::timefmt::now_millis;
use capsule_api::{ApiError, SandboxId};
use capsule_protocol::client::AgentClient;
use capsule_runtime::Usage;

use crate::engine::Engine;
use crate::errors::{from_runtime, from_store};
use crate::store::{AccessTokens, SandboxRecord};
use crate::tenancy::Principal;

/// A running sandbox as a routing front door sees it.
#[derive(Clone)]
pub struct SandboxAccess {
    pub record: SandboxRecord,
    pub agent: AgentClient,
}

impl Engine {
    /// A running sandbox with its tokens (made and stored now for
    /// sandboxes recorded before tokens existed).
    pub fn access(&self, who: &Principal, id: SandboxId) -> Result<SandboxAccess, ApiError> {
        if !self.visible_to(who, id) {
            return Err(ApiError::sandbox_not_found(id));
        }
        self.access_any(id)
    }

    /// [`Engine::access`] for the E2B traffic, which the sandbox's own
    /// tokens authenticate.
    pub fn access_any(&self, id: SandboxId) -> Result<SandboxAccess, ApiError> {
        let live = self.running(id)?;
        let mut record = live.record();
        if record.tokens.envd.is_empty() {
            let tokens = AccessTokens::generate();
            self.store.set_tokens(id, &tokens).map_err(from_store)?;
            live.record.lock().unwrap_or_else(|p| p.into_inner()).tokens = tokens.clone();
            record.tokens = tokens;
        }
        Ok(SandboxAccess {
            record,
            agent: live.agent.clone(),
        })
    }

    /// The running sandbox whose tokens satisfy `matches` (signed URLs name
    /// no sandbox; the signature's key does).
    pub fn find_by_tokens(&self, matches: impl Fn(&AccessTokens) -> bool) -> Option<SandboxAccess> {
        let now = now_millis();
        self.live_records()
            .into_iter()
            .find(|r| !self.is_over(r, now) && !r.tokens.envd.is_empty() && matches(&r.tokens))
            .and_then(|r| self.access_any(r.id).ok())
    }

    /// Records of the caller's running sandboxes, oldest first.
    pub fn running_records(&self, who: &Principal) -> Vec<SandboxRecord> {
        let now = now_millis();
        let mut records: Vec<SandboxRecord> = self
            .live_records()
            .into_iter()
            .filter(|r| !self.is_over(r, now) && who.sees(&r.tenant) && !r.extra.pooled)
            .collect();
        records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        records
    }

    /// Bytes free for sandboxes' files.
    pub fn disk_capacity_bytes(&self) -> Option<u64> {
        self.runtime.disk_capacity()
    }

    /// Resource use of a sandbox now, with its limits.
    pub async fn stats(
        &self,
        who: &Principal,
        id: SandboxId,
    ) -> Result<capsule_api::sandbox::StatsResult, ApiError> {
        let live = self.owned(who, id)?;
        let rec = live.record();
        let usage = self.runtime.usage(id).await.unwrap_or_default();
        Ok(capsule_api::sandbox::StatsResult {
            id,
            state: if rec.paused_at.is_some() {
                capsule_api::sandbox::SandboxState::Paused
            } else {
                rec.state
            },
            cpu_ns: usage.cpu_ns,
            memory_bytes: usage.memory_bytes,
            memory_peak_bytes: usage.memory_peak_bytes,
            memory_limit_bytes: rec.memory_mb.saturating_mul(1 << 20),
            pids: usage.pids,
            pids_limit: rec.pids,
            disk_bytes: usage.disk_bytes,
            disk_limit_bytes: rec.extra.disk_mb.map(|mb| mb.saturating_mul(1 << 20)),
            network_rx_bytes: usage.network_rx_bytes,
            network_tx_bytes: usage.network_tx_bytes,
        })
    }

    /// Resource use of a running sandbox.
    pub async fn usage(&self, who: &Principal, id: SandboxId) -> Result<Usage, ApiError> {
        self.owned(who, id)?;
        self.runtime.usage(id).await.map_err(from_runtime)
    }
}

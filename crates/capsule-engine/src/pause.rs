//! Pausing and resuming: every process of a sandbox frozen (no CPU), then
//! thawed. Any call that needs a paused sandbox resumes it first; sandboxes
//! created with `auto_pause_ms` pause after that long without activity.
//!
//! While paused, the time to live stops counting (`pause_stops_ttl`, the
//! default) or keeps counting; either way a sandbox paused longer than
//! `max_paused_ms` is deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use capsule_api::sandbox::{PauseResult, SandboxState};
use capsule_api::timefmt::{UnixMillis, format_rfc3339, now_millis};
use capsule_api::{ApiError, SandboxId};

use crate::engine::{Engine, Live};
use crate::errors::{from_runtime, from_store};
use crate::store::SandboxRecord;
use crate::tenancy::Principal;

impl Engine {
    /// When `rec` ends: its expiry, or while paused with the clock stopped,
    /// the end of the longest pause allowed.
    pub(crate) fn end_of(&self, rec: &SandboxRecord) -> UnixMillis {
        match rec.paused_at {
            Some(at) if self.config.pause_stops_ttl || rec.extra.pause_on_expiry => {
                at + self.config.max_paused_ms as i64
            }
            Some(at) => rec.expires_at.min(at + self.config.max_paused_ms as i64),
            None => rec.expires_at,
        }
    }

    /// Whether `rec`'s time is up at `now`. A running sandbox that pauses at
    /// its end is not: until the reaper has paused it, it is on its way to
    /// being paused, not gone.
    pub(crate) fn is_over(&self, rec: &SandboxRecord, now: UnixMillis) -> bool {
        self.end_of(rec) <= now && !(rec.extra.pause_on_expiry && rec.paused_at.is_none())
    }

    fn pause_result(rec: &SandboxRecord) -> PauseResult {
        PauseResult {
            id: rec.id,
            state: if rec.paused_at.is_some() {
                SandboxState::Paused
            } else {
                SandboxState::Running
            },
            expires_at: format_rfc3339(rec.expires_at),
        }
    }

    pub async fn pause(&self, who: &Principal, id: SandboxId) -> Result<PauseResult, ApiError> {
        let result = async {
            let live = self.owned(who, id)?;
            self.pause_live(&live).await?;
            Ok(Self::pause_result(&live.record()))
        }
        .await;
        self.audit(who, "sandbox.v1.pause", Some(id.as_str()), &result);
        result
    }

    pub async fn resume(&self, who: &Principal, id: SandboxId) -> Result<PauseResult, ApiError> {
        let result = async {
            let live = self.owned(who, id)?;
            self.resume_live(&live).await?;
            Ok(Self::pause_result(&live.record()))
        }
        .await;
        self.audit(who, "sandbox.v1.resume", Some(id.as_str()), &result);
        result
    }

    pub(crate) async fn pause_live(&self, live: &Live) -> Result<(), ApiError> {
        let _guard = live.transition.lock().await;
        let rec = live.record();
        if rec.paused_at.is_some() {
            return Ok(());
        }
        self.runtime.pause(rec.id).await.map_err(from_runtime)?;
        let now = now_millis();
        if let Err(e) = self.store.set_paused(rec.id, Some(now)) {
            // Not recorded as paused: it must not stay frozen either.
            let _ = self.runtime.resume(rec.id).await;
            return Err(from_store(e));
        }
        live.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paused_at = Some(now);
        tracing::info!(sandbox = %rec.id, "paused");
        self.reaper_wake.notify_one();
        Ok(())
    }

    pub(crate) async fn resume_live(&self, live: &Live) -> Result<(), ApiError> {
        let _guard = live.transition.lock().await;
        let rec = live.record();
        let Some(paused_at) = rec.paused_at else {
            return Ok(());
        };
        self.runtime.resume(rec.id).await.map_err(from_runtime)?;
        let now = now_millis();
        let mut expires_at = rec.expires_at;
        if self.config.pause_stops_ttl {
            // The time spent paused does not count.
            expires_at += (now - paused_at).max(0);
        }
        if expires_at <= now + 1000 {
            // Paused at (or past) its end: it comes back with a fresh life.
            expires_at = now + self.config.default_ttl_ms as i64;
        }
        if expires_at != rec.expires_at {
            self.store
                .set_expires_at(rec.id, expires_at)
                .map_err(from_store)?;
        }
        self.store.set_paused(rec.id, None).map_err(from_store)?;
        {
            let mut r = live.record.lock().unwrap_or_else(|p| p.into_inner());
            r.paused_at = None;
            r.expires_at = expires_at;
        }
        live.last_active.store(now, Ordering::Relaxed);
        tracing::info!(sandbox = %rec.id, "resumed");
        self.reaper_wake.notify_one();
        Ok(())
    }

    /// A sandbox the caller may use right now: resumed if it was paused,
    /// and marked active.
    pub(crate) async fn usable(
        &self,
        who: &Principal,
        id: SandboxId,
    ) -> Result<Arc<Live>, ApiError> {
        let live = self.owned(who, id)?;
        self.wake_live(&live).await?;
        Ok(live)
    }

    pub(crate) async fn wake_live(&self, live: &Live) -> Result<(), ApiError> {
        live.last_active.store(now_millis(), Ordering::Relaxed);
        if live
            .record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paused_at
            .is_some()
        {
            self.resume_live(live).await?;
        }
        Ok(())
    }

    /// Resumes `id` for traffic that reaches it without a caller (E2B's
    /// in-sandbox traffic, authenticated by the sandbox's own token).
    pub async fn wake(&self, id: SandboxId) -> Result<(), ApiError> {
        let live = self.running(id)?;
        self.wake_live(&live).await
    }

    /// Marks `id` active (terminal traffic).
    pub fn touch(&self, id: SandboxId) {
        if let Ok(live) = self.running(id) {
            live.last_active.store(now_millis(), Ordering::Relaxed);
        }
    }

    /// Pauses sandboxes idle for longer than they asked; returns how long
    /// until the next one would be due.
    pub(crate) async fn pause_idle(self: &Arc<Self>) -> Option<std::time::Duration> {
        let now = now_millis();
        let mut next: Option<i64> = None;
        let mut due = Vec::new();
        for live in self.live_handles() {
            let rec = live.record();
            let (Some(idle_ms), None) = (rec.extra.auto_pause_ms, rec.paused_at) else {
                continue;
            };
            let at = live.last_active.load(Ordering::Relaxed) + idle_ms as i64;
            if at <= now {
                due.push(live);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for live in due {
            let engine = self.clone();
            tokio::spawn(async move {
                let id = live.record().id;
                if let Err(e) = engine.pause_live(&live).await {
                    tracing::warn!(sandbox = %id, "pausing an idle sandbox failed: {}", e.message);
                }
            });
        }
        next.map(|n| std::time::Duration::from_millis((n - now).max(1) as u64))
    }
}

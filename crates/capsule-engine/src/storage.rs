//! Snapshots, forks and volumes: what outlives a sandbox.
//!
//! A snapshot is a sandbox's files at one moment, owned by its tenant,
//! named or not; new sandboxes start from it. A fork is a snapshot taken
//! and used at once, then dropped. A volume is a named, size-limited
//! directory that sandboxes mount at create time and that survives them.

use std::sync::Arc;

use capsule_api::sandbox::{CreateResult, ForkParams, SnapshotInfo, VolumeInfo, VolumeMountParam};
use capsule_api::timefmt::{format_rfc3339, now_millis};
use capsule_api::{ApiError, ErrorKind, SandboxId};
use capsule_runtime::VolumeSpec;

use crate::engine::{Engine, Plan};
use crate::errors::{from_runtime, from_store};
use crate::store::{SandboxExtra, SnapshotRecord, VolumeRecord};
use crate::tenancy::Principal;

/// Paths a volume may not be mounted on (or under).
const RESERVED: [&str; 5] = ["/proc", "/sys", "/dev", "/tmp", "/run/capsule"];

/// Checks a snapshot or volume name: 1 to 63 of `a-z 0-9 . _ -`.
fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_params(format!(
            "{kind} name {name:?} is not valid: use 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ))
        .with_detail("name", name))
    }
}

/// Checks where a volume goes: absolute, normalized, not on a reserved path.
fn check_mount_path(path: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(
            ApiError::invalid_params(format!("volume path {path:?} {why}"))
                .with_detail("path", path),
        )
    };
    if !path.starts_with('/') {
        return bad("must be absolute");
    }
    if path == "/" || path.ends_with('/') || path.contains("//") {
        return bad("must name a directory below / (no trailing or doubled slashes)");
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return bad("must not contain `.` or `..`");
    }
    if path.len() > 1024 || path.contains('\0') {
        return bad("is too long or contains a NUL byte");
    }
    if RESERVED
        .iter()
        .any(|r| path == *r || path.starts_with(&format!("{r}/")))
    {
        return bad("is reserved (/proc, /sys, /dev, /tmp and /run/capsule are the sandbox's own)");
    }
    Ok(())
}

/// The backend's name for a tenant's volume (tenant names have no dots).
fn volume_key(tenant: &str, name: &str) -> String {
    format!("{tenant}.{name}")
}

fn snapshot_info(s: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        snapshot_id: s.id.clone(),
        name: s.name.clone(),
        source: s.source.clone(),
        template: s.template.clone(),
        created_at: format_rfc3339(s.created_at),
        size_bytes: s.size_bytes,
    }
}

fn random_snapshot_id() -> String {
    format!("snap-{}", SandboxId::random())
}

impl Engine {
    /// A snapshot the caller may use, by id or name.
    pub(crate) fn resolve_snapshot(
        &self,
        who: &Principal,
        r: &str,
    ) -> Result<SnapshotRecord, ApiError> {
        self.store
            .snapshots()
            .map_err(from_store)?
            .into_iter()
            .find(|s| {
                who.sees(&s.tenant)
                    && (s.id == r || (s.name.as_deref() == Some(r) && s.tenant == who.tenant))
            })
            .ok_or_else(|| {
                ApiError::invalid_params(format!("there is no snapshot {r:?}"))
                    .with_detail("snapshot", r)
            })
    }

    /// True when `r` names a snapshot the caller may use (and no template).
    pub fn is_snapshot(&self, who: &Principal, r: &str) -> bool {
        self.template(r).is_err() && self.resolve_snapshot(who, r).is_ok()
    }

    /// Captures a running sandbox's files as a snapshot.
    pub async fn snapshot(
        &self,
        who: &Principal,
        id: SandboxId,
        name: Option<String>,
    ) -> Result<SnapshotInfo, ApiError> {
        let result = self.snapshot_checked(who, id, name).await;
        self.audit(who, "sandbox.v1.snapshot", Some(id.as_str()), &result);
        result
    }

    async fn snapshot_checked(
        &self,
        who: &Principal,
        id: SandboxId,
        name: Option<String>,
    ) -> Result<SnapshotInfo, ApiError> {
        let live = self.owned(who, id)?;
        let rec = live.record();
        if let Some(n) = &name {
            check_name("snapshot", n)?;
            let taken = self
                .store
                .snapshots()
                .map_err(from_store)?
                .iter()
                .any(|s| s.tenant == rec.tenant && s.name.as_deref() == Some(n.as_str()));
            if taken {
                return Err(ApiError::new(
                    ErrorKind::AlreadyExists,
                    format!("tenant {:?} already has a snapshot named {n:?}", rec.tenant),
                )
                .with_detail("name", n.clone()));
            }
        }
        let quotas = self.quotas(&rec.tenant)?;
        if let Some(max) = quotas.max_snapshots {
            let have = self.store.snapshot_count(&rec.tenant).map_err(from_store)?;
            if have >= max {
                return Err(ApiError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "tenant {:?} would pass its quota of {max} snapshots",
                        rec.tenant
                    ),
                )
                .with_detail("quota", "snapshots")
                .with_detail("limit", max.to_string())
                .with_detail("current", have.to_string()));
            }
        }
        let snap_id = random_snapshot_id();
        let size = self
            .runtime
            .snapshot(id, &snap_id)
            .await
            .map_err(from_runtime)?;
        let record = SnapshotRecord {
            id: snap_id.clone(),
            tenant: rec.tenant.clone(),
            name,
            source: id.to_string(),
            template: rec.template.clone(),
            runtime: rec.runtime.clone(),
            env: rec.env.clone(),
            created_at: now_millis(),
            size_bytes: size,
        };
        if let Err(e) = self.store.insert_snapshot(&record) {
            let _ = self.runtime.delete_snapshot(&snap_id).await;
            return Err(from_store(e));
        }
        tracing::info!(sandbox = %id, snapshot = %snap_id, "snapshot taken");
        Ok(snapshot_info(&record))
    }

    pub fn list_snapshots(&self, who: &Principal) -> Result<Vec<SnapshotInfo>, ApiError> {
        Ok(self
            .store
            .snapshots()
            .map_err(from_store)?
            .iter()
            .filter(|s| who.sees(&s.tenant))
            .map(snapshot_info)
            .collect())
    }

    pub async fn delete_snapshot(&self, who: &Principal, r: &str) -> Result<(), ApiError> {
        let result = async {
            let snap = self.resolve_snapshot(who, r)?;
            self.runtime
                .delete_snapshot(&snap.id)
                .await
                .map_err(from_runtime)?;
            self.store.delete_snapshot(&snap.id).map_err(from_store)?;
            Ok(())
        }
        .await;
        self.audit(who, "sandbox.v1.deleteSnapshot", Some(r), &result);
        result
    }

    /// `count` new sandboxes starting from the source's files as they are now.
    pub async fn fork(
        self: &Arc<Self>,
        who: &Principal,
        p: ForkParams,
    ) -> Result<Vec<CreateResult>, ApiError> {
        let result = self.fork_checked(who, p.clone()).await;
        self.audit(who, "sandbox.v1.fork", Some(p.id.as_str()), &result);
        result
    }

    async fn fork_checked(
        self: &Arc<Self>,
        who: &Principal,
        p: ForkParams,
    ) -> Result<Vec<CreateResult>, ApiError> {
        if p.count == 0 || p.count > 64 {
            return Err(ApiError::invalid_params(format!(
                "`count` {} must be between 1 and 64",
                p.count
            )));
        }
        crate::engine::validate_metadata(&p.metadata)?;
        let live = self.owned(who, p.id)?;
        let source = live.record();
        let ttl = match p.ttl_ms {
            Some(t) => self.ttl(Some(t))?,
            // What the source has left, as a resume would count it: from
            // its pause when the clock stops while paused; a paused source
            // at (or past) its end would come back with a fresh life, and
            // so do its forks.
            None => {
                let clock_stopped_at = source.paused_at.filter(|_| self.config.pause_stops_ttl);
                let left = source.expires_at - clock_stopped_at.unwrap_or_else(now_millis);
                if source.paused_at.is_some() && left <= 1000 {
                    self.ttl(None)?
                } else {
                    left.max(1000) as u64
                }
            }
        };
        self.check_sandbox_quota(
            &source.tenant,
            source.cpu,
            source.memory_mb,
            u64::from(p.count),
        )?;
        let template = self.template(&source.template)?;
        let volumes = self.resolve_volume_mounts(&source.tenant, &source.extra.volumes)?;
        let snap_id = random_snapshot_id();
        self.runtime
            .snapshot(p.id, &snap_id)
            .await
            .map_err(from_runtime)?;
        let mut made = Vec::new();
        let mut failure = None;
        for _ in 0..p.count {
            let mut metadata = source.metadata.clone();
            metadata.extend(p.metadata.clone());
            let plan = Plan {
                // Snapshots belong to the default backend.
                runtime: self.runtime.name(),
                tenant: source.tenant.clone(),
                template: template.clone(),
                ttl_ms: ttl,
                cpu: source.cpu,
                memory_mb: source.memory_mb,
                env: source.env.clone(),
                metadata,
                extra: SandboxExtra {
                    volumes: source.extra.volumes.clone(),
                    snapshot: Some(snap_id.clone()),
                    forked_from: Some(p.id.to_string()),
                    disk_mb: source.extra.disk_mb,
                    auto_pause_ms: source.extra.auto_pause_ms,
                    pause_on_expiry: source.extra.pause_on_expiry,
                    ..SandboxExtra::default()
                },
                volumes: volumes.clone(),
                // A fork starts without network: the secrets of the
                // source's proxy are not the engine's to copy.
                network: None,
            };
            match self.launch(plan).await {
                Ok(r) => made.push(r),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // The forks' layers are their own now; the shared snapshot can go.
        if let Err(e) = self.runtime.delete_snapshot(&snap_id).await {
            tracing::warn!(snapshot = %snap_id, "removing a fork's snapshot: {e}");
        }
        if let Some(e) = failure {
            // All or nothing: the ones made go again.
            for r in &made {
                let _ = self.delete_any(r.id).await;
            }
            return Err(e);
        }
        Ok(made)
    }

    /// The volumes a create asks for, checked and resolved.
    pub(crate) fn resolve_volumes(
        &self,
        who: &Principal,
        asked: &[VolumeMountParam],
    ) -> Result<Vec<VolumeSpec>, ApiError> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let mounts: Vec<crate::store::VolumeMount> = asked
            .iter()
            .map(|v| crate::store::VolumeMount {
                name: v.name.clone(),
                path: v.path.clone(),
                read_only: v.read_only,
            })
            .collect();
        self.resolve_volume_mounts(&who.tenant, &mounts)
    }

    pub(crate) fn resolve_volume_mounts(
        &self,
        tenant: &str,
        mounts: &[crate::store::VolumeMount],
    ) -> Result<Vec<VolumeSpec>, ApiError> {
        if mounts.len() > 16 {
            return Err(ApiError::invalid_params("at most 16 volumes per sandbox"));
        }
        let existing = self.store.volumes().map_err(from_store)?;
        let mut paths = Vec::new();
        mounts
            .iter()
            .map(|m| {
                check_mount_path(&m.path)?;
                if paths.contains(&m.path) {
                    return Err(ApiError::invalid_params(format!(
                        "two volumes at {:?}",
                        m.path
                    )));
                }
                paths.push(m.path.clone());
                if !existing
                    .iter()
                    .any(|v| v.tenant == tenant && v.name == m.name)
                {
                    return Err(ApiError::invalid_params(format!(
                        "there is no volume {:?}",
                        m.name
                    ))
                    .with_detail("volume", m.name.clone()));
                }
                Ok(VolumeSpec {
                    key: volume_key(tenant, &m.name),
                    path: m.path.clone(),
                    read_only: m.read_only,
                })
            })
            .collect()
    }

    pub async fn create_volume(
        &self,
        who: &Principal,
        name: &str,
        size_mb: u64,
    ) -> Result<VolumeInfo, ApiError> {
        let result = async {
            check_name("volume", name)?;
            if size_mb == 0 || size_mb > self.config.max_volume_mb {
                return Err(ApiError::invalid_params(format!(
                    "`size_mb` {size_mb} must be between 1 and {}",
                    self.config.max_volume_mb
                )));
            }
            let volumes = self.store.volumes().map_err(from_store)?;
            if volumes
                .iter()
                .any(|v| v.tenant == who.tenant && v.name == name)
            {
                return Err(ApiError::new(
                    ErrorKind::AlreadyExists,
                    format!("volume {name:?} already exists"),
                )
                .with_detail("name", name));
            }
            let bytes = size_mb.saturating_mul(1 << 20);
            let quotas = self.quotas(&who.tenant)?;
            let used: u64 = volumes
                .iter()
                .filter(|v| v.tenant == who.tenant)
                .map(|v| v.size_bytes)
                .sum();
            if let Some(max) = quotas.max_volume_bytes
                && used + bytes > max
            {
                return Err(ApiError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "tenant {:?} would pass its quota of {max} volume bytes",
                        who.tenant
                    ),
                )
                .with_detail("quota", "volume_bytes")
                .with_detail("limit", max.to_string())
                .with_detail("current", used.to_string()));
            }
            let key = volume_key(&who.tenant, name);
            self.runtime
                .create_volume(&key, bytes)
                .await
                .map_err(from_runtime)?;
            let record = VolumeRecord {
                tenant: who.tenant.clone(),
                name: name.to_owned(),
                size_bytes: bytes,
                created_at: now_millis(),
            };
            if let Err(e) = self.store.insert_volume(&record) {
                let _ = self.runtime.delete_volume(&key).await;
                return Err(from_store(e));
            }
            Ok(self.volume_info(&record))
        }
        .await;
        self.audit(who, "sandbox.v1.createVolume", Some(name), &result);
        result
    }

    fn volume_info(&self, v: &VolumeRecord) -> VolumeInfo {
        let used_by = self
            .live_records()
            .into_iter()
            .filter(|r| r.tenant == v.tenant && r.extra.volumes.iter().any(|m| m.name == v.name))
            .map(|r| r.id)
            .collect();
        VolumeInfo {
            name: v.name.clone(),
            size_bytes: v.size_bytes,
            created_at: format_rfc3339(v.created_at),
            used_by,
        }
    }

    pub fn list_volumes(&self, who: &Principal) -> Result<Vec<VolumeInfo>, ApiError> {
        Ok(self
            .store
            .volumes()
            .map_err(from_store)?
            .iter()
            .filter(|v| v.tenant == who.tenant)
            .map(|v| self.volume_info(v))
            .collect())
    }

    pub async fn delete_volume(&self, who: &Principal, name: &str) -> Result<(), ApiError> {
        let result = async {
            let volumes = self.store.volumes().map_err(from_store)?;
            let Some(v) = volumes
                .iter()
                .find(|v| v.tenant == who.tenant && v.name == name)
            else {
                return Err(
                    ApiError::invalid_params(format!("there is no volume {name:?}"))
                        .with_detail("volume", name),
                );
            };
            let info = self.volume_info(v);
            if !info.used_by.is_empty() {
                let ids: Vec<String> = info.used_by.iter().map(|i| i.to_string()).collect();
                return Err(ApiError::new(
                    ErrorKind::InvalidParams,
                    format!(
                        "volume {name:?} is mounted by {}; delete those sandboxes first",
                        ids.join(", ")
                    ),
                )
                .with_detail("used_by", ids));
            }
            self.runtime
                .delete_volume(&volume_key(&who.tenant, name))
                .await
                .map_err(from_runtime)?;
            self.store
                .delete_volume(&who.tenant, name)
                .map_err(from_store)?;
            Ok(())
        }
        .await;
        self.audit(who, "sandbox.v1.deleteVolume", Some(name), &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_paths() {
        for ok in ["/data", "/home/user/shared", "/mnt/a.b"] {
            assert!(check_mount_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "data",
            "/",
            "/a/",
            "/a//b",
            "/a/../etc",
            "/proc",
            "/proc/x",
            "/tmp",
            "/dev/shm",
            "/x/.",
        ] {
            let e = check_mount_path(bad).unwrap_err();
            assert!(e.message.contains(bad), "{bad}: {}", e.message);
        }
        assert!(check_mount_path("/procfs").is_ok());
    }

    #[test]
    fn names() {
        assert!(check_name("volume", "data-1.v2").is_ok());
        for bad in ["", "-x", "A", "a/b", "a b", &"x".repeat(64)] {
            assert!(check_name("volume", bad).is_err(), "{bad}");
        }
    }
}

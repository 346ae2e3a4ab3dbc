//! Who is calling, and what they may do: API keys (stored hashed), tenants
//! and their quotas, per-key rate limits, and the audit log.
//!
//! Every sandbox belongs to a tenant. A member key works with its own
//! tenant's sandboxes only; for any other id it gets `sandbox_not_found`,
//! exactly as for an id that never existed. An admin key sees everything.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use capsule_api::admin::{
    AuditEntry, AuditParams, CreateKeyParams, CreateKeyResult, DEFAULT_TENANT, KeyInfo, Quotas,
    Role, TenantInfo, Usage, validate_tenant,
};
use capsule_api::timefmt::{UnixMillis, format_rfc3339, now_millis, parse_rfc3339};
use capsule_api::{ApiError, ErrorKind};
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::errors::from_store;
use crate::store::{AuditRecord, KeyRecord};

/// The caller of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub role: Role,
    /// The key used (`config` for the operator's `--api-keys`), if any.
    pub key_id: Option<String>,
}

impl Principal {
    /// The operator: an open server's callers, and in-process uses.
    pub fn operator() -> Self {
        Self {
            tenant: DEFAULT_TENANT.to_owned(),
            role: Role::Admin,
            key_id: None,
        }
    }

    /// A member of `tenant` (for tests and embedded uses).
    pub fn member(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            role: Role::Member,
            key_id: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// May this caller see what `tenant` owns?
    pub fn sees(&self, tenant: &str) -> bool {
        self.is_admin() || self.tenant == tenant
    }

    pub(crate) fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{what} needs an admin key; this key is a member of tenant {:?}",
                    self.tenant
                ),
            ))
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Keys are required and none was given.
    Missing,
    /// The key is unknown (or malformed).
    Invalid,
    /// The key was revoked.
    Revoked,
    /// The key made too many requests; retry after this many seconds.
    RateLimited { limit: u32, retry_after_s: u64 },
}

impl AuthError {
    pub fn to_api_error(&self) -> ApiError {
        match self {
            AuthError::Missing => ApiError::new(
                ErrorKind::Unauthorized,
                "an API key is required (Authorization: Bearer <key> or X-API-Key: <key>)",
            ),
            AuthError::Invalid => ApiError::new(ErrorKind::Unauthorized, "the API key is not valid"),
            AuthError::Revoked => ApiError::new(ErrorKind::Unauthorized, "the API key was revoked"),
            AuthError::RateLimited {
                limit,
                retry_after_s,
            } => ApiError::new(
                ErrorKind::QuotaExceeded,
                format!("this key made more than {limit} requests in a minute; retry in {retry_after_s} s"),
            )
            .with_detail("limit", *limit)
            .with_detail("window", "minute")
            .with_detail("retry_after_s", *retry_after_s),
        }
    }
}

struct KeyEntry {
    record: KeyRecord,
    role: Role,
}

/// A token bucket refilled at `rate` per minute.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keys and rate-limit state, kept in memory (the store holds the truth).
pub(crate) struct Keys {
    /// The operator's keys (`--api-keys`): admins of the default tenant.
    config: Vec<String>,
    stored: RwLock<HashMap<String, KeyEntry>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    default_rate: Option<u32>,
}

const KEY_PREFIX: &str = "cap_";

fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares secrets in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn role_of(text: &str) -> Role {
    if text == "admin" {
        Role::Admin
    } else {
        Role::Member
    }
}

impl Keys {
    pub(crate) fn new(
        config: Vec<String>,
        stored: Vec<KeyRecord>,
        default_rate: Option<u32>,
    ) -> Self {
        let stored = stored
            .into_iter()
            .map(|r| {
                let role = role_of(&r.role);
                (r.id.clone(), KeyEntry { record: r, role })
            })
            .collect();
        Self {
            config,
            stored: RwLock::new(stored),
            buckets: Mutex::new(HashMap::new()),
            default_rate: default_rate.filter(|r| *r > 0),
        }
    }

    /// True when requests must carry a key: the operator gave keys, or keys
    /// were made through the admin API.
    pub(crate) fn required(&self) -> bool {
        !self.config.is_empty()
            || self
                .stored
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .any(|k| k.record.revoked_at.is_none())
    }

    fn lookup(&self, presented: &str) -> Result<(Principal, Option<u32>), AuthError> {
        if self.config.iter().any(|k| same(k, presented)) {
            return Ok((
                Principal {
                    tenant: DEFAULT_TENANT.to_owned(),
                    role: Role::Admin,
                    key_id: Some("config".to_owned()),
                },
                None,
            ));
        }
        let id = presented
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .ok_or(AuthError::Invalid)?;
        let stored = self.stored.read().unwrap_or_else(|p| p.into_inner());
        let entry = stored.get(id).ok_or(AuthError::Invalid)?;
        if !same(&entry.record.hash, &hash_key(presented)) {
            return Err(AuthError::Invalid);
        }
        if entry.record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        Ok((
            Principal {
                tenant: entry.record.tenant.clone(),
                role: entry.role,
                key_id: Some(entry.record.id.clone()),
            },
            entry.record.rate_per_min,
        ))
    }

    /// Takes one request from the key's bucket.
    fn admit(&self, key_id: &str, rate: Option<u32>) -> Result<(), AuthError> {
        let Some(limit) = rate.or(self.default_rate).filter(|r| *r > 0) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(key_id.to_owned()).or_insert(Bucket {
            tokens: f64::from(limit),
            at: now,
        });
        let per_second = f64::from(limit) / 60.0;
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second)
            .min(f64::from(limit));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / per_second).ceil() as u64;
            Err(AuthError::RateLimited {
                limit,
                retry_after_s: wait.max(1),
            })
        }
    }
}

fn key_info(r: &KeyRecord) -> KeyInfo {
    KeyInfo {
        key_id: r.id.clone(),
        prefix: format!("{KEY_PREFIX}{}_...", r.id),
        tenant: r.tenant.clone(),
        role: role_of(&r.role),
        name: r.name.clone(),
        created_at: format_rfc3339(r.created_at),
        revoked_at: r.revoked_at.map(format_rfc3339),
        rate_limit_per_min: r.rate_per_min,
    }
}

fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz23456789";
    let mut raw = vec![0u8; n];
    getrandom::fill(&mut raw).expect("the operating system's random source failed");
    raw.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

impl Engine {
    /// Resolves the key a request presented. An open server (no keys at
    /// all) lets everyone in as the operator, whatever key they send (E2B's
    /// SDKs always send one); a revoked key is refused even then.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Principal, AuthError> {
        let presented = presented.map(str::trim).filter(|k| !k.is_empty());
        let required = self.keys.required();
        let found = match presented {
            Some(k) => match self.keys.lookup(k) {
                Ok(found) => Some(found),
                Err(AuthError::Invalid) if !required => None,
                Err(e) => return Err(e),
            },
            None if required => return Err(AuthError::Missing),
            None => None,
        };
        match found {
            Some((who, rate)) => {
                if let Some(id) = &who.key_id {
                    self.keys.admit(id, rate)?;
                }
                Ok(who)
            }
            None => Ok(Principal::operator()),
        }
    }

    /// True when every request must carry an API key.
    pub fn keys_required(&self) -> bool {
        self.keys.required()
    }

    /// Records a state-changing call in the audit log.
    pub(crate) fn audit<T>(
        &self,
        who: &Principal,
        action: &str,
        target: Option<&str>,
        result: &Result<T, ApiError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.kind.as_str().to_owned(),
        };
        let record = AuditRecord {
            at: now_millis(),
            tenant: who.tenant.clone(),
            key_id: who.key_id.clone(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            outcome,
        };
        if let Err(e) = self.store.insert_audit(&record) {
            tracing::error!("writing the audit log failed: {e}");
        }
    }

    pub fn create_key(
        &self,
        who: &Principal,
        p: CreateKeyParams,
    ) -> Result<CreateKeyResult, ApiError> {
        let result = (|| {
            who.require_admin("creating keys")?;
            validate_tenant(&p.tenant)?;
            let name = p.name.unwrap_or_default();
            if name.len() > 200 {
                return Err(ApiError::invalid_params("`name` is longer than 200 bytes"));
            }
            let id = random_alnum(12);
            let key = format!("{KEY_PREFIX}{id}_{}", random_alnum(40));
            let record = KeyRecord {
                id: id.clone(),
                tenant: p.tenant.clone(),
                role: p.role.as_str().to_owned(),
                hash: hash_key(&key),
                name,
                rate_per_min: p.rate_limit_per_min.filter(|r| *r > 0),
                created_at: now_millis(),
                revoked_at: None,
            };
            self.ensure_tenant(&p.tenant)?;
            self.store.insert_key(&record).map_err(from_store)?;
            let info = key_info(&record);
            self.keys
                .stored
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    id,
                    KeyEntry {
                        record,
                        role: p.role,
                    },
                );
            Ok(CreateKeyResult { key, info })
        })();
        self.audit(
            who,
            "admin.v1.createKey",
            result.as_ref().ok().map(|r| r.info.key_id.as_str()),
            &result,
        );
        result
    }

    pub fn list_keys(
        &self,
        who: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<KeyInfo>, ApiError> {
        who.require_admin("listing keys")?;
        let stored = self.keys.stored.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<KeyInfo> = stored
            .values()
            .filter(|k| tenant.is_none_or(|t| k.record.tenant == t))
            .map(|k| key_info(&k.record))
            .collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.key_id.cmp(&b.key_id))
        });
        Ok(keys)
    }

    pub fn revoke_key(&self, who: &Principal, key_id: &str) -> Result<bool, ApiError> {
        let result = (|| {
            who.require_admin("revoking keys")?;
            let now = now_millis();
            if !self.store.revoke_key(key_id, now).map_err(from_store)? {
                return Err(
                    ApiError::invalid_params(format!("there is no key {key_id:?}"))
                        .with_detail("key_id", key_id),
                );
            }
            if let Some(k) = self
                .keys
                .stored
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(key_id)
            {
                k.record.revoked_at.get_or_insert(now);
            }
            Ok(true)
        })();
        self.audit(who, "admin.v1.revokeKey", Some(key_id), &result);
        result
    }

    fn ensure_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        let exists = self
            .store
            .tenants()
            .map_err(from_store)?
            .iter()
            .any(|(name, _)| name == tenant);
        if !exists {
            self.store
                .set_tenant(tenant, "{}", now_millis())
                .map_err(from_store)?;
        }
        Ok(())
    }

    pub fn set_quotas(
        &self,
        who: &Principal,
        tenant: &str,
        quotas: Quotas,
    ) -> Result<TenantInfo, ApiError> {
        let result = (|| {
            who.require_admin("setting quotas")?;
            validate_tenant(tenant)?;
            for (name, v) in [("max_cpu", quotas.max_cpu)] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(ApiError::invalid_params(format!(
                        "`{name}` must be a number of cores, 0 or more"
                    )));
                }
            }
            let json = serde_json::to_string(&quotas).expect("quotas serialize");
            self.store
                .set_tenant(tenant, &json, now_millis())
                .map_err(from_store)?;
            self.tenant_info(tenant)
        })();
        self.audit(who, "admin.v1.setQuotas", Some(tenant), &result);
        result
    }

    /// A tenant's quotas (none set: no limits).
    pub(crate) fn quotas(&self, tenant: &str) -> Result<Quotas, ApiError> {
        let tenants = self.store.tenants().map_err(from_store)?;
        Ok(tenants
            .into_iter()
            .find(|(name, _)| name == tenant)
            .and_then(|(_, q)| serde_json::from_str(&q).ok())
            .unwrap_or_default())
    }

    fn tenant_info(&self, tenant: &str) -> Result<TenantInfo, ApiError> {
        let keys = self
            .keys
            .stored
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|k| k.record.tenant == tenant && k.record.revoked_at.is_none())
            .count() as u64;
        Ok(TenantInfo {
            tenant: tenant.to_owned(),
            quotas: self.quotas(tenant)?,
            usage: self.usage_of(tenant)?,
            keys,
        })
    }

    pub fn get_tenant(
        &self,
        who: &Principal,
        tenant: Option<&str>,
    ) -> Result<TenantInfo, ApiError> {
        let tenant = tenant.unwrap_or(&who.tenant);
        if !who.sees(tenant) {
            return Err(ApiError::new(
                ErrorKind::PermissionDenied,
                format!("a member key sees its own tenant only ({:?})", who.tenant),
            ));
        }
        self.tenant_info(tenant)
    }

    pub fn list_tenants(&self, who: &Principal) -> Result<Vec<TenantInfo>, ApiError> {
        who.require_admin("listing tenants")?;
        let mut names: Vec<String> = self
            .store
            .tenants()
            .map_err(from_store)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for r in self.live_records() {
            if !names.contains(&r.tenant) {
                names.push(r.tenant);
            }
        }
        if !names.iter().any(|n| n == DEFAULT_TENANT) {
            names.push(DEFAULT_TENANT.to_owned());
        }
        names.sort();
        names.iter().map(|n| self.tenant_info(n)).collect()
    }

    pub fn audit_log(&self, who: &Principal, p: AuditParams) -> Result<Vec<AuditEntry>, ApiError> {
        who.require_admin("reading the audit log")?;
        let since: UnixMillis = match &p.since {
            Some(s) => parse_rfc3339(s).ok_or_else(|| {
                ApiError::invalid_params(format!("`since` {s:?} is not an RFC 3339 time"))
            })?,
            None => 0,
        };
        let limit = p.limit.unwrap_or(100);
        if limit == 0 || limit > 10_000 {
            return Err(ApiError::invalid_params(format!(
                "`limit` {limit} must be between 1 and 10000"
            )));
        }
        Ok(self
            .store
            .audit(p.tenant.as_deref(), since, limit)
            .map_err(from_store)?
            .into_iter()
            .map(|a| AuditEntry {
                at: capsule_api::timefmt::format_rfc3339_millis(a.at),
                tenant: a.tenant,
                key_id: a.key_id,
                action: a.action,
                target: a.target,
                outcome: a.outcome,
            })
            .collect())
    }

    /// What `tenant` uses now.
    pub(crate) fn usage_of(&self, tenant: &str) -> Result<Usage, ApiError> {
        let mut usage = Usage::default();
        for r in self
            .live_records()
            .iter()
            .filter(|r| r.tenant == tenant && !r.extra.pooled)
        {
            usage.sandboxes += 1;
            usage.cpu += r.cpu;
            usage.memory_mb += r.memory_mb;
        }
        usage.snapshots = self.store.snapshot_count(tenant).map_err(from_store)?;
        usage.volume_bytes = self.store.volume_bytes(tenant).map_err(from_store)?;
        Ok(usage)
    }

    /// Refuses a new sandbox that would take `tenant` past its quotas.
    pub(crate) fn check_sandbox_quota(
        &self,
        tenant: &str,
        cpu: f64,
        memory_mb: u64,
        extra: u64,
    ) -> Result<(), ApiError> {
        let q = self.quotas(tenant)?;
        if q.max_sandboxes.is_none() && q.max_cpu.is_none() && q.max_memory_mb.is_none() {
            // Nothing to count (the common case): keep creates cheap.
            return Ok(());
        }
        let u = self.usage_of(tenant)?;
        let over = |what: &str, limit: String, current: String| {
            Err(ApiError::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "tenant {tenant:?} would pass its quota of {limit} {what} (it uses {current})"
                ),
            )
            .with_detail("quota", what)
            .with_detail("limit", limit)
            .with_detail("current", current))
        };
        let n = extra.max(1);
        if let Some(max) = q.max_sandboxes
            && u.sandboxes + n > max
        {
            return over("sandboxes", max.to_string(), u.sandboxes.to_string());
        }
        if let Some(max) = q.max_cpu
            && u.cpu + cpu * n as f64 > max + 1e-9
        {
            return over("cpu", max.to_string(), u.cpu.to_string());
        }
        if let Some(max) = q.max_memory_mb
            && u.memory_mb + memory_mb * n > max
        {
            return over("memory_mb", max.to_string(), u.memory_mb.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, key: &str, tenant: &str, role: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            tenant: tenant.into(),
            role: role.into(),
            hash: hash_key(key),
            name: String::new(),
            rate_per_min: None,
            created_at: 0,
            revoked_at: None,
        }
    }

    #[test]
    fn keys_resolve_to_their_tenant_and_role() {
        let keys = Keys::new(
            vec!["operator-key".into()],
            vec![stored("abc", "cap_abc_secret", "acme", "member")],
            None,
        );
        assert!(keys.required());
        let (who, _) = keys.lookup("operator-key").unwrap();
        assert!(who.is_admin() && who.tenant == DEFAULT_TENANT);
        let (who, _) = keys.lookup("cap_abc_secret").unwrap();
        assert_eq!((who.tenant.as_str(), who.role), ("acme", Role::Member));
        assert_eq!(
            keys.lookup("cap_abc_wrong").unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            keys.lookup("cap_zzz_secret").unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(keys.lookup("nonsense").unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn buckets_refill_over_the_minute() {
        let keys = Keys::new(Vec::new(), Vec::new(), None);
        for _ in 0..3 {
            keys.admit("k", Some(3)).unwrap();
        }
        match keys.admit("k", Some(3)) {
            Err(AuthError::RateLimited {
                limit: 3,
                retry_after_s,
            }) => assert!((1..=20).contains(&retry_after_s)),
            other => panic!("{other:?}"),
        }
        // Another key has its own bucket; no limit means no bucket.
        keys.admit("other", Some(3)).unwrap();
        for _ in 0..100 {
            keys.admit("free", None).unwrap();
        }
    }

    #[test]
    fn visibility() {
        let member = Principal::member("acme");
        assert!(member.sees("acme"));
        assert!(!member.sees("other"));
        assert!(Principal::operator().sees("anything"));
        assert!(member.require_admin("x").is_err());
    }
}

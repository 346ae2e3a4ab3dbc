//! The `admin.v1.*` methods: API keys, tenants and their quotas, and the
//! audit log. Every method needs an admin key, except `getTenant` for the
//! caller's own tenant.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Method names, as sent in `method`.
pub mod methods {
    pub const CREATE_KEY: &str = "admin.v1.createKey";
    pub const LIST_KEYS: &str = "admin.v1.listKeys";
    pub const REVOKE_KEY: &str = "admin.v1.revokeKey";
    pub const SET_QUOTAS: &str = "admin.v1.setQuotas";
    pub const GET_TENANT: &str = "admin.v1.getTenant";
    pub const LIST_TENANTS: &str = "admin.v1.listTenants";
    pub const AUDIT: &str = "admin.v1.audit";
    pub const SET_POOL: &str = "admin.v1.setPool";

    pub const ALL: &[&str] = &[
        CREATE_KEY,
        LIST_KEYS,
        REVOKE_KEY,
        SET_QUOTAS,
        GET_TENANT,
        LIST_TENANTS,
        AUDIT,
        SET_POOL,
    ];
}

/// The tenant whose sandboxes nobody else's key names: the operator's keys
/// (`--api-keys`) belong to it, and an open server acts as it.
pub const DEFAULT_TENANT: &str = "default";

/// Checks a tenant name: 1 to 63 of `a-z 0-9 _ -`, starting with a letter or digit.
pub fn validate_tenant(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_params(format!(
            "tenant {name:?} is not a valid name: use 1 to 63 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        ))
        .with_detail("tenant", name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees and manages everything, of every tenant.
    Admin,
    /// Works with its own tenant's sandboxes.
    #[default]
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// `admin.v1.createKey`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyParams {
    pub tenant: String,
    #[serde(default)]
    pub role: Role,
    /// A label to recognise the key by.
    #[serde(default)]
    pub name: Option<String>,
    /// Requests per minute this key may make (default: the server's).
    #[serde(default)]
    pub rate_limit_per_min: Option<u32>,
}

/// A key as listed: never the secret, only its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    /// The start of the key, to recognise it (`cap_<key_id>_...`).
    pub prefix: String,
    pub tenant: String,
    pub role: Role,
    pub name: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_min: Option<u32>,
}

/// The result of `createKey`: the only time the whole key is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKeyResult {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// `admin.v1.listKeys`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListKeysParams {
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListKeysResult {
    pub keys: Vec<KeyInfo>,
}

/// `admin.v1.revokeKey`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyParams {
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeKeyResult {
    pub revoked: bool,
}

/// Limits of one tenant; an absent limit is no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Sandboxes running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sandboxes: Option<u64>,
    /// CPU cores of the running sandboxes, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<f64>,
    /// Memory limits of the running sandboxes, summed, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    /// Snapshots kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_snapshots: Option<u64>,
    /// Sizes of the tenant's volumes, summed, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_volume_bytes: Option<u64>,
}

/// `admin.v1.setQuotas`: replaces the tenant's quotas (creating the tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuotasParams {
    pub tenant: String,
    pub quotas: Quotas,
}

/// What a tenant uses now, in the units of [`Quotas`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub sandboxes: u64,
    pub cpu: f64,
    pub memory_mb: u64,
    pub snapshots: u64,
    pub volume_bytes: u64,
}

/// `admin.v1.getTenant`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetTenantParams {
    /// Default: the caller's own tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub tenant: String,
    pub quotas: Quotas,
    pub usage: Usage,
    pub keys: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListTenantsResult {
    pub tenants: Vec<TenantInfo>,
}

/// `admin.v1.audit`: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// At most this many (default 100, at most 10000).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: String,
    pub tenant: String,
    /// The key that made the call (`config` for the operator's keys, absent
    /// on an open server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// What was done: the method, e.g. `sandbox.v1.create`.
    pub action: String,
    /// What it was done to (a sandbox id, a key id, a tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ok`, or the error kind.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResult {
    pub entries: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        assert!(validate_tenant("acme-1").is_ok());
        assert!(validate_tenant("default").is_ok());
        for bad in ["", "-x", "Acme", "a b", &"a".repeat(64), "../x"] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotas_reject_unknown_limits() {
        let q: Quotas = serde_json::from_str(r#"{"max_sandboxes": 3}"#).unwrap();
        assert_eq!(q.max_sandboxes, Some(3));
        assert!(serde_json::from_str::<Quotas>(r#"{"max_sandbox": 3}"#).is_err());
    }
}

//! Wire types of the E2B-compatible control plane (`/sandboxes`,
//! `/v2/sandboxes`), written from E2B's public API description. Every
//! request type accepts unknown fields, as E2B's API does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The envd version Capsule's agent implements; SDKs gate features on it
/// (0.5.7: octet-stream and gzip uploads, close stdin, default user).
pub const ENVD_VERSION: &str = "0.5.7";

/// `POST /sandboxes`, `POST /v2/sandboxes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID", default)]
    pub template_id: Option<String>,
    /// Time to live in seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(rename = "allow_internet_access", default)]
    pub allow_internet_access: Option<bool>,
    #[serde(default)]
    pub auto_pause: Option<bool>,
    #[serde(default)]
    pub auto_resume: Option<Value>,
    #[serde(default)]
    pub network: Option<Value>,
    #[serde(default)]
    pub volume_mounts: Option<Vec<Value>>,
    #[serde(default)]
    pub mcp: Option<Value>,
}

/// `POST /sandboxes/{id}/connect`, `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeout {
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// The answer to create and connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub alias: Option<String>,
    pub envd_version: String,
    pub envd_access_token: Option<String>,
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

/// One entry of `GET /v2/sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub alias: Option<String>,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub metadata: BTreeMap<String, String>,
    pub state: String,
    pub envd_version: String,
}

/// `GET /sandboxes/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    pub envd_access_token: Option<String>,
    pub domain: Option<String>,
    pub allow_internet_access: bool,
}

/// One sample of `GET /sandboxes/{id}/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u64,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// Every error body of the control plane: an integer status and a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn create_bodies_from_both_sdks_parse() {
        let py: NewSandbox =
            serde_json::from_value(json!({"templateID": "base", "metadata": {}, "envVars": {}}))
                .unwrap();
        assert_eq!(py.template_id.as_deref(), Some("base"));
        let js: NewSandbox = serde_json::from_value(json!({"templateID": "base"})).unwrap();
        assert_eq!(js.metadata, None);
        let full: NewSandbox = serde_json::from_value(json!({
            "templateID": "code-interpreter-v1", "timeout": 30, "envVars": {"A": "1"},
            "allow_internet_access": false, "autoPause": false, "futureField": [1, 2]
        }))
        .unwrap();
        assert_eq!(full.timeout, Some(30));
        assert_eq!(full.env_vars.unwrap()["A"], "1");
        assert_eq!(full.allow_internet_access, Some(false));
    }

    #[test]
    fn answers_use_the_names_the_sdks_read() {
        let s = Sandbox {
            template_id: "base".into(),
            sandbox_id: "abc12345".into(),
            client_id: "capsule".into(),
            alias: Some("base".into()),
            envd_version: ENVD_VERSION.into(),
            envd_access_token: Some("t".into()),
            traffic_access_token: None,
            domain: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        for key in [
            "templateID",
            "sandboxID",
            "clientID",
            "envdVersion",
            "envdAccessToken",
            "trafficAccessToken",
            "domain",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        let listed = ListedSandbox {
            template_id: "base".into(),
            alias: None,
            sandbox_id: "abc12345".into(),
            client_id: "capsule".into(),
            started_at: "2024-01-01T00:00:00Z".into(),
            end_at: "2024-01-01T00:05:00Z".into(),
            cpu_count: 1,
            memory_mb: 512,
            disk_size_mb: 1024,
            metadata: BTreeMap::new(),
            state: "running".into(),
            envd_version: ENVD_VERSION.into(),
        };
        let detail = SandboxDetail {
            listed,
            envd_access_token: Some("t".into()),
            domain: None,
            allow_internet_access: false,
        };
        let v = serde_json::to_value(&detail).unwrap();
        for key in [
            "startedAt",
            "endAt",
            "cpuCount",
            "memoryMB",
            "diskSizeMB",
            "state",
            "envdAccessToken",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
    }
}

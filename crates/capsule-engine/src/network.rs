//! The `network` of a create, checked (see `docs/network.md`).

use capsule_api::sandbox::NetworkParam;
use capsule_api::{ApiError, ErrorKind};
use capsule_runtime::{NetworkSpec, SecretHeader};

/// The network a create asks for: `None` for `"none"` (loopback only), or
/// the egress spec after the allow-list and secrets passed the same checks
/// the proxy applies.
pub(crate) fn plan_network(param: Option<&NetworkParam>) -> Result<Option<NetworkSpec>, ApiError> {
    let Some(param) = param else {
        return Ok(None);
    };
    let (allow, secrets) = match param {
        NetworkParam::Mode(_) => (Vec::new(), Vec::new()),
        NetworkParam::Config(c) => (c.allow.clone(), c.secrets.clone()),
    };
    match param.mode() {
        "none" if allow.is_empty() && secrets.is_empty() => Ok(None),
        "none" => Err(ApiError::invalid_params(
            "`network.allow` and `network.secrets` need `\"mode\": \"egress\"`",
        )),
        "egress" => {
            let triples: Vec<(String, String, String)> = secrets
                .iter()
                .map(|s| (s.host.clone(), s.header.clone(), s.value.clone()))
                .collect();
            capsule_net::Policy::new(&allow, &triples)
                .map_err(|e| ApiError::invalid_params(e.to_string()))?;
            Ok(Some(NetworkSpec {
                allow,
                secrets: secrets
                    .into_iter()
                    .map(|s| SecretHeader {
                        host: s.host,
                        header: s.header,
                        value: s.value,
                    })
                    .collect(),
            }))
        }
        // A mode this server does not have (`host`, `bridge`) is a feature
        // it lacks, not a malformed request.
        other => Err(ApiError::new(
            ErrorKind::Unsupported,
            format!("`network` mode {other:?} is not available: use \"none\" or \"egress\""),
        )),
    }
}

/// What the sandbox record keeps of the network: everything but secret
/// values, which live only with the backend that serves the proxy.
pub(crate) fn redacted(spec: &NetworkSpec) -> serde_json::Value {
    serde_json::json!({
        "mode": "egress",
        "allow": spec.allow,
        "secrets": spec.secrets.iter().map(|s| serde_json::json!({
            "host": s.host,
            "header": s.header,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_api::sandbox::{NetworkConfig, SecretHeaderParam};

    fn config(mode: &str, allow: &[&str], secrets: &[(&str, &str, &str)]) -> NetworkParam {
        NetworkParam::Config(NetworkConfig {
            mode: mode.into(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            secrets: secrets
                .iter()
                .map(|(h, n, v)| SecretHeaderParam {
                    host: h.to_string(),
                    header: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        })
    }

    #[test]
    fn modes_and_their_settings_are_checked() {
        assert_eq!(plan_network(None).unwrap(), None);
        assert_eq!(
            plan_network(Some(&NetworkParam::Mode("none".into()))).unwrap(),
            None
        );
        let empty = plan_network(Some(&NetworkParam::Mode("egress".into()))).unwrap();
        assert_eq!(empty.map(|n| n.allow.len()), Some(0));
        let err = plan_network(Some(&NetworkParam::Mode("bridge".into()))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported);
        assert!(err.message.contains("\"bridge\""), "{}", err.message);
        let err = plan_network(Some(&config("none", &["a.example"], &[]))).unwrap_err();
        assert!(err.message.contains("egress"), "{}", err.message);
        let err =
            plan_network(Some(&config("egress", &["ok.example", "bad host"], &[]))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidParams);
        assert!(err.message.contains("\"bad host\""), "{}", err.message);
        let spec = plan_network(Some(&config(
            "egress",
            &["api.example"],
            &[("api.example", "Authorization", "Bearer hush")],
        )))
        .unwrap()
        .unwrap();
        let shown = redacted(&spec).to_string();
        assert!(
            shown.contains("Authorization") && !shown.contains("hush"),
            "{shown}"
        );
    }
}

//! API keys. With none configured the server is open (it then listens on
//! loopback only, unless told otherwise). With keys, every request to the
//! control plane (`/rpc`, `/terminal`, the E2B routes) must carry one, as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use capsule_api::rpc::{ErrorObject, Response as RpcResponse};
use capsule_api::{ApiError, ErrorKind};

use crate::AppState;

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key a request presents, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Rejects control-plane requests without a configured key.
pub(crate) async fn require_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let keys = &state.config.api_keys;
    let path = req.uri().path();
    if keys.is_empty() || path == "/health" {
        return next.run(req).await;
    }
    let ok =
        presented_key(req.headers()).is_some_and(|k| keys.iter().any(|key| same_secret(k, key)));
    if ok {
        return next.run(req).await;
    }
    let message = if presented_key(req.headers()).is_some() {
        "the API key is not valid"
    } else {
        "an API key is required (Authorization: Bearer <key> or X-API-Key: <key>)"
    };
    // Each front door answers in its own error shape.
    let err = ApiError::new(ErrorKind::Unauthorized, message);
    let body = if path == "/rpc" {
        serde_json::to_vec(&RpcResponse::failure(serde_json::Value::Null, &err))
    } else if path.starts_with("/terminal/") {
        serde_json::to_vec(&serde_json::json!({ "error": ErrorObject::from(&err) }))
    } else {
        return crate::e2b::error(StatusCode::UNAUTHORIZED, message);
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        body.expect("responses serialize"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert("x-api-key", "xyz".parse().unwrap());
        assert_eq!(presented_key(&h), Some("xyz"));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}

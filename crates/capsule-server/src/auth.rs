//! API keys. With none configured the server is open (it then listens on
//! loopback only, unless told otherwise). With keys, every request to the
//! control plane (`/rpc`, `/terminal`, `/mcp`, the E2B routes) must carry
//! one, as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the engine
//! says which tenant and role it stands for.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use capsule_api::rpc::{ErrorObject, Response as RpcResponse};
use capsule_engine::AuthError;

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

/// Resolves the caller of every control-plane request (`/rpc`,
/// `/terminal`, `/mcp`, the E2B control plane) and puts its [`Principal`]
/// in the request's extensions; refuses missing, unknown and revoked keys
/// and keys past their rate limit, each door in its own error shape.
pub(crate) async fn require_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        return next.run(req).await;
    }
    match state.engine.authenticate(presented_key(req.headers())) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => crate::e2b::answer_early(req, refuse(&path, &e)).await,
    }
}

fn refuse(path: &str, e: &AuthError) -> Response {
    let err = e.to_api_error();
    let status = match e {
        AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut resp = if path == "/rpc" {
        let body = serde_json::to_vec(&RpcResponse::failure(serde_json::Value::Null, &err))
            .expect("responses serialize");
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else if path.starts_with("/terminal/") {
        let body = serde_json::to_vec(&serde_json::json!({ "error": ErrorObject::from(&err) }))
            .expect("responses serialize");
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        crate::e2b::error(status, err.message.clone())
    };
    if let AuthError::RateLimited { retry_after_s, .. } = e
        && let Ok(v) = header::HeaderValue::from_str(&retry_after_s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
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

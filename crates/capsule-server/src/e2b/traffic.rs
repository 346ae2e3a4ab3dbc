//! In-sandbox traffic of E2B's SDKs. They send everything to one URL and
//! name the sandbox and port in headers (`E2b-Sandbox-Id`,
//! `E2b-Sandbox-Port`): port 49983 is envd, which the agent speaks
//! natively; port 49999 is the code interpreter, which the agent serves
//! under `/interpreter`. Requests are authenticated with the sandbox's
//! tokens and forwarded as they are, bodies streaming both ways. Signed
//! file URLs carry no sandbox at all: the signature's key finds it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use capsule_api::SandboxId;
use capsule_api::timefmt::now_millis;
use capsule_engine::SandboxAccess;
use capsule_protocol::client::Body as AgentBody;
use capsule_protocol::client::percent_encode;
use http_body_util::BodyExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::same_secret;

const ENVD_PORT: &str = "49983";
const INTERPRETER_PORT: &str = "49999";

/// Headers that belong to one hop, or to this front door, and are not forwarded.
const DROPPED: [&str; 11] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "e2b-sandbox-id",
    "e2b-sandbox-port",
    "x-access-token",
    "e2b-traffic-access-token",
];

/// The answer E2B gives for a sandbox that does not run; the SDKs look for
/// "was not found" to raise their not-running errors.
fn sandbox_gone(id: &str) -> Response {
    let body =
        json!({"code": 502, "message": format!("The sandbox {id} was not found"), "sandboxId": id});
    let mut resp = (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert("should-retry", "false".parse().expect("static header"));
    resp
}

/// Answers a request without forwarding it, after reading what is left of
/// its body (bounded): an unread body makes the server close the
/// connection, and clients that pool connections (E2B's SDKs share one pool
/// between the control plane and sandbox traffic) would then fail their
/// next request on it. A body too large to read gets `Connection: close`.
pub(crate) async fn answer_early(req: Request, mut resp: Response) -> Response {
    let limited = http_body_util::Limited::new(req.into_body(), 1 << 20);
    let drained = tokio::time::timeout(std::time::Duration::from_secs(2), limited.collect()).await;
    if !matches!(drained, Ok(Ok(_))) {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            "close".parse().expect("static header"),
        );
    }
    resp
}

fn is_rpc(path: &str) -> bool {
    path.starts_with("/process.") || path.starts_with("/filesystem.")
}

/// 401 in the shape the caller parses: a Connect error for RPCs, envd's
/// plain JSON otherwise.
fn unauthenticated(path: &str, message: &str) -> Response {
    let body = if is_rpc(path) {
        json!({"code": "unauthenticated", "message": message})
    } else {
        json!({"code": 401, "message": message})
    };
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Routes in-sandbox requests before the control plane sees them.
pub(crate) async fn intercept(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(id) = header_str(req.headers(), "e2b-sandbox-id").map(str::to_owned) {
        return sandbox_request(&state, &id, req).await;
    }
    if req.uri().path() == "/files" && req.uri().query().is_some_and(|q| q.contains("signature=")) {
        return signed_request(&state, req).await;
    }
    next.run(req).await
}

async fn sandbox_request(state: &AppState, id: &str, req: Request) -> Response {
    let Ok(sandbox_id) = id.parse::<SandboxId>() else {
        return answer_early(req, sandbox_gone(id)).await;
    };
    let Ok(access) = state.engine.access_any(sandbox_id) else {
        return answer_early(req, sandbox_gone(id)).await;
    };
    let port = header_str(req.headers(), "e2b-sandbox-port")
        .unwrap_or(ENVD_PORT)
        .to_owned();
    let path = req.uri().path().to_owned();
    let tokens = access.record.tokens.clone();
    let (envd_ok, traffic_ok) = {
        let presented = |name: &str, token: &str| {
            header_str(req.headers(), name).is_some_and(|t| same_secret(t, token))
        };
        (
            presented("x-access-token", &tokens.envd),
            presented("e2b-traffic-access-token", &tokens.traffic),
        )
    };
    let prefix = match port.as_str() {
        ENVD_PORT => {
            if !envd_ok {
                let refused = unauthenticated(
                    &path,
                    "the sandbox's access token (X-Access-Token) is missing or wrong",
                );
                return answer_early(req, refused).await;
            }
            ""
        }
        INTERPRETER_PORT => {
            if !traffic_ok && !envd_ok {
                let refused = unauthenticated(
                    &path,
                    "the sandbox's traffic access token is missing or wrong",
                );
                return answer_early(req, refused).await;
            }
            "/interpreter"
        }
        other => {
            let body = json!({"code": 502, "message": format!("The sandbox {id} is running but port {other} is not open"), "sandboxId": id});
            return answer_early(
                req,
                (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response(),
            )
            .await;
        }
    };
    // A paused sandbox resumes for its traffic, once the caller proved it
    // holds the sandbox's token (a stranger must not keep it alive).
    let _ = state.engine.wake(sandbox_id).await;
    forward(&access, prefix, req).await
}

/// The signature E2B's SDKs put on file URLs: SHA-256 over
/// `path:operation:user:token[:expiration]`, base64 without padding.
pub fn file_signature(
    path: &str,
    operation: &str,
    user: &str,
    token: &str,
    expiration: Option<&str>,
) -> String {
    let mut raw = format!("{path}:{operation}:{user}:{token}");
    if let Some(exp) = expiration {
        raw.push(':');
        raw.push_str(exp);
    }
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The parts of a signed `/files` URL, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    pub path: String,
    pub user: String,
    pub signature: String,
    pub expiration: Option<String>,
}

impl SignedQuery {
    /// The query the agent gets: exactly the signed path and user.
    pub fn forwarded(&self) -> String {
        let mut q = format!("path={}", percent_encode(&self.path));
        if !self.user.is_empty() {
            q.push_str("&username=");
            q.push_str(&percent_encode(&self.user));
        }
        q
    }
}

/// Reads a signed URL's query. A name given twice (also as `p%61th`) could
/// be signed in one copy and acted on in the other, so that is refused
/// rather than one picked.
pub fn signed_query(query: Option<&str>) -> Result<SignedQuery, (StatusCode, String)> {
    let query = super::control_query_pairs(query);
    for name in ["path", "username", "signature", "signature_expiration"] {
        if query.iter().filter(|(key, _)| key == name).count() > 1 {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("a signed URL gives `{name}` more than once"),
            ));
        }
    }
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let (Some(path), Some(signature)) = (get("path"), get("signature")) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "a signed URL needs path and signature".to_owned(),
        ));
    };
    Ok(SignedQuery {
        path,
        user: get("username").unwrap_or_default(),
        signature,
        expiration: get("signature_expiration"),
    })
}

async fn signed_request(state: &AppState, req: Request) -> Response {
    let SignedQuery {
        path,
        user,
        signature,
        expiration,
    } = match signed_query(req.uri().query()) {
        Ok(q) => q,
        Err((status, message)) => {
            let refused = (
                status,
                axum::Json(json!({"code": status.as_u16(), "message": message})),
            )
                .into_response();
            return answer_early(req, refused).await;
        }
    };
    let operation = if req.method() == axum::http::Method::GET {
        "read"
    } else {
        "write"
    };
    if let Some(exp) = &expiration {
        let expired = match exp.parse::<i64>() {
            Ok(at) => at.saturating_mul(1000) < now_millis(),
            Err(_) => true,
        };
        if expired {
            let refused = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"code": 401,
                    "message": format!("the signed URL has expired or its signature_expiration {exp:?} is not a time")})),
            )
                .into_response();
            return answer_early(req, refused).await;
        }
    }
    let found = state.engine.find_by_tokens(|tokens| {
        let expected = file_signature(&path, operation, &user, &tokens.envd, expiration.as_deref());
        same_secret(&expected, &signature)
    });
    let Some(access) = found else {
        let refused = (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"code": 401, "message": "the URL's signature matches no running sandbox"}),
            ),
        )
            .into_response();
        return answer_early(req, refused).await;
    };
    let _ = state.engine.wake(access.record.id).await;
    // The agent acts on exactly what was signed: the query is rebuilt from
    // the checked values, and no credential of the caller's own (a Basic
    // username, a token) travels with it.
    let (mut parts, body) = req.into_parts();
    let canonical = SignedQuery {
        path,
        user,
        signature,
        expiration,
    }
    .forwarded();
    parts.uri = match format!("/files?{canonical}").parse() {
        Ok(uri) => uri,
        Err(e) => {
            return super::error(
                StatusCode::BAD_REQUEST,
                format!("cannot forward the signed request: {e}"),
            );
        }
    };
    parts.headers.remove(axum::http::header::AUTHORIZATION);
    parts.headers.remove("x-access-token");
    forward(&access, "", Request::from_parts(parts, body)).await
}

/// Sends the request on to the sandbox's agent and streams the answer back.
async fn forward(access: &SandboxAccess, prefix: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // `E2B_SANDBOX_URL` with a trailing slash makes the SDKs send `//path`.
    let path = parts.uri.path();
    let path = if path.starts_with("//") {
        &path[1..]
    } else {
        path
    };
    let target = match parts.uri.query() {
        Some(q) => format!("{prefix}{path}?{q}"),
        None => format!("{prefix}{path}"),
    };
    let body: AgentBody = body.map_err(std::io::Error::other).boxed_unsync();
    let mut out = http::Request::builder().method(parts.method).uri(target);
    for (name, value) in &parts.headers {
        if !DROPPED.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => {
            return super::error(
                StatusCode::BAD_REQUEST,
                format!("cannot forward the request: {e}"),
            );
        }
    };
    match access.agent.send(out).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for name in ["connection", "keep-alive", "transfer-encoding"] {
                parts.headers.remove(HeaderName::from_static(name));
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(sandbox = %access.record.id, "forwarding to the agent failed: {e}");
            sandbox_gone(access.record.id.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_sdk_algorithm() {
        // sha256("/home/user/a.txt:read:user:tok") in base64 without padding.
        let sig = file_signature("/home/user/a.txt", "read", "user", "tok", None);
        let digest = Sha256::digest(b"/home/user/a.txt:read:user:tok");
        assert_eq!(
            sig,
            format!(
                "v1_{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
            )
        );
        assert!(!sig.ends_with('='));
        let with_exp = file_signature("/a", "write", "", "tok", Some("1700000000"));
        assert_ne!(with_exp, file_signature("/a", "write", "", "tok", None));
    }

    #[test]
    fn headers_for_this_hop_are_not_forwarded() {
        assert!(DROPPED.contains(&axum::http::header::HOST.as_str()));
        assert!(DROPPED.contains(&"x-access-token"));
    }
}

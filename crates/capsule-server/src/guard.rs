//! Browser-borne attacks on the API: DNS rebinding and cross-site requests.
//!
//! A server on loopback with no keys runs open for local development, so
//! any web page the developer visits could otherwise drive it: a
//! `text/plain` POST needs no CORS preflight, a WebSocket handshake none
//! at all, and a rebound DNS name makes the browser treat the server as
//! the page's own origin. Two checks close this on every door:
//!
//! - on a loopback listener the `Host` header must be a local name
//!   (`localhost`, `*.localhost`, a loopback address): a rebound name is
//!   refused;
//! - a request that carries an `Origin` (browsers add it to cross-site
//!   POSTs and to every WebSocket handshake) must come from the server's
//!   own origin, a local origin when the server is on loopback, or an
//!   origin the operator allowed with `--allow-origin`.
//!
//! Programs (SDKs, curl, the CLI) send no `Origin` and a `Host` of the
//! address they dialled, so they pass untouched.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

pub(crate) async fn browser_guard(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match check(req.headers(), &state.config) {
        Ok(()) => next.run(req).await,
        Err(why) => refuse(why),
    }
}

fn check(headers: &HeaderMap, config: &crate::ServerConfig) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !config.any_host && !host.is_empty() && !is_local_name(host_name(host)) {
        return Err(format!(
            "the Host header {host:?} is not a local name; a server on loopback answers only \
             localhost and loopback addresses (this defeats DNS rebinding)"
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("<not text>");
    if origin_allowed(origin, host, config) {
        Ok(())
    } else {
        Err(format!(
            "cross-origin request from {origin:?} refused; allow a browser origin with \
             `capsule serve --allow-origin {origin}`"
        ))
    }
}

fn origin_allowed(origin: &str, host: &str, config: &crate::ServerConfig) -> bool {
    if config
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // `Origin: null` (sandboxed frames, file: pages) is never anyone's own.
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if authority.contains(['/', '?', '#', '@']) || authority.is_empty() {
        return false;
    }
    if !host.is_empty() && authority.eq_ignore_ascii_case(host) {
        // Same origin; on loopback the Host check above already made sure
        // it is a local name rather than a rebound one.
        return true;
    }
    !config.any_host && is_local_name(host_name(authority))
}

/// The name part of `host[:port]` or `[v6]:port`.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if name.len() > ".localhost".len() {
        let (_, suffix) = name.split_at(name.len() - ".localhost".len());
        if suffix.eq_ignore_ascii_case(".localhost") {
            return true;
        }
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn refuse(why: String) -> Response {
    let body = serde_json::json!({"code": 403, "message": why});
    let mut resp = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    // The body may not have been read; do not leave it for the next request.
    resp.headers_mut()
        .insert(header::CONNECTION, "close".parse().expect("static header"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(any_host: bool, allowed: &[&str]) -> crate::ServerConfig {
        crate::ServerConfig {
            any_host,
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_server_answers_only_local_names() {
        let c = config(false, &[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "49983-abc.localhost:8080",
            "127.0.0.2",
        ] {
            assert!(check(&headers(ok, None), &c).is_ok(), "{ok}");
        }
        for bad in [
            "attacker.example:8080",
            "localhost.attacker.example",
            "10.0.0.1:8080",
            "[fe80::1]:80",
        ] {
            let err = check(&headers(bad, None), &c).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn cross_origin_browsers_are_refused() {
        let c = config(false, &[]);
        let h = |o| headers("127.0.0.1:8080", Some(o));
        assert!(check(&h("http://127.0.0.1:8080"), &c).is_ok());
        assert!(check(&h("http://localhost:6274"), &c).is_ok());
        for bad in [
            "http://attacker.example",
            "null",
            "https://127.0.0.1.attacker.example",
            "http://user@evil.example",
        ] {
            let err = check(&h(bad), &c).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn public_server_takes_its_own_origin_and_allowed_ones() {
        let c = config(true, &["https://console.example.com"]);
        let h = |o| headers("sandboxes.example.com", Some(o));
        assert!(check(&headers("sandboxes.example.com", None), &c).is_ok());
        assert!(check(&h("https://sandboxes.example.com"), &c).is_ok());
        assert!(check(&h("https://console.example.com"), &c).is_ok());
        assert!(check(&h("http://localhost:3000"), &c).is_err());
        assert!(check(&h("https://attacker.example"), &c).is_err());
    }
}

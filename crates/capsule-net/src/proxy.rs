//! The HTTP/1.1 forward proxy one egress sandbox talks to.
//!
//! It takes `CONNECT host:port` (any TLS or other stream, tunnelled as
//! bytes) and absolute-form plain HTTP requests (`GET http://host/path`).
//! Every target is checked against the sandbox's allow-list, resolved once
//! here, and refused when any address it resolves to is always denied (so a
//! name that points inside, now or after a DNS change, gets nowhere); the
//! proxy then dials the address it checked, never the name again. Secret
//! headers are added to plain HTTP requests only: a CONNECT tunnel carries
//! TLS the proxy cannot (and does not try to) open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::addr::DenyList;
use crate::policy::{Host, Policy};

/// How long resolving a name or dialling an address may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Client connections one sandbox may have open at once.
const MAX_CONNECTIONS: usize = 256;

type Body = BoxBody<Bytes, hyper::Error>;

/// What one sandbox's proxy enforces.
pub struct Egress {
    policy: Policy,
    deny: DenyList,
}

/// A request the proxy answers itself, with a one-line reason.
struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    fn response(self) -> Response<Body> {
        let mut resp = Response::new(full(format!("capsule egress: {}\n", self.reason)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Headers that describe one hop and are never forwarded, plus any header
/// the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

impl Egress {
    pub fn new(policy: Policy, deny: DenyList) -> Arc<Self> {
        Arc::new(Self { policy, deny })
    }

    /// Checks `raw_host` against the allow-list and the always-denied
    /// ranges and returns the addresses to dial.
    async fn resolve(&self, raw_host: &str, port: u16) -> Result<(Host, Vec<SocketAddr>), Refusal> {
        let host = Host::parse(raw_host).map_err(|why| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("{raw_host:?} is not a valid host: it {why}"),
            )
        })?;
        if !self.policy.allows(&host) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("{raw_host} is not in this sandbox's network allow-list"),
            ));
        }
        let addrs: Vec<SocketAddr> = match &host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => {
                let found = tokio::time::timeout(
                    DIAL_TIMEOUT,
                    tokio::net::lookup_host((name.as_str(), port)),
                )
                .await
                .map_err(|_| {
                    Refusal::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("resolving {name} timed out"),
                    )
                })?
                .map_err(|e| {
                    Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        format!("cannot resolve {name}: {e}"),
                    )
                })?;
                found.collect()
            }
        };
        if addrs.is_empty() {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("{raw_host} has no addresses"),
            ));
        }
        // All or nothing: one internal address among public ones is how a
        // rebinding attack would look.
        for a in &addrs {
            if let Err(why) = self.deny.check(a.ip()) {
                let shown = if matches!(host, Host::Ip(_)) {
                    format!("{raw_host} is {why}")
                } else {
                    format!("{raw_host} resolves to {} ({why})", a.ip())
                };
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("{shown}, which sandboxes may never reach"),
                ));
            }
        }
        Ok((host, addrs))
    }

    async fn dial(&self, raw_host: &str, addrs: &[SocketAddr]) -> Result<TcpStream, Refusal> {
        let mut last = String::from("no address");
        for addr in addrs {
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: timed out"),
            }
        }
        Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot connect to {raw_host} ({last})"),
        ))
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        stop: CancellationToken,
    ) -> Response<Body> {
        let result = if req.method() == Method::CONNECT {
            self.tunnel(req, stop).await
        } else {
            self.forward(req, stop).await
        };
        result.unwrap_or_else(Refusal::response)
    }

    async fn tunnel(
        &self,
        req: Request<Incoming>,
        stop: CancellationToken,
    ) -> Result<Response<Body>, Refusal> {
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "CONNECT needs a host:port target",
            ));
        };
        let Some(port) = authority.port_u16() else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("CONNECT {authority} has no port"),
            ));
        };
        let (_, addrs) = self.resolve(authority.host(), port).await?;
        let mut upstream = self.dial(authority.host(), &addrs).await?;
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        () = stop.cancelled() => {}
                    }
                }
                Err(e) => tracing::debug!("egress CONNECT {authority} never upgraded: {e}"),
            }
        });
        Ok(Response::new(full(Bytes::new())))
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        stop: CancellationToken,
    ) -> Result<Response<Body>, Refusal> {
        let (mut parts, body) = req.into_parts();
        match parts.uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "send https:// through CONNECT (set HTTPS_PROXY), not as a plain request",
                ));
            }
            _ => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "this is Capsule's egress proxy: send absolute-form http:// requests or CONNECT",
                ));
            }
        }
        let Some(authority) = parts.uri.authority().cloned() else {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, "the URL has no host"));
        };
        let port = authority.port_u16().unwrap_or(80);
        let (host, addrs) = self.resolve(authority.host(), port).await?;
        let stream = self.dial(authority.host(), &addrs).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("talking to {}: {e}", authority.host()),
                )
            })?;
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });

        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = path
            .parse::<Uri>()
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the URL has an invalid path"))?;
        strip_hop_by_hop(&mut parts.headers);
        // Host without any user:password@ the URL carried.
        let host_header = match authority.port() {
            Some(p) => format!("{}:{p}", authority.host()),
            None => authority.host().to_owned(),
        };
        let host_value = HeaderValue::from_str(&host_header)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the URL has an invalid host"))?;
        parts.headers.insert(header::HOST, host_value);
        // The sandbox cannot set (or learn, by echo) a header the proxy
        // fills in with a secret.
        for secret in self.policy.secrets_for(&host.key()) {
            parts.headers.remove(&secret.header);
            parts.headers.insert(secret.header, secret.value);
        }
        let resp = sender
            .send_request(Request::from_parts(parts, body))
            .await
            .map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("{} did not answer: {e}", authority.host()),
                )
            })?;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// Serves the proxy on `listener` until `stop` is cancelled; cancelling
/// also ends every connection and tunnel it opened.
pub async fn serve(listener: TcpListener, egress: Arc<Egress>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("egress proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let egress = egress.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc_stop = stop.clone();
            let service = hyper::service::service_fn(move |req| {
                let egress = egress.clone();
                let stop = svc_stop.clone();
                async move { Ok::<_, Infallible>(egress.handle(req, stop).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, X-Private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    async fn refused(egress: &Egress, host: &str) -> String {
        match egress.resolve(host, 80).await {
            Ok(_) => panic!("{host} was allowed"),
            Err(r) => r.reason,
        }
    }

    #[tokio::test]
    async fn allow_list_and_always_denied_ranges_both_apply() {
        let allow: Vec<String> = [
            "198.51.100.0/24",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "localhost",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let egress = Egress::new(Policy::new(&allow, &[]).unwrap(), DenyList::new(Vec::new()));
        let (_, addrs) = egress.resolve("198.51.100.7", 80).await.ok().unwrap();
        assert_eq!(addrs, vec!["198.51.100.7:80".parse().unwrap()]);
        assert!(refused(&egress, "203.0.113.1").await.contains("allow-list"));
        assert!(refused(&egress, "127.0.0.1").await.contains("loopback"));
        assert!(
            refused(&egress, "169.254.169.254")
                .await
                .contains("link-local")
        );
        assert!(
            refused(&egress, "[::ffff:127.0.0.1]")
                .await
                .contains("loopback")
        );
        // A name that resolves inside is refused after resolution.
        assert!(refused(&egress, "localhost").await.contains("resolves to"));
        assert!(
            refused(&egress, "exa mple")
                .await
                .contains("not a valid host")
        );
    }
}

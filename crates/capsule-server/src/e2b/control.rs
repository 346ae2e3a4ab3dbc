//! `/v2/sandboxes` and `/sandboxes/...`: create, connect, list, detail,
//! kill, timeout and metrics, on the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use capsule_api::e2b::{
    ENVD_VERSION, ListedSandbox, NewSandbox, Sandbox, SandboxDetail, SandboxMetric, Timeout,
};
use capsule_api::sandbox::CreateParams;
use capsule_api::timefmt::{format_rfc3339, now_millis};
use capsule_api::{ApiError, ErrorKind, SandboxId};
use capsule_engine::Principal;
use capsule_engine::SandboxAccess;
use capsule_engine::store::SandboxRecord;
use serde_json::json;

use super::error;
use crate::AppState;

/// E2B's default time to live when a create gives none (seconds).
const DEFAULT_TIMEOUT_S: u64 = 300;

/// The client id the SDKs read but do not use.
const CLIENT_ID: &str = "capsule";

fn api_error(e: ApiError) -> Response {
    let status = match e.kind {
        ErrorKind::SandboxNotFound | ErrorKind::SandboxExpired | ErrorKind::TemplateNotFound => {
            StatusCode::NOT_FOUND
        }
        ErrorKind::SandboxNotRunning => StatusCode::CONFLICT,
        ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Unavailable | ErrorKind::TemplateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.message)
}

/// An early answer from a parsing helper (boxed: responses are large).
type Rejection = Box<Response>;

fn reject(status: StatusCode, message: impl Into<String>) -> Rejection {
    Box::new(error(status, message))
}

fn parse_id(id: &str) -> Result<SandboxId, Rejection> {
    id.parse()
        .map_err(|_| reject(StatusCode::NOT_FOUND, format!("sandbox {id:?} not found")))
}

/// Parses a JSON body leniently: unknown fields are fine, an empty body is `{}`.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Rejection> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        reject(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

fn sandbox_answer(access: &SandboxAccess) -> Sandbox {
    let r = &access.record;
    Sandbox {
        template_id: r.template.clone(),
        sandbox_id: r.id.to_string(),
        client_id: CLIENT_ID.into(),
        alias: Some(r.template.clone()),
        envd_version: ENVD_VERSION.into(),
        envd_access_token: Some(r.tokens.envd.clone()),
        traffic_access_token: Some(r.tokens.traffic.clone()),
        domain: None,
    }
}

/// Free space for sandboxes' files, reported as their disk size.
fn disk_size_mb(state: &AppState) -> u64 {
    state.engine.disk_capacity_bytes().unwrap_or(0) >> 20
}

fn listed(state: &AppState, r: &SandboxRecord) -> ListedSandbox {
    ListedSandbox {
        template_id: r.template.clone(),
        alias: Some(r.template.clone()),
        sandbox_id: r.id.to_string(),
        client_id: CLIENT_ID.into(),
        started_at: format_rfc3339(r.created_at),
        end_at: format_rfc3339(r.expires_at),
        cpu_count: r.cpu.ceil().max(1.0) as u64,
        memory_mb: r.memory_mb,
        disk_size_mb: disk_size_mb(state),
        metadata: r.metadata.clone(),
        state: if r.paused_at.is_some() {
            "paused"
        } else {
            "running"
        }
        .into(),
        envd_version: ENVD_VERSION.into(),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Response {
    let req: NewSandbox = match body(&bytes) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let refuse = |what: &str| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{what} is not supported by this Capsule server"),
        )
    };
    if req.allow_internet_access == Some(true) {
        return error(
            StatusCode::BAD_REQUEST,
            "allow_internet_access is not available through the E2B door: Capsule sandboxes have no network \
             besides their own loopback unless created with an egress allow-list (`network` of \
             sandbox.v1.create, see docs/network.md); omit allow_internet_access or set it to false",
        );
    }
    if req.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        return refuse("volumeMounts");
    }
    if req.mcp.is_some() {
        return refuse("mcp");
    }
    if req
        .network
        .as_ref()
        .is_some_and(|n| n.as_object().is_some_and(|o| !o.is_empty()))
    {
        return refuse("network configuration");
    }
    let template = req.template_id.unwrap_or_else(|| "base".into());
    // E2B names snapshots where it names templates.
    let snapshot = state
        .engine
        .is_snapshot(&who, &template)
        .then(|| template.clone());
    let params = CreateParams {
        template: if snapshot.is_some() {
            "base".into()
        } else {
            template
        },
        snapshot,
        pause_on_expiry: req.auto_pause == Some(true),
        ttl_ms: Some(
            req.timeout
                .unwrap_or(DEFAULT_TIMEOUT_S)
                .saturating_mul(1000),
        ),
        env: req.env_vars.unwrap_or_default(),
        metadata: req.metadata.unwrap_or_default(),
        ..CreateParams::default()
    };
    let created = match state.engine.create(&who, params).await {
        Ok(c) => c,
        Err(e) => return api_error(e),
    };
    match state.engine.access(&who, created.id) {
        Ok(access) => (StatusCode::CREATED, Json(sandbox_answer(&access))).into_response(),
        Err(e) => api_error(e),
    }
}

/// The id and `{timeout}` body of a connect or resume, with the sandbox
/// resumed (a no-op for a running one).
async fn resumed(
    state: &AppState,
    who: &Principal,
    id: &str,
    bytes: &[u8],
) -> Result<(SandboxId, Timeout), Response> {
    let id = parse_id(id).map_err(|r| *r)?;
    let req: Timeout = body(bytes).map_err(|r| *r)?;
    state.engine.resume(who, id).await.map_err(api_error)?;
    Ok((id, req))
}

pub(crate) async fn connect(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    // Connecting to a paused sandbox resumes it.
    let (id, req) = match resumed(&state, &who, &id, &bytes).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Connecting with a timeout never shortens the sandbox's life.
    if let Some(t) = req.timeout {
        let ends_at = match state.engine.access(&who, id) {
            Ok(a) => a.record.expires_at,
            Err(e) => return api_error(e),
        };
        let wanted = now_millis() + (t as i64).saturating_mul(1000);
        if wanted > ends_at
            && let Err(e) = state.engine.set_timeout(&who, id, t.saturating_mul(1000))
        {
            return api_error(e);
        }
    }
    match state.engine.access(&who, id) {
        Ok(a) => (StatusCode::OK, Json(sandbox_answer(&a))).into_response(),
        Err(e) => api_error(e),
    }
}

/// Decodes `%XX` and `+` (form encoding).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            ) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// The SDKs send the metadata filter form-encoded inside a query parameter,
/// with each key and value percent-encoded once more.
pub fn metadata_filter(value: &str) -> BTreeMap<String, String> {
    value
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(&form_decode(k)), form_decode(&form_decode(v)))
        })
        .collect()
}

struct ListQuery {
    metadata: BTreeMap<String, String>,
    states: Option<Vec<String>>,
    template: Option<String>,
    started_after: Option<i64>,
    newest_first: bool,
    limit: Option<usize>,
    next_token: Option<String>,
}

fn list_query(raw: Option<&str>) -> Result<ListQuery, Rejection> {
    let mut q = ListQuery {
        metadata: BTreeMap::new(),
        states: None,
        template: None,
        started_after: None,
        newest_first: false,
        limit: None,
        next_token: None,
    };
    for (k, v) in query_pairs(raw) {
        match k.as_str() {
            "metadata" => q.metadata.extend(metadata_filter(&v)),
            "state" => {
                let states: Vec<String> = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = states
                    .iter()
                    .find(|s| !["running", "paused"].contains(&s.as_str()))
                {
                    return Err(reject(
                        StatusCode::BAD_REQUEST,
                        format!("state {bad:?} is not one of running, paused"),
                    ));
                }
                q.states.get_or_insert_with(Vec::new).extend(states);
            }
            "template" => q.template = Some(v),
            "startedAfter" => {
                q.started_after =
                    Some(capsule_api::timefmt::parse_rfc3339(&v).ok_or_else(|| {
                        reject(
                            StatusCode::BAD_REQUEST,
                            format!("startedAfter {v:?} is not an RFC 3339 time"),
                        )
                    })?)
            }
            "order" => {
                q.newest_first = match v.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(reject(
                            StatusCode::BAD_REQUEST,
                            format!("order {v:?} must be asc or desc"),
                        ));
                    }
                }
            }
            "limit" => {
                q.limit = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|l| (1..=1000).contains(l))
                        .ok_or_else(|| {
                            reject(
                                StatusCode::BAD_REQUEST,
                                format!("limit {v:?} must be between 1 and 1000"),
                            )
                        })?,
                )
            }
            "nextToken" => q.next_token = Some(v),
            _ => {}
        }
    }
    Ok(q)
}

fn page_token(r: &SandboxRecord) -> String {
    format!("{}.{}", r.created_at, r.id)
}

fn matching(state: &AppState, who: &Principal, q: &ListQuery) -> Vec<SandboxRecord> {
    let wants = |paused: bool| {
        q.states.as_ref().is_none_or(|s| {
            s.iter()
                .any(|s| s == if paused { "paused" } else { "running" })
        })
    };
    state
        .engine
        .running_records(who)
        .into_iter()
        .filter(|r| wants(r.paused_at.is_some()))
        .filter(|r| q.metadata.iter().all(|(k, v)| r.metadata.get(k) == Some(v)))
        .filter(|r| q.template.as_ref().is_none_or(|t| &r.template == t))
        .filter(|r| q.started_after.is_none_or(|at| r.created_at >= at))
        .collect()
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match list_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let mut records = matching(&state, &who, &q);
    if q.newest_first {
        records.reverse();
    }
    if let Some(token) = &q.next_token {
        // The list is ordered by (start, id); a page resumes after its token.
        let (ms, id) = token.split_once('.').unwrap_or(("", ""));
        let Ok(ms) = ms.parse::<i64>() else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("nextToken {token:?} is not one this server issued"),
            );
        };
        let after = (ms, id);
        records.retain(|r| {
            let key = (r.created_at, r.id.as_str());
            if q.newest_first {
                key < after
            } else {
                key > after
            }
        });
    }
    let limit = q.limit.unwrap_or(100);
    let more = records.len() > limit;
    records.truncate(limit);
    let items: Vec<ListedSandbox> = records.iter().map(|r| listed(&state, r)).collect();
    let mut resp = Json(items).into_response();
    if more && let Some(last) = records.last() {
        let token = page_token(last);
        if let Ok(v) = HeaderValue::from_str(&token) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    resp
}

pub(crate) async fn list_v1(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match list_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let items: Vec<ListedSandbox> = matching(&state, &who, &q)
        .iter()
        .map(|r| listed(&state, r))
        .collect();
    Json(items).into_response()
}

pub(crate) async fn detail(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match state.engine.access(&who, id) {
        Ok(a) => Json(SandboxDetail {
            listed: listed(&state, &a.record),
            envd_access_token: Some(a.record.tokens.envd.clone()),
            domain: None,
            allow_internet_access: false,
        })
        .into_response(),
        Err(e) => api_error(e),
    }
}

pub(crate) async fn kill(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match state.engine.delete(&who, id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e),
    }
}

pub(crate) async fn set_timeout(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let req: Timeout = match body(&bytes) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Some(t) = req.timeout else {
        return error(StatusCode::BAD_REQUEST, "timeout (seconds) is required");
    };
    match state.engine.set_timeout(&who, id, t.saturating_mul(1000)) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e),
    }
}

/// The last CPU reading per sandbox, so usage is a rate between calls.
static CPU_SAMPLES: Mutex<Option<HashMap<SandboxId, (Instant, u64)>>> = Mutex::new(None);

pub(crate) async fn metrics(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let access = match state.engine.access(&who, id) {
        Ok(a) => a,
        Err(e) => return api_error(e),
    };
    let usage = match state.engine.usage(&who, id).await {
        Ok(u) => u,
        Err(e) => return api_error(e),
    };
    let r = &access.record;
    let cores = r.cpu.ceil().max(1.0);
    let cpu_ns = usage.cpu_ns.unwrap_or(0);
    let now = Instant::now();
    let pct = {
        let mut samples = CPU_SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
        let map = samples.get_or_insert_with(HashMap::new);
        let pct = match map.get(&id) {
            Some(&(at, prev)) if now > at => {
                let wall = now.duration_since(at).as_nanos() as f64;
                (cpu_ns.saturating_sub(prev) as f64 / wall / cores * 100.0).min(100.0)
            }
            _ => {
                let lived = ((now_millis() - r.created_at).max(1) as f64) * 1e6;
                (cpu_ns as f64 / lived / cores * 100.0).min(100.0)
            }
        };
        map.insert(id, (now, cpu_ns));
        pct
    };
    let now_ms = now_millis();
    let disk_used = usage.disk_bytes.unwrap_or(0);
    Json(vec![SandboxMetric {
        timestamp: format_rfc3339(now_ms),
        timestamp_unix: now_ms / 1000,
        cpu_count: cores as u64,
        cpu_used_pct: (pct * 100.0).round() / 100.0,
        mem_used: usage.memory_bytes.unwrap_or(0),
        mem_total: r.memory_mb << 20,
        mem_cache: 0,
        disk_used,
        disk_total: disk_used + state.engine.disk_capacity_bytes().unwrap_or(0),
    }])
    .into_response()
}

pub(crate) async fn pause(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if let Ok(access) = state.engine.access(&who, id)
        && access.record.paused_at.is_some()
    {
        return error(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        );
    }
    match state.engine.pause(&who, id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e),
    }
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let (id, req) = match resumed(&state, &who, &id, &bytes).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Some(t) = req.timeout
        && let Err(e) = state.engine.set_timeout(&who, id, t.saturating_mul(1000))
    {
        return api_error(e);
    }
    match state.engine.access(&who, id) {
        Ok(a) => (StatusCode::CREATED, Json(sandbox_answer(&a))).into_response(),
        Err(e) => api_error(e),
    }
}

#[derive(Default, serde::Deserialize)]
struct SnapshotRequest {
    #[serde(default)]
    name: Option<String>,
}

pub(crate) async fn snapshot(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let req: SnapshotRequest = match body(&bytes) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match state.engine.snapshot(&who, id, req.name).await {
        Ok(s) => (
            StatusCode::CREATED,
            Json(json!({"snapshotID": s.snapshot_id, "names": s.name.into_iter().collect::<Vec<_>>()})),
        )
            .into_response(),
        Err(e) => api_error(e),
    }
}

pub(crate) async fn list_snapshots(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: BTreeMap<String, String> = query_pairs(raw.as_deref()).into_iter().collect();
    match state.engine.list_snapshots(&who) {
        Ok(all) => {
            let items: Vec<serde_json::Value> = all
                .into_iter()
                .filter(|s| q.get("sandboxID").is_none_or(|id| &s.source == id))
                .filter(|s| q.get("name").is_none_or(|n| s.name.as_ref() == Some(n)))
                .map(|s| json!({"snapshotID": s.snapshot_id, "names": s.name.into_iter().collect::<Vec<_>>()}))
                .collect();
            Json(items).into_response()
        }
        Err(e) => api_error(e),
    }
}

#[derive(Default, serde::Deserialize)]
struct ForkRequest {
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    count: Option<u32>,
}

pub(crate) async fn fork(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let req: ForkRequest = match body(&bytes) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let params = capsule_api::sandbox::ForkParams {
        id,
        count: req.count.unwrap_or(1),
        ttl_ms: req.timeout.map(|t| t.saturating_mul(1000)),
        metadata: BTreeMap::new(),
    };
    match state.engine.fork(&who, params).await {
        Ok(made) => {
            let items: Vec<serde_json::Value> = made
                .iter()
                .filter_map(|m| state.engine.access(&who, m.id).ok())
                .map(|a| json!({"sandbox": sandbox_answer(&a)}))
                .collect();
            (StatusCode::CREATED, Json(items)).into_response()
        }
        Err(e) => api_error(e),
    }
}

pub(crate) async fn unsupported(uri: axum::http::Uri) -> Response {
    let what = uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("this operation")
        .to_owned();
    error(
        StatusCode::NOT_IMPLEMENTED,
        format!("{what} is not supported by this Capsule server yet"),
    )
}

pub(crate) async fn templates_unsupported() -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "building templates through E2B's template API is not supported by this Capsule server; \
         use its built-in templates (`capsule templates` lists them)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_as_the_sdks_encode_them() {
        // {"a": "b c"} as both SDKs send it.
        let pairs = query_pairs(Some(
            "metadata=a%3Db%252520c&state=running%2Cpaused&limit=5",
        ));
        let meta = metadata_filter(&pairs[0].1);
        assert_eq!(meta["a"], "b c");
        let q = list_query(Some(
            "metadata=a%3Db%252520c%26x%3Dy&state=running%2Cpaused&limit=5",
        ))
        .unwrap();
        assert_eq!(q.metadata.len(), 2);
        assert_eq!(q.metadata["x"], "y");
        assert_eq!(q.states.unwrap(), ["running", "paused"]);
        assert_eq!(q.limit, Some(5));
        assert!(list_query(Some("limit=0")).is_err());
    }
}

//! Routing and the Connect procedures of the `process.Process` and
//! `filesystem.Filesystem` services.

use std::sync::Arc;

use capsule_protocol::connect::{EnvelopeDecoder, encode_message};
use capsule_protocol::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, EntryResponse, GetWatcherEventsResponse,
    ListDirRequest, ListDirResponse, MoveRequest, PathRequest, WatchDirRequest, WatchDirResponse,
    WatchStart, WatcherRequest,
};
use capsule_protocol::paths;
use capsule_protocol::process::{
    CloseStdinRequest, ConnectRequest, Empty, EventMessage, KeepAlive, ListResponse, ProcessEvent,
    SendInputRequest, SendSignalRequest, StartRequest, StreamInputEvent, StreamInputRequest,
    UpdateRequest,
};
use capsule_protocol::{Code, ConnectError};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::http::{
    HandlerResult, channel_body, deadline, empty, send_end, send_message, stream_error,
    stream_request, stream_response, unary_error, unary_ok, unary_request,
};
use crate::users::{as_user, resolve};
use crate::{Agent, discard, files};

pub async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> HandlerResult {
    let path = req.uri().path().to_owned();
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::GET, paths::HEALTH) => empty(StatusCode::NO_CONTENT),
        (Method::GET, paths::FILES) => files::download(agent, req).await,
        (Method::POST, paths::FILES) => files::upload(agent, req).await,
        (Method::POST, "/init") => init(agent, req).await,
        (Method::POST, p)
            if p.starts_with("/process.Process/") || p.starts_with("/filesystem.Filesystem/") =>
        {
            connect_call(agent, req, &path).await
        }
        (_, p) if p == "/interpreter" || p.starts_with("/interpreter/") => {
            crate::interpreter::routes::handle(agent, req).await
        }
        (_, p) => {
            discard(req.into_body()).await;
            unary_error(&ConnectError::new(
                Code::Unimplemented,
                format!("no procedure or endpoint at {p}"),
            ))
        }
    })
}

async fn connect_call(
    agent: Arc<Agent>,
    req: Request<Incoming>,
    path: &str,
) -> http::Response<capsule_protocol::client::Body> {
    let (parts, body) = req.into_parts();
    let id = match agent.identity(&parts.headers) {
        Ok(id) => id,
        Err(e) => {
            discard(body).await;
            return if is_streaming(path) {
                stream_error(&e)
            } else {
                unary_error(&e)
            };
        }
    };
    let procs = &agent.processes;
    macro_rules! unary {
        ($req_ty:ty, |$r:ident| $body:expr) => {{
            let result: Result<_, ConnectError> = async {
                let $r: $req_ty = unary_request(body).await?;
                $body
            }
            .await;
            match result {
                Ok(resp) => unary_ok(&resp),
                Err(e) => unary_error(&e),
            }
        }};
    }
    match path {
        paths::PROCESS_LIST => unary!(Empty, |_r| Ok(ListResponse {
            processes: procs.list()
        })),
        paths::PROCESS_SEND_INPUT => unary!(SendInputRequest, |r| {
            procs.send_input(&r.process, r.input).await?;
            Ok(Empty {})
        }),
        paths::PROCESS_SEND_SIGNAL => unary!(SendSignalRequest, |r| {
            procs.signal(&r.process, r.signal).await?;
            Ok(Empty {})
        }),
        paths::PROCESS_CLOSE_STDIN => unary!(CloseStdinRequest, |r| {
            procs.close_stdin(&r.process).await?;
            Ok(Empty {})
        }),
        paths::PROCESS_UPDATE => unary!(UpdateRequest, |r| {
            if let Some(pty) = r.pty {
                procs.resize(&r.process, pty.size.cols, pty.size.rows)?;
            } else {
                procs.find(&r.process)?;
            }
            Ok(Empty {})
        }),
        paths::PROCESS_START => {
            let result = async {
                let req: StartRequest = stream_request(body).await?;
                let deadline = deadline(&parts.headers)?;
                procs.start(req, &id, deadline)
            }
            .await;
            match result {
                Ok((proc, rx)) => {
                    process_stream(keepalive_interval(&agent, &parts.headers), proc, rx)
                }
                Err(e) => stream_error(&e),
            }
        }
        paths::PROCESS_CONNECT => {
            let result = async {
                let req: ConnectRequest = stream_request(body).await?;
                let proc = procs.find(&req.process)?;
                let rx = proc.subscribe();
                Ok::<_, ConnectError>((proc, rx))
            }
            .await;
            match result {
                Ok((proc, rx)) => {
                    process_stream(keepalive_interval(&agent, &parts.headers), proc, rx)
                }
                Err(e) => stream_error(&e),
            }
        }
        paths::PROCESS_STREAM_INPUT => stream_input(agent.clone(), body).await,
        paths::FS_STAT => unary!(PathRequest, |r| {
            let p = resolve(&r.path, &id)?;
            let entry = as_user(&id, move || crate::fs::stat(&p)).await?;
            Ok(EntryResponse { entry })
        }),
        paths::FS_MAKE_DIR => unary!(PathRequest, |r| {
            let p = resolve(&r.path, &id)?;
            let entry = as_user(&id, move || crate::fs::make_dir(&p)).await?;
            Ok(EntryResponse { entry })
        }),
        paths::FS_MOVE => unary!(MoveRequest, |r| {
            let (src, dst) = (resolve(&r.source, &id)?, resolve(&r.destination, &id)?);
            let entry = as_user(&id, move || crate::fs::rename(&src, &dst)).await?;
            Ok(EntryResponse { entry })
        }),
        paths::FS_LIST_DIR => unary!(ListDirRequest, |r| {
            let p = resolve(&r.path, &id)?;
            let depth = r.depth;
            let entries = as_user(&id, move || crate::fs::list_dir(&p, depth)).await?;
            Ok(ListDirResponse { entries })
        }),
        paths::FS_REMOVE => unary!(PathRequest, |r| {
            let p = resolve(&r.path, &id)?;
            as_user(&id, move || crate::fs::remove(&p)).await?;
            Ok(Empty {})
        }),
        paths::FS_CREATE_WATCHER => unary!(CreateWatcherRequest, |r| {
            let p = resolve(&r.path, &id)?;
            let recursive = r.recursive;
            let watch = as_user(&id, move || crate::watch::Watch::new(&p, recursive)).await?;
            Ok(CreateWatcherResponse {
                watcher_id: agent.watchers.add(watch),
            })
        }),
        paths::FS_GET_WATCHER_EVENTS => unary!(WatcherRequest, |r| {
            Ok(GetWatcherEventsResponse {
                events: agent.watchers.drain(&r.watcher_id)?,
            })
        }),
        paths::FS_REMOVE_WATCHER => unary!(WatcherRequest, |r| {
            agent.watchers.remove(&r.watcher_id)?;
            Ok(Empty {})
        }),
        paths::FS_WATCH_DIR => {
            let result = async {
                let req: WatchDirRequest = stream_request(body).await?;
                let p = resolve(&req.path, &id)?;
                let recursive = req.recursive;
                as_user(&id, move || crate::watch::Watch::new(&p, recursive)).await
            }
            .await;
            match result {
                Ok(watch) => watch_stream(keepalive_interval(&agent, &parts.headers), watch),
                Err(e) => stream_error(&e),
            }
        }
        other => {
            discard(body).await;
            let e = ConnectError::new(Code::Unimplemented, format!("unknown procedure {other}"));
            if is_streaming(other) {
                stream_error(&e)
            } else {
                unary_error(&e)
            }
        }
    }
}

fn is_streaming(path: &str) -> bool {
    matches!(
        path,
        paths::PROCESS_START
            | paths::PROCESS_CONNECT
            | paths::PROCESS_STREAM_INPUT
            | paths::FS_WATCH_DIR
    )
}

/// Streams a process's events to the client until it ends or the client leaves.
/// How often an idle stream carries a keepalive: the client's
/// `Keepalive-Ping-Interval` (seconds) when it sends one.
fn keepalive_interval(agent: &Agent, headers: &http::HeaderMap) -> std::time::Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map(std::time::Duration::from_secs)
        .unwrap_or(agent.config.keepalive)
}

fn process_stream(
    keepalive: std::time::Duration,
    proc: Arc<crate::process::Proc>,
    mut rx: mpsc::Receiver<ProcessEvent>,
) -> http::Response<capsule_protocol::client::Body> {
    let (tx, body) = channel_body(16);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { break };
                    let is_end = matches!(event, ProcessEvent::End(_));
                    if !send_message(&tx, &EventMessage { event }).await {
                        return;
                    }
                    if is_end {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if !send_message(&tx, &EventMessage { event: ProcessEvent::Keepalive(KeepAlive {}) }).await {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
        let error = proc.timed_out().then(|| {
            ConnectError::new(
                Code::DeadlineExceeded,
                format!("process {} was killed: its deadline passed", proc.pid),
            )
        });
        send_end(&tx, error.as_ref()).await;
    });
    stream_response(body)
}

fn watch_stream(
    keepalive: std::time::Duration,
    mut watch: crate::watch::Watch,
) -> http::Response<capsule_protocol::client::Body> {
    let (tx, body) = channel_body(16);
    tokio::spawn(async move {
        if !send_message(&tx, &WatchDirResponse::Start(WatchStart {})).await {
            return;
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            tokio::select! {
                events = watch.next_events() => match events {
                    Ok(events) => {
                        for e in events {
                            if !send_message(&tx, &WatchDirResponse::Filesystem(e)).await {
                                return;
                            }
                        }
                        if !watch.alive() {
                            break;
                        }
                    }
                    Err(e) => {
                        send_end(&tx, Some(&ConnectError::internal(format!("watch failed: {e}")))).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if !send_message(&tx, &WatchDirResponse::Keepalive(KeepAlive {})).await {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
        send_end(&tx, None).await;
    });
    stream_response(body)
}

/// `StreamInput`: a client stream of input for one process, answered once
/// the client ends it.
async fn stream_input(
    agent: Arc<Agent>,
    mut body: Incoming,
) -> http::Response<capsule_protocol::client::Body> {
    let mut decoder = EnvelopeDecoder::default();
    let mut target = None;
    let result: Result<(), ConnectError> = async {
        loop {
            while let Some(env) = decoder
                .next_envelope()
                .map_err(|e| ConnectError::invalid_argument(e.to_string()))?
            {
                if env.is_end_stream() {
                    return Ok(());
                }
                let msg: StreamInputRequest = serde_json::from_slice(&env.data).map_err(|e| {
                    ConnectError::invalid_argument(format!("invalid input message: {e}"))
                })?;
                match msg.event {
                    StreamInputEvent::Start(start) => {
                        agent.processes.find(&start.process)?;
                        target = Some(start.process);
                    }
                    StreamInputEvent::Data(data) => {
                        let sel = target.as_ref().ok_or_else(|| {
                            ConnectError::invalid_argument("input arrived before the start message")
                        })?;
                        agent.processes.send_input(sel, data.input).await?;
                    }
                    StreamInputEvent::Keepalive(_) => {}
                }
            }
            match body.frame().await {
                None => {
                    decoder
                        .finish()
                        .map_err(|e| ConnectError::invalid_argument(e.to_string()))?;
                    return Ok(());
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        decoder.push(data);
                    }
                }
                Some(Err(e)) => {
                    return Err(ConnectError::new(
                        Code::Canceled,
                        format!("input stream broke: {e}"),
                    ));
                }
            }
        }
    }
    .await;
    let mut out = Vec::new();
    match result {
        Ok(()) => {
            out.extend_from_slice(&encode_message(&Empty {}));
            out.extend_from_slice(&capsule_protocol::connect::encode_end_stream(None));
        }
        Err(e) => out.extend_from_slice(&capsule_protocol::connect::encode_end_stream(Some(&e))),
    }
    stream_response(capsule_protocol::client::full_body(out))
}

/// `POST /init`, as envd has it: sets environment variables every later
/// process starts with (`{"envVars": {...}}`; other fields are ignored).
async fn init(
    agent: Arc<Agent>,
    req: Request<Incoming>,
) -> http::Response<capsule_protocol::client::Body> {
    #[derive(serde::Deserialize)]
    struct Init {
        #[serde(default, rename = "envVars")]
        env_vars: std::collections::BTreeMap<String, String>,
    }
    let body = match crate::http::read_body(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => return crate::http::plain_error(&e),
    };
    let parsed: Init = if body.iter().all(u8::is_ascii_whitespace) {
        Init {
            env_vars: Default::default(),
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                return crate::http::plain_error(&ConnectError::invalid_argument(format!(
                    "malformed /init body: {e}"
                )));
            }
        }
    };
    if let Some(bad) = parsed
        .env_vars
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', '\0']))
    {
        return crate::http::plain_error(&ConnectError::invalid_argument(format!(
            "invalid environment variable name {bad:?}"
        )));
    }
    agent.defaults.extend_env(parsed.env_vars);
    empty(StatusCode::NO_CONTENT)
}

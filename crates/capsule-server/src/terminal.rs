//! `GET /terminal/{id}`: an interactive shell over a WebSocket.
//!
//! Every frame the server sends is terminal output (UTF-8 text). Every text
//! frame the client sends is keyboard input. Binary frames from the client
//! are control messages, JSON: `{"type":"resize","cols":120,"rows":40}`.
//! The initial size comes from `?cols=&rows=` (default 80x24). When the
//! shell exits the server closes the socket with code 1000 and the exit
//! status as the reason; when the sandbox ends, with 1001 and why; when the
//! client closes, the server answers its close frame and ends the shell.

use std::collections::HashMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use capsule_api::rpc::ErrorObject;
use capsule_api::{ApiError, SandboxId};
use capsule_engine::{Terminal, TerminalControl, TerminalEvent};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;

use crate::AppState;

fn error_response(err: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(err.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(serde_json::json!({ "error": ErrorObject::from(err) })),
    )
        .into_response()
}

fn size_param(query: &HashMap<String, String>, name: &str, default: u32) -> Result<u32, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=4096).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_params(format!(
                    "`{name}` must be a number from 1 to 4096, got {v:?}"
                ))
            }),
    }
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<capsule_engine::Principal>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let id: SandboxId = match id.parse() {
        Ok(id) => id,
        Err(e) => return error_response(&ApiError::invalid_params(e.to_string())),
    };
    let size =
        size_param(&query, "cols", 80).and_then(|c| Ok((c, size_param(&query, "rows", 24)?)));
    let (cols, rows) = match size {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    // Start the shell before upgrading, so a bad id is a plain HTTP error.
    let terminal = match state.engine.open_terminal(&who, id, cols, rows).await {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let engine = state.engine.clone();
    ws.on_upgrade(move |socket| bridge(socket, terminal, engine, who, id))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u32, rows: u32 },
}

/// Decodes UTF-8 that may arrive split across chunks.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                        // An incomplete sequence at the end: keep it for the next chunk.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

async fn bridge(
    socket: WebSocket,
    mut terminal: Terminal,
    engine: std::sync::Arc<capsule_engine::Engine>,
    who: capsule_engine::Principal,
    id: SandboxId,
) {
    let control = terminal.control();
    let (mut tx, mut rx) = socket.split();
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<Option<CloseFrame>>();
    let input: tokio::task::JoinHandle<()> = {
        let control = control.clone();
        tokio::spawn(async move {
            let frame = forward_input(&mut rx, &control).await;
            let _ = closed_tx.send(frame);
        })
    };
    let mut decoder = Utf8Stream::default();
    let mut close = CloseFrame {
        code: 1000,
        reason: "terminal closed".into(),
    };
    loop {
        tokio::select! {
            event = terminal.next() => match event {
                Some(Ok(TerminalEvent::Output(bytes))) => {
                    engine.touch(id);
                    let text = decoder.push(&bytes);
                    if !text.is_empty() && tx.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(TerminalEvent::Exited { status, .. })) => {
                    close.reason = status.into();
                    break;
                }
                Some(Err(e)) => {
                    close = match engine.agent(&who, id) {
                        // The sandbox ended (expired or deleted): say so.
                        Err(gone) => CloseFrame { code: 1001, reason: truncate_reason(&gone.message).into() },
                        Ok(_) => CloseFrame { code: 1011, reason: truncate_reason(&e.message).into() },
                    };
                    break;
                }
                None => break,
            },
            frame = &mut closed_rx => {
                // The client closed (or went away): answer its close frame.
                if let Ok(Some(frame)) = frame {
                    // Codes 1005, 1006 and 1015 only describe closes; they are never sent.
                    let code = if matches!(frame.code, 1005 | 1006 | 1015) { 1000 } else { frame.code };
                    close = CloseFrame { code, reason: "closed by the client".into() };
                }
                break;
            }
        }
    }
    input.abort();
    let _ = tx.send(Message::Close(Some(close))).await;
    let _ = tx.close().await;
    control.close().await;
}

/// Close reasons must fit in a control frame (123 bytes).
fn truncate_reason(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > 120 {
            break;
        }
        out.push(c);
    }
    out
}

/// Forwards the client's frames until it closes (its close frame, if any)
/// or input cannot be delivered.
async fn forward_input(
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    control: &TerminalControl,
) -> Option<CloseFrame> {
    while let Some(Ok(msg)) = rx.next().await {
        let result = match msg {
            Message::Text(text) => control.input(text.as_bytes().to_vec()).await,
            Message::Binary(bytes) => match serde_json::from_slice::<Control>(&bytes) {
                Ok(Control::Resize { cols, rows }) => control.resize(cols, rows).await,
                Err(e) => {
                    tracing::debug!("ignoring an unknown terminal control message: {e}");
                    Ok(())
                }
            },
            Message::Close(frame) => {
                return Some(frame.unwrap_or(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                }));
            }
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!("terminal input failed: {}", e.message);
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_handles_splits_and_garbage() {
        let mut d = Utf8Stream::default();
        let snow = "a☃b".as_bytes();
        assert_eq!(d.push(&snow[..2]), "a");
        assert_eq!(d.push(&snow[2..]), "☃b");
        assert_eq!(d.push(&[0xff, b'x']), "\u{FFFD}x");
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        assert!(truncate_reason(&"é".repeat(200)).len() <= 123);
    }
}

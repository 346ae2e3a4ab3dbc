//! `shell`: an interactive terminal in a sandbox over the server's
//! WebSocket. The local terminal goes raw while connected and is restored
//! on exit; window size changes are sent as resize messages.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use futures_util::{SinkExt, StreamExt};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::args::ShellArgs;
use crate::client::Client;

/// Puts the terminal in raw mode until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !termios::isatty(stdin.as_fd()) {
            return None;
        }
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

fn window_size() -> (u16, u16) {
    termios::tcgetwinsize(std::io::stdout().as_fd())
        .ok()
        .filter(|w| w.ws_col > 0 && w.ws_row > 0)
        .map(|w| (w.ws_col, w.ws_row))
        .unwrap_or((80, 24))
}

fn resize_message(cols: u16, rows: u16) -> Message {
    Message::Binary(
        serde_json::to_vec(&serde_json::json!({"type": "resize", "cols": cols, "rows": rows}))
            .expect("json")
            .into(),
    )
}

pub async fn run(client: &Client, a: ShellArgs) -> anyhow::Result<ExitCode> {
    let (cols, rows) = window_size();
    let url = client.ws_url(&format!("/terminal/{}?cols={cols}&rows={rows}", a.id));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )?;
    if let Some(key) = client.api_key() {
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {key}").parse()?,
        );
    }
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            return Err(anyhow!("cannot open a terminal in {}: {message}", a.id));
        }
        Err(e) => {
            return Err(anyhow!(e)).with_context(|| format!("cannot reach {}", client.base()));
        }
    };
    let (mut tx, mut rx) = ws.split();
    let raw = RawMode::enter();
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 4096];
    let mut stdin_open = true;
    let mut exit_status = String::new();
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                }
                Some(Ok(Message::Binary(b))) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&b);
                    let _ = out.flush();
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = frame {
                        if f.code != CloseCode::Normal {
                            exit_status = format!("terminal closed: {}", f.reason);
                        } else {
                            exit_status = f.reason.to_string();
                        }
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    exit_status = format!("connection lost: {e}");
                    break;
                }
                None => break,
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // Without a terminal, end of input ends the shell.
                    if raw.is_none() {
                        let _ = tx.send(Message::Text("exit\n".into())).await;
                    }
                }
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
            },
            _ = async { match winch.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                let (cols, rows) = window_size();
                let _ = tx.send(resize_message(cols, rows)).await;
            }
        }
    }
    drop(raw);
    let code = exit_status
        .strip_prefix("exit status ")
        .and_then(|c| c.trim().parse::<u8>().ok());
    match code {
        Some(c) => Ok(ExitCode::from(c)),
        None if exit_status.is_empty() => Ok(ExitCode::SUCCESS),
        None => {
            eprintln!("\r\ncapsule: {exit_status}");
            Ok(ExitCode::from(1))
        }
    }
}

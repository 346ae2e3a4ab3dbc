//! The WebSocket terminal at `/terminal/{id}`, as the seed's JavaScript
//! example uses it.

mod common;

use std::time::Duration;

use common::Server;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads frames until the collected text contains `needle`.
async fn read_until(ws: &mut Ws, seen: &mut String, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while !seen.contains(needle) {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => seen.push_str(&t),
                Some(Ok(Message::Close(f))) => panic!("closed early ({f:?}) after: {seen}"),
                Some(Ok(_)) => {}
                other => panic!("stream ended ({other:?}) after: {seen}"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "never saw {needle:?} in: {seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_example_python_repl_in_the_terminal() {
    let server = Server::start();
    let id = server.create("python");
    let url = format!("ws://127.0.0.1:{}/terminal/{id}", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut seen = String::new();
    read_until(&mut ws, &mut seen, "$ ").await;
    // ws.send('python3\n'), as in the seed.
    ws.send(Message::Text("python3\n".into())).await.unwrap();
    read_until(&mut ws, &mut seen, ">>> ").await;
    ws.send(Message::Text("print(6 * 7)\n".into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut seen, "42").await;
    ws.send(Message::Text("exit()\n".into())).await.unwrap();
    ws.send(Message::Text("whoami; exit 3\n".into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut seen, "user").await;
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket closes when the shell exits");
    let frame = close.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1000);
    assert_eq!(frame.reason.as_str(), "exit status 3");
    server.shutdown_and_check_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_size_and_resize_while_connected() {
    let server = Server::start();
    let id = server.create("base");
    let url = format!(
        "ws://127.0.0.1:{}/terminal/{id}?cols=100&rows=30",
        server.port
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut seen = String::new();
    ws.send(Message::Text("stty size\n".into())).await.unwrap();
    read_until(&mut ws, &mut seen, "30 100").await;
    let resize = br#"{"type":"resize","cols":132,"rows":43}"#.to_vec();
    ws.send(Message::Binary(resize.into())).await.unwrap();
    ws.send(Message::Text("stty size\n".into())).await.unwrap();
    read_until(&mut ws, &mut seen, "43 132").await;
    // UTF-8 output survives chunking.
    ws.send(Message::Text("printf '\\342\\230\\203 snow\\n'\n".into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut seen, "☃ snow").await;
    // Closing the socket ends the shell and what it started.
    ws.send(Message::Text("sleep 600 &\n".into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.close(None).await.unwrap();
    // The server answers the close frame (a clean close, not a dropped connection).
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return Some(f),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the server answers within 10 s");
    assert!(answer.is_some(), "no close frame came back");
    let gone = common::eventually(Duration::from_secs(10), || {
        server.exec(&id, serde_json::json!("pgrep -c sleep || true"))["stdout"] == "0\n"
    });
    assert!(gone, "the shell's children outlived the terminal");
    server.shutdown_and_check_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_terminal_closes_with_the_reason_when_its_sandbox_goes() {
    let server = Server::start();
    let id = server.create("base");
    let url = format!("ws://127.0.0.1:{}/terminal/{id}", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut seen = String::new();
    ws.send(Message::Text("echo ready\n".into())).await.unwrap();
    read_until(&mut ws, &mut seen, "ready").await;
    server.ok("sandbox.v1.delete", serde_json::json!({"id": id}));
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the socket closes when the sandbox is deleted")
    .expect("a close frame");
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    assert!(close.reason.as_str().contains(&id), "{close:?}");
    server.shutdown_and_check_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_terminal_requests_are_plain_http_errors() {
    let server = Server::start();
    for (path, status, kind) in [
        ("/terminal/zzzzzzzz", 404, "sandbox_not_found"),
        ("/terminal/..%2F..", 400, "invalid_params"),
    ] {
        let url = format!("ws://127.0.0.1:{}{path}", server.port);
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{path}");
                let body: serde_json::Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["error"]["data"]["kind"], kind, "{path}: {body}");
            }
            other => panic!("{path}: expected an HTTP error, got {other:?}"),
        }
    }
    let id = server.create("base");
    let url = format!("ws://127.0.0.1:{}/terminal/{id}?cols=0", server.port);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400)
        }
        other => panic!("expected 400, got {other:?}"),
    }
    server.shutdown_and_check_clean();
}

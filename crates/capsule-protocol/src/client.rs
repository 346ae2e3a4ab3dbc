//! The client the server uses to talk to an agent over a unix socket.

use std::convert::Infallible;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::connect::{
    CONTENT_TYPE_STREAM, CONTENT_TYPE_UNARY, Code, ConnectError, EndStream, EnvelopeDecoder,
    HEADER_PROTOCOL_VERSION, HEADER_TIMEOUT_MS, encode_message,
};
use crate::filesystem::WrittenFile;

/// A request or response body of any shape.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Wraps bytes as a [`Body`].
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// What went wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached or the connection broke.
    #[error("agent unreachable at {socket}: {message}")]
    Transport { socket: String, message: String },
    /// The agent answered with a Connect error.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The agent's answer did not follow the protocol.
    #[error("malformed answer from the agent: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn code(&self) -> Code {
        match self {
            ClientError::Transport { .. } => Code::Unavailable,
            ClientError::Connect(e) => e.code,
            ClientError::Protocol(_) => Code::Internal,
        }
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The sandbox user the call acts as (`user` or `root`); the agent's
    /// default when unset.
    pub user: Option<String>,
    /// Sent as `Connect-Timeout-Ms`: the agent ends the call, and kills a
    /// process it started, when it passes.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: Some(user.into()),
            timeout: None,
        }
    }
}

/// The `Authorization` header that selects the sandbox user, as envd expects it.
pub fn user_header(user: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value")
}

#[derive(Clone, Debug)]
struct UnixConnector {
    path: Arc<PathBuf>,
}

/// A unix stream that hyper's pooled client can use.
struct UnixIo(TokioIo<UnixStream>);

impl Connection for UnixIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UnixIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UnixIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower::Service<Uri> for UnixConnector {
    type Response = UnixIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UnixIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move {
            let stream = UnixStream::connect(path.as_path()).await?;
            Ok(UnixIo(TokioIo::new(stream)))
        })
    }
}

/// A pooled HTTP/1.1 client for one agent.
#[derive(Clone)]
pub struct AgentClient {
    http: Client<UnixConnector, Body>,
    socket: Arc<PathBuf>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("socket", &self.socket)
            .finish()
    }
}

impl AgentClient {
    /// A client for the agent listening on the unix socket at `socket`.
    pub fn unix(socket: impl AsRef<Path>) -> Self {
        let socket = Arc::new(socket.as_ref().to_path_buf());
        let connector = UnixConnector {
            path: socket.clone(),
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .build(connector);
        Self { http, socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn transport_error(&self, err: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            socket: self.socket.display().to_string(),
            message: err.to_string(),
        }
    }

    /// Reads a whole response body.
    async fn body_bytes(&self, resp: http::Response<Incoming>) -> Result<Bytes, ClientError> {
        Ok(resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport_error(e))?
            .to_bytes())
    }

    /// Reads a whole JSON answer, or the error an unsuccessful one carries.
    async fn json_answer<T: DeserializeOwned>(
        &self,
        what: &str,
        resp: http::Response<Incoming>,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        let body = self.body_bytes(resp).await?;
        if status != StatusCode::OK {
            return Err(ClientError::Connect(error_from_body(status, &body)));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("{what}: {e}")))
    }

    /// The error an unsuccessful answer carries.
    async fn error_answer(&self, resp: http::Response<Incoming>) -> ClientError {
        let status = resp.status();
        match self.body_bytes(resp).await {
            Ok(body) => ClientError::Connect(error_from_body(status, &body)),
            Err(e) => e,
        }
    }

    /// Sends any request to the agent; the URI's path and query are used.
    pub async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        *req.uri_mut() = format!("http://agent{path_and_query}")
            .parse()
            .map_err(|e| {
                ClientError::Protocol(format!("bad request path {path_and_query:?}: {e}"))
            })?;
        self.http.request(req).await.map_err(|e| {
            // hyper's error Display is terse; include the source chain.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            self.transport_error(message)
        })
    }

    fn request(
        &self,
        path: &str,
        content_type: &'static str,
        opts: &CallOptions,
        body: Body,
    ) -> Request<Body> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .header(HEADER_PROTOCOL_VERSION, "1");
        if let Some(user) = &opts.user {
            builder = builder.header(header::AUTHORIZATION, user_header(user));
        }
        if let Some(timeout) = opts.timeout {
            builder = builder.header(HEADER_TIMEOUT_MS, timeout.as_millis().max(1).to_string());
        }
        builder.body(body).expect("static request parts are valid")
    }

    /// A unary call.
    pub async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        message: &Req,
        opts: &CallOptions,
    ) -> Result<Resp, ClientError> {
        let json = serde_json::to_vec(message).expect("protocol messages always serialize");
        let req = self.request(path, CONTENT_TYPE_UNARY, opts, full_body(json));
        let resp = self.send(req).await?;
        self.json_answer(path, resp).await
    }

    /// A server-streaming call: one request message, a stream of answers.
    pub async fn server_stream<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        message: &Req,
        opts: &CallOptions,
    ) -> Result<MessageStream<Resp>, ClientError> {
        let req = self.request(
            path,
            CONTENT_TYPE_STREAM,
            opts,
            full_body(encode_message(message)),
        );
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(self.error_answer(resp).await);
        }
        Ok(MessageStream {
            body: resp.into_body(),
            decoder: EnvelopeDecoder::default(),
            finished: false,
            socket: self.socket.clone(),
            _marker: PhantomData,
        })
    }

    /// `GET /health`: Ok when the agent answers.
    pub async fn health(&self) -> Result<(), ClientError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(crate::paths::HEALTH)
            .body(full_body(Bytes::new()))
            .expect("static request parts are valid");
        let resp = self.send(req).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ClientError::Protocol(format!(
                "health answered {}",
                resp.status()
            )))
        }
    }

    /// `POST /interpreter/execute`: the response streams the run as JSON
    /// lines (see the agent's interpreter).
    pub async fn execute_code(
        &self,
        request: &impl Serialize,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ClientError::Protocol(format!("encoding the request: {e}")))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/interpreter/execute")
            .header(header::CONTENT_TYPE, "application/json")
            .body(full_body(body))
            .expect("static request parts are valid");
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(self.error_answer(resp).await);
        }
        Ok(resp)
    }

    /// `POST /init`: adds variables to the environment every later process
    /// starts with.
    pub async fn init_env(
        &self,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({ "envVars": env }))
            .map_err(|e| ClientError::Protocol(format!("encoding the request: {e}")))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/init")
            .header(header::CONTENT_TYPE, "application/json")
            .body(full_body(body))
            .expect("static request parts are valid");
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Err(self.error_answer(resp).await);
        }
        self.body_bytes(resp).await.map(|_| ())
    }

    /// `GET /files`: the whole file's bytes.
    pub async fn read_file(&self, path: &str, user: Option<&str>) -> Result<Bytes, ClientError> {
        let resp = self.read_file_stream(path, user).await?;
        self.body_bytes(resp).await
    }

    /// `GET /files`: the response, so the caller can stream the body.
    pub async fn read_file_stream(
        &self,
        path: &str,
        user: Option<&str>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let uri = files_uri(path, user);
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(full_body(Bytes::new()))
            .expect("static request parts are valid");
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(self.error_answer(resp).await);
        }
        Ok(resp)
    }

    /// `POST /files` with a raw octet-stream body.
    pub async fn write_file(
        &self,
        path: &str,
        user: Option<&str>,
        mode: Option<u32>,
        body: Body,
    ) -> Result<Vec<WrittenFile>, ClientError> {
        let mut uri = files_uri(path, user);
        if let Some(mode) = mode {
            uri.push_str(&format!("&mode={mode:o}"));
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .expect("static request parts are valid");
        let resp = self.send(req).await?;
        self.json_answer("/files", resp).await
    }
}

fn files_uri(path: &str, user: Option<&str>) -> String {
    let mut uri = format!("{}?path={}", crate::paths::FILES, percent_encode(path));
    if let Some(user) = user {
        uri.push_str("&username=");
        uri.push_str(&percent_encode(user));
    }
    uri
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a Connect error from an error response body.
pub fn error_from_body(status: StatusCode, body: &[u8]) -> ConnectError {
    /// envd's plain endpoints (`/files`) answer `{"code": <status>, "message": ...}`.
    #[derive(serde::Deserialize)]
    struct PlainError {
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<ConnectError>(body) {
        return e;
    }
    if let Ok(e) = serde_json::from_slice::<PlainError>(body) {
        return ConnectError::new(Code::from_http_status(status.as_u16()), e.message);
    }
    serde_json::from_slice::<ConnectError>(body).unwrap_or_else(|_| {
        ConnectError::new(
            Code::from_http_status(status.as_u16()),
            format!(
                "agent answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(512)])
            ),
        )
    })
}

/// The answers of a server-streaming call.
pub struct MessageStream<T> {
    body: Incoming,
    decoder: EnvelopeDecoder,
    finished: bool,
    socket: Arc<PathBuf>,
    _marker: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> MessageStream<T> {
    /// The next message; `None` after a clean end of stream. A stream that
    /// ends with an error yields that error once, then `None`.
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        if self.finished {
            return None;
        }
        loop {
            match self.decoder.next_envelope() {
                Err(e) => {
                    self.finished = true;
                    return Some(Err(ClientError::Protocol(e.to_string())));
                }
                Ok(Some(env)) if env.is_end_stream() => {
                    self.finished = true;
                    let end: EndStream = match serde_json::from_slice(&env.data) {
                        Ok(end) => end,
                        Err(e) => {
                            return Some(Err(ClientError::Protocol(format!("end of stream: {e}"))));
                        }
                    };
                    return end.error.map(|e| Err(ClientError::Connect(e)));
                }
                Ok(Some(env)) => {
                    return Some(
                        serde_json::from_slice(&env.data)
                            .map_err(|e| ClientError::Protocol(format!("stream message: {e}"))),
                    );
                }
                Ok(None) => {}
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.decoder.push(data);
                    }
                }
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(ClientError::Transport {
                        socket: self.socket.display().to_string(),
                        message: format!("stream broke: {e}"),
                    }));
                }
                None => {
                    self.finished = true;
                    return Some(Err(ClientError::Protocol(
                        "stream ended without an end-of-stream message".to_owned(),
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_header_is_basic_auth_with_empty_password() {
        assert_eq!(user_header("user").to_str().unwrap(), "Basic dXNlcjo=");
    }

    #[test]
    fn percent_encoding_keeps_slashes() {
        assert_eq!(
            percent_encode("/workspace/a b&c.txt"),
            "/workspace/a%20b%26c.txt"
        );
        assert_eq!(percent_encode("/é"), "/%C3%A9");
    }

    #[test]
    fn error_bodies() {
        let e = error_from_body(
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"no file"}"#,
        );
        assert_eq!(e.code, Code::NotFound);
        let e = error_from_body(
            StatusCode::NOT_FOUND,
            br#"{"code":404,"message":"read /x: no such file"}"#,
        );
        assert_eq!(e.code, Code::NotFound);
        assert_eq!(e.message, "read /x: no such file");
        let e = error_from_body(StatusCode::BAD_GATEWAY, b"oops");
        assert_eq!(e.code, Code::Unavailable);
        assert!(e.message.contains("oops"));
    }
}

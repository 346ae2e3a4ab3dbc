//! HTTP and Connect plumbing on the agent side: bodies, decoding requests,
//! building responses.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use capsule_protocol::client::{Body, full_body};
use capsule_protocol::connect::{
    CONTENT_TYPE_STREAM, CONTENT_TYPE_UNARY, EnvelopeDecoder, HEADER_TIMEOUT_MS, MAX_MESSAGE_BYTES,
    encode_end_stream, encode_message,
};
use capsule_protocol::{Code, ConnectError};
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A response body fed through a channel.
pub fn channel_body(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, io::Error>(Frame::data(chunk)), rx))
    });
    (tx, BodyExt::boxed_unsync(StreamBody::new(stream)))
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ConnectError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ConnectError::new(
                    Code::ResourceExhausted,
                    format!("request body exceeds {limit} bytes"),
                ))
            } else {
                Err(ConnectError::new(
                    Code::Canceled,
                    format!("reading the request failed: {e}"),
                ))
            }
        }
    }
}

/// Decodes a unary request body.
pub async fn unary_request<T: DeserializeOwned>(body: Incoming) -> Result<T, ConnectError> {
    let bytes = read_body(body, MAX_MESSAGE_BYTES).await?;
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ConnectError::invalid_argument(format!("invalid request message: {e}")))
}

/// Decodes the single request message of a server-streaming call.
pub async fn stream_request<T: DeserializeOwned>(body: Incoming) -> Result<T, ConnectError> {
    let bytes = read_body(body, MAX_MESSAGE_BYTES + 5).await?;
    let mut dec = EnvelopeDecoder::default();
    dec.push(&bytes);
    let env = dec
        .next_envelope()
        .map_err(|e| ConnectError::invalid_argument(e.to_string()))?
        .ok_or_else(|| ConnectError::invalid_argument("the request holds no message envelope"))?;
    serde_json::from_slice(&env.data)
        .map_err(|e| ConnectError::invalid_argument(format!("invalid request message: {e}")))
}

/// The deadline a client set with `Connect-Timeout-Ms`.
pub fn deadline(headers: &HeaderMap) -> Result<Option<Instant>, ConnectError> {
    let Some(value) = headers.get(HEADER_TIMEOUT_MS) else {
        return Ok(None);
    };
    let ms: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            ConnectError::invalid_argument(format!("invalid {HEADER_TIMEOUT_MS} header {value:?}"))
        })?;
    Ok(Some(Instant::now() + Duration::from_millis(ms)))
}

pub fn unary_ok<T: Serialize>(message: &T) -> Response<Body> {
    let json = serde_json::to_vec(message).expect("protocol messages always serialize");
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE_UNARY)
        .body(full_body(json))
        .expect("static response parts are valid")
}

pub fn unary_error(err: &ConnectError) -> Response<Body> {
    Response::builder()
        .status(
            StatusCode::from_u16(err.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .header(header::CONTENT_TYPE, CONTENT_TYPE_UNARY)
        .body(full_body(err.to_json()))
        .expect("static response parts are valid")
}

pub fn stream_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE_STREAM)
        .body(body)
        .expect("static response parts are valid")
}

/// A streaming call that failed before its first message: a 200 response
/// holding only the end-of-stream error, as Connect prescribes.
pub fn stream_error(err: &ConnectError) -> Response<Body> {
    stream_response(full_body(encode_end_stream(Some(err))))
}

/// Sends one message envelope; false once the client has gone.
pub async fn send_message<T: Serialize>(tx: &mpsc::Sender<Bytes>, message: &T) -> bool {
    tx.send(encode_message(message)).await.is_ok()
}

pub async fn send_end(tx: &mpsc::Sender<Bytes>, error: Option<&ConnectError>) {
    let _ = tx.send(encode_end_stream(error)).await;
}

/// A plain JSON error for the non-Connect endpoints (`/files`), in envd's
/// `{"code": <status>, "message": ...}` shape.
pub fn plain_error(err: &ConnectError) -> Response<Body> {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let json = serde_json::json!({ "code": status.as_u16(), "message": err.message });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full_body(json.to_string()))
        .expect("static response parts are valid")
}

pub fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(full_body(Bytes::new()))
        .expect("static response parts are valid")
}

pub type HandlerResult = Result<Response<Body>, Infallible>;

//! Connect protocol framing (JSON codec): error codes, envelopes and the
//! end-of-stream message.
//!
//! Unary calls are a plain `application/json` body each way. Streaming calls
//! use `application/connect+json`: every message is an envelope of one flag
//! byte, a four-byte big-endian length and the JSON text; a server stream
//! ends with an envelope flagged [`FLAG_END_STREAM`] holding `{}` or
//! `{"error": {...}}`.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE_UNARY: &str = "application/json";
pub const CONTENT_TYPE_STREAM: &str = "application/connect+json";
pub const HEADER_PROTOCOL_VERSION: &str = "connect-protocol-version";
pub const HEADER_TIMEOUT_MS: &str = "connect-timeout-ms";

/// Envelope flag: the payload is compressed.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: this is the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;

/// The largest single message either side accepts (16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Connect error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The HTTP status a unary error is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }

    /// The code a client infers from an HTTP status when the body has none.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::AlreadyExists,
            413 => Code::ResourceExhausted,
            429 => Code::ResourceExhausted,
            499 => Code::Canceled,
            501 => Code::Unimplemented,
            502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Connect error as it travels: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    pub code: Code,
    #[serde(default)]
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// The JSON body of a unary error response.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"code\":\"internal\"}".to_vec())
    }
}

/// The message carried by the end-of-stream envelope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndStream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ConnectError>,
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub data: Bytes,
}

impl Envelope {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }
}

/// Frames `data` as an envelope with `flags`.
pub fn encode_envelope(flags: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + data.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(data.len()).expect("messages are capped well below 4 GiB"));
    out.put_slice(data);
    out.freeze()
}

/// Frames a message as a data envelope.
pub fn encode_message<T: Serialize>(message: &T) -> Bytes {
    let json = serde_json::to_vec(message).expect("protocol messages always serialize");
    encode_envelope(0, &json)
}

/// Frames the end-of-stream envelope, with an error when the call failed.
pub fn encode_end_stream(error: Option<&ConnectError>) -> Bytes {
    let end = EndStream {
        error: error.cloned(),
    };
    let json = serde_json::to_vec(&end).expect("end-of-stream always serializes");
    encode_envelope(FLAG_END_STREAM, &json)
}

/// Why a byte stream could not be split into envelopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("envelope of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("compressed envelopes are not supported (flags {flags:#04x})")]
    Compressed { flags: u8 },
    #[error("stream ended inside an envelope ({buffered} bytes left over)")]
    Truncated { buffered: usize },
}

/// Splits a byte stream into envelopes as chunks arrive.
#[derive(Debug)]
pub struct EnvelopeDecoder {
    buf: BytesMut,
    max: usize,
}

impl Default for EnvelopeDecoder {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_BYTES)
    }
}

impl EnvelopeDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete envelope, if the buffered bytes hold one.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(FrameError::Compressed { flags });
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let data = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, data }))
    }

    /// Call when the byte stream has ended: fails if a partial envelope remains.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_across_arbitrary_chunking() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode_message(&serde_json::json!({"a": 1})));
        wire.extend_from_slice(&encode_message(&serde_json::json!({"b": "two"})));
        wire.extend_from_slice(&encode_end_stream(None));
        for chunk in 1..wire.len() {
            let mut dec = EnvelopeDecoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                dec.push(piece);
                while let Some(env) = dec.next_envelope().unwrap() {
                    got.push(env);
                }
            }
            dec.finish().unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(&got[0].data[..], br#"{"a":1}"#);
            assert!(got[2].is_end_stream());
            assert_eq!(&got[2].data[..], b"{}");
        }
    }

    #[test]
    fn rejects_oversized_compressed_and_truncated() {
        let mut dec = EnvelopeDecoder::new(10);
        dec.push(&[0, 0, 0, 0, 11]);
        assert!(matches!(
            dec.next_envelope(),
            Err(FrameError::TooLarge { len: 11, .. })
        ));
        let mut dec = EnvelopeDecoder::default();
        dec.push(&[1, 0, 0, 0, 1, b'x']);
        assert!(matches!(
            dec.next_envelope(),
            Err(FrameError::Compressed { .. })
        ));
        let mut dec = EnvelopeDecoder::default();
        dec.push(&[0, 0, 0, 0, 4, b'x']);
        assert_eq!(dec.next_envelope().unwrap(), None);
        assert!(dec.finish().is_err());
    }

    #[test]
    fn end_stream_carries_errors() {
        let err = ConnectError::not_found("no such process 7");
        let env = encode_end_stream(Some(&err));
        let mut dec = EnvelopeDecoder::default();
        dec.push(&env);
        let env = dec.next_envelope().unwrap().unwrap();
        let end: EndStream = serde_json::from_slice(&env.data).unwrap();
        assert_eq!(end.error, Some(err));
    }

    #[test]
    fn code_statuses() {
        assert_eq!(Code::NotFound.http_status(), 404);
        assert_eq!(Code::DeadlineExceeded.http_status(), 504);
        assert_eq!(
            serde_json::to_string(&Code::InvalidArgument).unwrap(),
            "\"invalid_argument\""
        );
    }
}

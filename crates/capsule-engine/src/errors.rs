//! The one place agent, backend and store failures become API errors.

use capsule_api::{ApiError, ErrorKind};
use capsule_protocol::Code;
use capsule_protocol::client::ClientError;
use capsule_runtime::RuntimeError;

use crate::store::StoreError;

pub fn from_store(e: StoreError) -> ApiError {
    tracing::error!("store: {e}");
    ApiError::internal(format!("the state database failed: {e}"))
}

pub fn from_runtime(e: RuntimeError) -> ApiError {
    let message = capsule_sys_chain(&e);
    match e {
        RuntimeError::Unsupported { .. } | RuntimeError::Refused(_) => {
            ApiError::new(ErrorKind::Unsupported, message)
        }
        RuntimeError::Unavailable(_) | RuntimeError::StartFailed { .. } => {
            ApiError::new(ErrorKind::Unavailable, message)
        }
        RuntimeError::Sys { .. } | RuntimeError::Io { .. } => ApiError::internal(message),
    }
}

fn capsule_sys_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Maps an agent error during a file operation on `path`.
pub fn from_agent_file(e: ClientError, path: &str) -> ApiError {
    match &e {
        ClientError::Connect(c) => {
            let msg = c.message.clone();
            let kind = match c.code {
                Code::NotFound => ErrorKind::FileNotFound,
                Code::PermissionDenied => ErrorKind::PermissionDenied,
                Code::AlreadyExists => ErrorKind::AlreadyExists,
                Code::ResourceExhausted => ErrorKind::QuotaExceeded,
                // The agent words these precisely; the kind follows its words.
                Code::InvalidArgument if msg.ends_with("is a directory") => ErrorKind::IsADirectory,
                Code::InvalidArgument if msg.contains("not a directory") => {
                    ErrorKind::NotADirectory
                }
                Code::InvalidArgument => ErrorKind::InvalidParams,
                Code::FailedPrecondition => ErrorKind::InvalidParams,
                _ => return from_agent(e),
            };
            ApiError::new(kind, msg).with_detail("path", path)
        }
        _ => from_agent(e),
    }
}

/// Maps any other agent error.
pub fn from_agent(e: ClientError) -> ApiError {
    match e {
        ClientError::Transport { message, .. } => ApiError::new(
            ErrorKind::Unavailable,
            format!("the sandbox's agent is not reachable: {message}"),
        ),
        ClientError::Connect(c) => {
            let kind = match c.code {
                Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                    ErrorKind::InvalidParams
                }
                Code::NotFound => ErrorKind::InvalidParams,
                Code::PermissionDenied | Code::Unauthenticated => ErrorKind::PermissionDenied,
                Code::AlreadyExists => ErrorKind::AlreadyExists,
                Code::ResourceExhausted => ErrorKind::QuotaExceeded,
                Code::DeadlineExceeded => ErrorKind::Timeout,
                Code::Unimplemented => ErrorKind::Unsupported,
                Code::Unavailable | Code::Canceled | Code::Aborted => ErrorKind::Unavailable,
                Code::Unknown | Code::Internal | Code::DataLoss => ErrorKind::Internal,
            };
            ApiError::new(kind, c.message)
        }
        ClientError::Protocol(m) => {
            ApiError::internal(format!("the sandbox's agent answered badly: {m}"))
        }
    }
}

//! Error kinds every front door maps onto, with their JSON-RPC codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error kind (`data.kind` in JSON-RPC errors).
///
/// The set only grows; clients must treat unknown kinds as generic failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    Internal,
    SandboxNotFound,
    SandboxExpired,
    SandboxNotRunning,
    TemplateNotFound,
    TemplateUnavailable,
    FileNotFound,
    PathOutsideSandbox,
    NotADirectory,
    IsADirectory,
    AlreadyExists,
    PermissionDenied,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    Timeout,
    Unsupported,
    Unavailable,
}

impl ErrorKind {
    /// Every kind, for documentation and exhaustive tests.
    pub const ALL: [ErrorKind; 22] = [
        ErrorKind::ParseError,
        ErrorKind::InvalidRequest,
        ErrorKind::MethodNotFound,
        ErrorKind::InvalidParams,
        ErrorKind::Internal,
        ErrorKind::SandboxNotFound,
        ErrorKind::SandboxExpired,
        ErrorKind::SandboxNotRunning,
        ErrorKind::TemplateNotFound,
        ErrorKind::TemplateUnavailable,
        ErrorKind::FileNotFound,
        ErrorKind::PathOutsideSandbox,
        ErrorKind::NotADirectory,
        ErrorKind::IsADirectory,
        ErrorKind::AlreadyExists,
        ErrorKind::PermissionDenied,
        ErrorKind::PayloadTooLarge,
        ErrorKind::QuotaExceeded,
        ErrorKind::Unauthorized,
        ErrorKind::Timeout,
        ErrorKind::Unsupported,
        ErrorKind::Unavailable,
    ];

    /// The JSON-RPC error code: the standard codes for protocol faults,
    /// -32000..-32099 for application errors.
    pub fn code(self) -> i64 {
        match self {
            ErrorKind::ParseError => -32700,
            ErrorKind::InvalidRequest => -32600,
            ErrorKind::MethodNotFound => -32601,
            ErrorKind::InvalidParams => -32602,
            ErrorKind::Internal => -32603,
            ErrorKind::SandboxNotFound => -32001,
            ErrorKind::SandboxExpired => -32002,
            ErrorKind::SandboxNotRunning => -32003,
            ErrorKind::TemplateNotFound => -32004,
            ErrorKind::TemplateUnavailable => -32005,
            ErrorKind::FileNotFound => -32006,
            ErrorKind::PathOutsideSandbox => -32007,
            ErrorKind::NotADirectory => -32008,
            ErrorKind::IsADirectory => -32009,
            ErrorKind::AlreadyExists => -32010,
            ErrorKind::PermissionDenied => -32011,
            ErrorKind::PayloadTooLarge => -32012,
            ErrorKind::QuotaExceeded => -32013,
            ErrorKind::Unauthorized => -32014,
            ErrorKind::Timeout => -32015,
            ErrorKind::Unsupported => -32016,
            ErrorKind::Unavailable => -32017,
        }
    }

    /// The HTTP status a REST-style front door answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::ParseError
            | ErrorKind::InvalidRequest
            | ErrorKind::InvalidParams
            | ErrorKind::PathOutsideSandbox
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::MethodNotFound
            | ErrorKind::SandboxNotFound
            | ErrorKind::TemplateNotFound
            | ErrorKind::FileNotFound => 404,
            ErrorKind::AlreadyExists | ErrorKind::SandboxNotRunning => 409,
            ErrorKind::SandboxExpired => 410,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::QuotaExceeded => 429,
            ErrorKind::Unsupported => 501,
            ErrorKind::TemplateUnavailable | ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ParseError => "parse_error",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MethodNotFound => "method_not_found",
            ErrorKind::InvalidParams => "invalid_params",
            ErrorKind::Internal => "internal",
            ErrorKind::SandboxNotFound => "sandbox_not_found",
            ErrorKind::SandboxExpired => "sandbox_expired",
            ErrorKind::SandboxNotRunning => "sandbox_not_running",
            ErrorKind::TemplateNotFound => "template_not_found",
            ErrorKind::TemplateUnavailable => "template_unavailable",
            ErrorKind::FileNotFound => "file_not_found",
            ErrorKind::PathOutsideSandbox => "path_outside_sandbox",
            ErrorKind::NotADirectory => "not_a_directory",
            ErrorKind::IsADirectory => "is_a_directory",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the API reports it: a kind, a sentence naming the offending
/// value, and optional structured details merged into `data`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub details: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.into());
        self
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParams, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn sandbox_not_found(id: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::SandboxNotFound,
            format!("sandbox {id} not found"),
        )
        .with_detail("id", id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.code()), "duplicate code for {kind}");
            let c = kind.code();
            assert!(
                (-32099..=-32000).contains(&c)
                    || [-32700, -32600, -32601, -32602, -32603].contains(&c),
                "{kind} has code {c}"
            );
            assert_eq!(ErrorKind::from_code(c), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::String(kind.as_str().to_owned()));
        }
    }
}

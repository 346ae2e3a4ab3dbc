//! JSON-RPC 2.0 envelopes: parsing requests strictly, building responses.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorKind};

/// The `data` member of a Capsule JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    pub kind: String,
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// The `error` member of a JSON-RPC response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ErrorData>,
}

impl From<&ApiError> for ErrorObject {
    fn from(err: &ApiError) -> Self {
        ErrorObject {
            code: err.kind.code(),
            message: err.message.clone(),
            data: Some(ErrorData {
                kind: err.kind.as_str().to_owned(),
                details: err.details.as_deref().cloned().unwrap_or_default(),
            }),
        }
    }
}

impl ErrorObject {
    /// Converts back into an [`ApiError`], as clients do.
    pub fn into_api_error(self) -> ApiError {
        let kind = self
            .data
            .as_ref()
            .and_then(|d| serde_json::from_value(Value::String(d.kind.clone())).ok())
            .or_else(|| ErrorKind::from_code(self.code))
            .unwrap_or(ErrorKind::Internal);
        let details = self
            .data
            .map(|d| d.details)
            .filter(|d| !d.is_empty())
            .map(Box::new);
        ApiError {
            kind,
            message: self.message,
            details,
        }
    }
}

/// One JSON-RPC response object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

impl Response {
    pub fn success(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: "2.0".to_owned(),
            id,
            result: Some(result),
            error: None,
        }
    }

    pub fn failure(id: Value, err: &ApiError) -> Self {
        Response {
            jsonrpc: "2.0".to_owned(),
            id,
            result: None,
            error: Some(ErrorObject::from(err)),
        }
    }
}

/// A validated call: `id` is `None` for a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: Option<Value>,
    pub method: String,
    /// `params` as sent; an absent member is an empty object.
    pub params: Value,
}

/// The body of a POST to `/rpc`, parsed but not yet validated per call.
#[derive(Debug)]
pub enum Payload {
    Single(Value),
    Batch(Vec<Value>),
}

/// Parses the raw HTTP body. A body that is not JSON is a parse error.
pub fn parse_payload(body: &[u8]) -> Result<Payload, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorKind::ParseError,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Array(items) if items.is_empty() => Err(ApiError::new(
            ErrorKind::InvalidRequest,
            "a batch must contain at least one request",
        )),
        Value::Array(items) => Ok(Payload::Batch(items)),
        other => Ok(Payload::Single(other)),
    }
}

/// Validates one request object. On failure returns the id to answer with
/// (`null` when it could not be read) and the error.
pub fn parse_call(value: Value) -> Result<Call, (Value, ApiError)> {
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("a request must be a JSON object, got {}", type_name(&value)),
            ),
        ));
    };
    let id = match obj.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => Some(id),
        Some(other) => {
            return Err((
                Value::Null,
                ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "`id` must be a string, a number or null, got {}",
                        type_name(&other)
                    ),
                ),
            ));
        }
    };
    let reply_id = id.clone().unwrap_or(Value::Null);
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        Some(other) => {
            return Err((
                reply_id,
                ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!("`jsonrpc` must be \"2.0\", got {other}"),
                ),
            ));
        }
        None => {
            return Err((
                reply_id,
                ApiError::new(ErrorKind::InvalidRequest, "missing `jsonrpc`: \"2.0\""),
            ));
        }
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(other) => {
            return Err((
                reply_id,
                ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!("`method` must be a string, got {}", type_name(&other)),
                ),
            ));
        }
        None => {
            return Err((
                reply_id,
                ApiError::new(ErrorKind::InvalidRequest, "missing `method`"),
            ));
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(other) => {
            return Err((
                reply_id,
                ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "`params` must be an object or an array, got {}",
                        type_name(&other)
                    ),
                ),
            ));
        }
    };
    Ok(Call { id, method, params })
}

/// A short name for a JSON value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds a request body, as clients do.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    serde_json::json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_a_well_formed_call() {
        let call = parse_call(
            json!({"jsonrpc":"2.0","id":7,"method":"sandbox.v1.get","params":{"id":"abc12345"}}),
        )
        .unwrap();
        assert_eq!(call.id, Some(json!(7)));
        assert_eq!(call.method, "sandbox.v1.get");
        assert_eq!(call.params, json!({"id":"abc12345"}));
    }

    #[test]
    fn notification_has_no_id_and_missing_params_are_empty() {
        let call = parse_call(json!({"jsonrpc":"2.0","method":"x"})).unwrap();
        assert_eq!(call.id, None);
        assert_eq!(call.params, json!({}));
    }

    #[test]
    fn rejects_bad_envelopes_with_the_reason() {
        let cases = [
            (json!(5), "must be a JSON object"),
            (json!({"id":1,"method":"m"}), "missing `jsonrpc`"),
            (
                json!({"jsonrpc":"1.0","id":1,"method":"m"}),
                "must be \"2.0\"",
            ),
            (json!({"jsonrpc":"2.0","id":1}), "missing `method`"),
            (
                json!({"jsonrpc":"2.0","id":1,"method":5}),
                "`method` must be a string",
            ),
            (
                json!({"jsonrpc":"2.0","id":{},"method":"m"}),
                "`id` must be",
            ),
            (
                json!({"jsonrpc":"2.0","id":1,"method":"m","params":"x"}),
                "`params` must be",
            ),
        ];
        for (input, needle) in cases {
            let (_, err) = parse_call(input.clone()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest, "{input}");
            assert!(err.message.contains(needle), "{input}: {}", err.message);
        }
    }

    #[test]
    fn payload_parse_errors() {
        assert_eq!(
            parse_payload(b"{not json").unwrap_err().kind,
            ErrorKind::ParseError
        );
        assert_eq!(
            parse_payload(b"[]").unwrap_err().kind,
            ErrorKind::InvalidRequest
        );
        assert!(matches!(parse_payload(b"[1,2]").unwrap(), Payload::Batch(v) if v.len() == 2));
    }

    #[test]
    fn error_object_round_trips() {
        let err = ApiError::sandbox_not_found("abc12345");
        let obj = ErrorObject::from(&err);
        assert_eq!(obj.code, -32001);
        let text = serde_json::to_value(&obj).unwrap();
        assert_eq!(text["data"]["kind"], "sandbox_not_found");
        assert_eq!(text["data"]["id"], "abc12345");
        let back: ErrorObject = serde_json::from_value(text).unwrap();
        assert_eq!(back.into_api_error(), err);
    }
}

//! The JSON-RPC door: envelopes (`capsule_api::rpc`), every method's
//! parameters (`sandbox::parse_params`) and sandbox ids.

use std::str::FromStr;

use capsule_api::rpc::{ErrorObject, Payload, Response, parse_call, parse_payload};
use capsule_api::sandbox::{
    CreateParams, ExecParams, IdParams, ListParams, PathParams, RunCodeParams, RunParams,
    SetTimeoutParams, WriteFileParams, decode_base64, encode_base64, parse_params,
};
use capsule_api::{ErrorKind, SandboxId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ensure, sig, text};
use crate::Target;

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1e999",
    b"-0.0",
    b"18446744073709551616",
    b"9007199254740993",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"\\\\\"",
    b"\"jsonrpc\":\"2.0\"",
    b"\"id\":",
    b"\"method\":",
    b"\"params\":",
    b"\"sandbox.v1.exec\"",
    b"\"sandbox.v1.writeFile\"",
    b"\"id\":\"abcd1234\"",
    b"\"path\":\"../../etc/passwd\"",
    b"\"cmd\":[\"sh\",\"-c\",\"id\"]",
    b"\"cmd\":\"\"",
    b"\"mode\":\"4777\"",
    b"\"mode\":4096",
    b"\"user\":\"root\"",
    b"\"content\":\"aGk=\"",
    b"\"content\":\"====\"",
    b"\"ttl_ms\":",
    b"\"cpu\":",
    b"\"env\":{\"A\":\"B\"}",
    b"\"metadata\":{\"k\":\"v\"}",
];

pub const ENVELOPE: Target = Target {
    name: "rpc_envelope",
    about: "JSON-RPC bodies: parse_payload and parse_call; error objects round-trip",
    seeds: envelope_seeds,
    dictionary: JSON_TOKENS,
    run: envelope,
};

fn envelope_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.get","params":{"id":"abcd1234"}}"#,
        r#"{"jsonrpc":"2.0","method":"sandbox.v1.setTimeout","params":{"id":"abcd1234","ttl_ms":1000}}"#,
        r#"[{"jsonrpc":"2.0","id":"a","method":"sandbox.v1.list"},{"jsonrpc":"2.0","id":null,"method":"x","params":[1]}]"#,
        r#"{"jsonrpc":"2.0","id":1.5e3,"method":"sandbox.v1.exec","params":{"id":"abcd1234","cmd":["ls","-la"]}}"#,
        r#"{"jsonrpc":"1.0","id":{},"method":5,"params":"x"}"#,
        r#"[]"#,
        r#"[[]]"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\u{0}\"}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn envelope(input: &[u8]) -> Result<u64, String> {
    match parse_payload(input) {
        Err(e) => {
            let json = serde_json::from_slice::<Value>(input);
            match e.kind {
                ErrorKind::ParseError => ensure(json.is_err(), || {
                    "parse_error for a body serde_json accepts".into()
                })?,
                ErrorKind::InvalidRequest => {
                    ensure(matches!(&json, Ok(Value::Array(a)) if a.is_empty()), || {
                        format!("invalid_request from parse_payload for {json:?}")
                    })?
                }
                other => return Err(format!("parse_payload failed with {other:?}")),
            }
            error_round_trips(&e)?;
            Ok(sig(("payload error", e.kind.as_str())))
        }
        Ok(Payload::Single(v)) => Ok(sig(("single", call(v)?))),
        Ok(Payload::Batch(items)) => {
            ensure(!items.is_empty(), || "an empty batch was accepted".into())?;
            let mut kinds = Vec::new();
            for item in items.into_iter().take(64) {
                kinds.push(call(item)?);
            }
            kinds.sort();
            kinds.dedup();
            Ok(sig(("batch", kinds)))
        }
    }
}

/// Checks one request object; returns a short outcome name.
fn call(v: Value) -> Result<String, String> {
    let original = v.clone();
    match parse_call(v) {
        Ok(c) => {
            let obj = original
                .as_object()
                .ok_or("parse_call accepted a non-object")?;
            ensure(obj.get("jsonrpc") == Some(&Value::from("2.0")), || {
                "parse_call accepted a request without jsonrpc 2.0".into()
            })?;
            ensure(
                obj.get("method") == Some(&Value::from(c.method.clone())),
                || "the parsed method differs from the request's".into(),
            )?;
            ensure(c.id.as_ref() == obj.get("id"), || {
                "the parsed id differs from the request's".into()
            })?;
            if let Some(id) = &c.id {
                ensure(
                    matches!(id, Value::Null | Value::Number(_) | Value::String(_)),
                    || format!("an id of the wrong type was accepted: {id}"),
                )?;
            }
            ensure(c.params.is_object() || c.params.is_array(), || {
                format!("params of the wrong type: {}", c.params)
            })?;
            // The answer to it serializes and a client reads it back with
            // the same id. (Floats may be rounded by serde_json's parser,
            // which is not exact without its `float_roundtrip` feature.)
            let id = c.id.clone().unwrap_or(Value::Null);
            let resp = Response::success(id.clone(), c.params.clone());
            let sent = serde_json::to_vec(&resp)
                .map_err(|e| format!("a response fails to serialize: {e}"))?;
            let back: Response = serde_json::from_slice(&sent)
                .map_err(|e| format!("a response does not read back: {e}"))?;
            ensure(back.result.is_some() && back.error.is_none(), || {
                "a success reads back as something else".into()
            })?;
            ensure(
                back.id == id || (back.id.is_f64() && id.is_number()),
                || format!("the id {id} reads back as {}", back.id),
            )?;
            Ok(format!("call {}", c.params.is_array()))
        }
        Err((id, err)) => {
            ensure(err.kind == ErrorKind::InvalidRequest, || {
                format!("parse_call failed with {:?}", err.kind)
            })?;
            ensure(
                matches!(id, Value::Null | Value::Number(_) | Value::String(_)),
                || format!("an error answer carries an invalid id {id}"),
            )?;
            error_round_trips(&err)?;
            let resp = Response::failure(id, &err);
            serde_json::to_vec(&resp).map_err(|e| format!("an error response fails: {e}"))?;
            Ok(format!(
                "refused {}",
                err.message.split(' ').next().unwrap_or("")
            ))
        }
    }
}

/// An error reads back as the same error, as clients see it.
fn error_round_trips(err: &capsule_api::ApiError) -> Result<(), String> {
    let obj = ErrorObject::from(err);
    let value = serde_json::to_value(&obj).map_err(|e| format!("error object: {e}"))?;
    let back: ErrorObject =
        serde_json::from_value(value).map_err(|e| format!("error object reads back: {e}"))?;
    let again = back.into_api_error();
    ensure(
        again.kind == err.kind && again.message == err.message,
        || format!("an error changed on a round trip: {err:?} -> {again:?}"),
    )
}

pub const PARAMS: Target = Target {
    name: "rpc_params",
    about: "every method's params: parse_params, round trips, base64 content, argv",
    seeds: params_seeds,
    dictionary: JSON_TOKENS,
    run: params,
};

const METHODS: &[&str] = &[
    "sandbox.v1.create",
    "sandbox.v1.exec",
    "sandbox.v1.run",
    "sandbox.v1.runCode",
    "sandbox.v1.writeFile",
    "sandbox.v1.readFile",
    "sandbox.v1.list",
    "sandbox.v1.setTimeout",
    "sandbox.v1.delete",
];

fn params_seeds() -> Vec<Vec<u8>> {
    let seeds = [
        (
            0,
            r#"{"template":"python","ttl_ms":60000,"cpu":0.5,"memory_mb":256,"env":{"A":"1"},"metadata":{"k":"v"},"network":"none"}"#,
        ),
        (
            1,
            r#"{"id":"abcd1234","cmd":["python3","-c","print(1)"],"timeout_ms":1000,"env":{"X":"y"},"cwd":"/workspace","stdin":"hi","user":"root"}"#,
        ),
        (1, r#"{"id":"abcd1234","cmd":"echo hi | wc -c"}"#),
        (2, r#"{"id":"abcd1234","code":"print(1)","timeout_ms":5}"#),
        (3, r#"{"id":"abcd1234","code":"x = 1","language":"python"}"#),
        (
            4,
            r#"{"id":"abcd1234","path":"a/b.txt","content":"aGVsbG8=","mode":"0755","user":"user"}"#,
        ),
        (
            4,
            r#"{"id":"abcd1234","path":"x","content":"aGVsbG8","mode":420}"#,
        ),
        (
            5,
            r#"{"id":"abcd1234","path":"/etc/hostname","user":"root"}"#,
        ),
        (6, r#"{"metadata":{"owner":"me"}}"#),
        (7, r#"{"id":"abcd1234","ttl_ms":86400000}"#),
        (8, r#"{"id":"abcd1234"}"#),
    ];
    seeds
        .iter()
        .map(|(m, s)| {
            let mut v = vec![*m as u8];
            v.extend_from_slice(s.as_bytes());
            v
        })
        .collect()
}

/// Parses, and if that works checks `parse(serialize(p)) == p`.
fn round_trip<T>(method: &str, value: Value) -> Result<Option<T>, String>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match parse_params::<T>(method, value) {
        Err(e) => {
            ensure(e.kind == ErrorKind::InvalidParams, || {
                format!("parse_params failed with {:?}", e.kind)
            })?;
            ensure(
                e.message.contains(method) || e.message.contains("named parameters"),
                || format!("the error does not name the method: {}", e.message),
            )?;
            Ok(None)
        }
        Ok(p) => {
            let again = serde_json::to_value(&p).map_err(|e| format!("params serialize: {e}"))?;
            let back = parse_params::<T>(method, again.clone())
                .map_err(|e| format!("serialized params do not parse: {again} ({})", e.message))?;
            ensure(back == p, || {
                format!("params changed on a round trip: {p:?} -> {back:?}")
            })?;
            Ok(Some(p))
        }
    }
}

fn params(input: &[u8]) -> Result<u64, String> {
    let Some((&selector, body)) = input.split_first() else {
        return Ok(0);
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Ok(1);
    };
    let method = METHODS[usize::from(selector) % METHODS.len()];
    let ok = match method {
        "sandbox.v1.create" => round_trip::<CreateParams>(method, value)?.is_some(),
        "sandbox.v1.exec" => match round_trip::<ExecParams>(method, value)? {
            Some(p) => {
                let argv = p.cmd.to_argv();
                ensure(!argv.is_empty() && !argv[0].is_empty(), || {
                    format!("an exec with an empty program was accepted: {argv:?}")
                })?;
                ensure(argv.iter().all(|a| !a.contains('\0')), || {
                    "an argv with a NUL byte was accepted".into()
                })?;
                true
            }
            None => false,
        },
        "sandbox.v1.run" => round_trip::<RunParams>(method, value)?.is_some(),
        "sandbox.v1.runCode" => round_trip::<RunCodeParams>(method, value)?.is_some(),
        "sandbox.v1.writeFile" => match round_trip::<WriteFileParams>(method, value)? {
            Some(p) => {
                ensure(p.mode.is_none_or(|m| m.0 <= 0o7777), || {
                    "a mode beyond 07777 was accepted".into()
                })?;
                if let Ok(bytes) = p.decode_content() {
                    let again = decode_base64(&encode_base64(&bytes), "content").map_err(|e| {
                        format!("re-encoded content does not decode: {}", e.message)
                    })?;
                    ensure(again == bytes, || "base64 changed the content".into())?;
                }
                true
            }
            None => false,
        },
        "sandbox.v1.readFile" => round_trip::<PathParams>(method, value)?.is_some(),
        "sandbox.v1.list" => round_trip::<ListParams>(method, value)?.is_some(),
        "sandbox.v1.setTimeout" => round_trip::<SetTimeoutParams>(method, value)?.is_some(),
        _ => round_trip::<IdParams>(method, value)?.is_some(),
    };
    Ok(sig((method, ok)))
}

pub const IDS: Target = Target {
    name: "sandbox_ids",
    about: "SandboxId::from_str: exactly 8 lowercase letters or digits; serde round trip",
    seeds: || {
        [
            "abcd1234",
            "ABCD1234",
            "abc",
            "abcd12345",
            "../../..",
            "аbcd1234",
            "",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[b"a", b"z", b"0", b"9", b"A", b"-", b"\0", b"\xd0\xb0"],
    run: ids,
};

fn ids(input: &[u8]) -> Result<u64, String> {
    let s = text(input);
    let valid = s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match SandboxId::from_str(&s) {
        Ok(id) => {
            ensure(valid, || format!("an invalid id was accepted: {s:?}"))?;
            ensure(id.as_str() == s, || "the id reads back differently".into())?;
            let v = serde_json::to_value(id).map_err(|e| e.to_string())?;
            let back: SandboxId = serde_json::from_value(v).map_err(|e| e.to_string())?;
            ensure(back == id, || "the id changed on a serde round trip".into())?;
        }
        Err(e) => {
            ensure(!valid, || format!("a valid id was refused: {s:?}"))?;
            let _ = e.to_string();
        }
    }
    Ok(sig(valid))
}

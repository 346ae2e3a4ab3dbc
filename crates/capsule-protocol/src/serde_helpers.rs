//! proto3 JSON mapping helpers: bytes as base64, 64-bit integers as strings.

use base64::Engine as _;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serializer};

/// `bytes` fields: standard base64 out; standard or URL-safe, padded or not, in.
pub mod b64 {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map_err(de::Error::custom)
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let trimmed = text.trim_end_matches('=');
        let engine = if trimmed.contains(['-', '_']) {
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
        } else {
            &base64::engine::general_purpose::STANDARD_NO_PAD
        };
        engine
            .decode(trimmed)
            .map_err(|e| format!("invalid base64 in a bytes field: {e}"))
    }
}

/// `int64`/`uint64` fields: strings out; strings or numbers in.
pub mod i64_string {
    use super::*;

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| de::Error::custom(format!("{n} is not a 64-bit integer"))),
            serde_json::Value::String(s) => s
                .parse()
                .map_err(|_| de::Error::custom(format!("{s:?} is not a 64-bit integer"))),
            other => Err(de::Error::custom(format!(
                "expected a 64-bit integer, got {other}"
            ))),
        }
    }
}

pub fn is_false(b: &bool) -> bool {
    !*b
}

pub fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

pub fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

pub fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

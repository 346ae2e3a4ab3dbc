//! The E2B door's parsers: query strings (`query_pairs`), the metadata
//! filter the SDKs double-encode, the API key headers, and the signed
//! file URL query, which the server verifies and the agent then acts on.

use std::collections::BTreeMap;

use capsule_agent::fuzzing::{parse_query, percent_decode};
use capsule_api::timefmt::{format_rfc3339_millis, parse_rfc3339};
use capsule_protocol::client::percent_encode;
use capsule_server::fuzzing::{metadata_filter, presented_key, query_pairs, signed_query};

use super::{ensure, sig, text};
use crate::Target;

pub const QUERY: Target = Target {
    name: "e2b_query",
    about: "query_pairs, metadata filters (round trip), startedAfter times, API key headers",
    seeds: || {
        [
            "metadata=a%3Db%252520c%26x%3Dy&state=running%2Cpaused&limit=5",
            "metadata=user%3Dalice&template=base&order=desc&nextToken=1700000000000.abcd1234",
            "startedAfter=2024-01-01T00:00:00Z",
            "startedAfter=2024-02-30T25:61:61.999999999%2B99:99",
            "metadata=%25%25%25&&=&",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[
        b"%",
        b"%25",
        b"%2525",
        b"%3D",
        b"%26",
        b"+",
        b"&",
        b"=",
        b"metadata=",
        b"Z",
        b"T",
        b"-",
        b":",
    ],
    run: query,
};

fn query(input: &[u8]) -> Result<u64, String> {
    let q = text(input);
    let pairs = query_pairs(Some(&q));
    let parts: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    ensure(pairs.len() == parts.len(), || {
        "parameters lost or invented".into()
    })?;
    // The server and the agent decode query components the same way.
    for ((k, v), raw) in pairs.iter().zip(&parts) {
        let (rk, rv) = raw.split_once('=').unwrap_or((raw, ""));
        ensure(*k == percent_decode(rk) && *v == percent_decode(rv), || {
            format!("server and agent decode {raw:?} differently")
        })?;
        match k.as_str() {
            "metadata" => {
                let _ = metadata_filter(v);
            }
            "startedAfter" => {
                if let Some(ms) = parse_rfc3339(v) {
                    let again = parse_rfc3339(&format_rfc3339_millis(ms));
                    ensure(again == Some(ms), || {
                        format!("{v:?} -> {ms} does not round trip")
                    })?;
                }
            }
            _ => {}
        }
    }
    // A metadata filter built from the input's pairs, encoded as the SDKs
    // encode it, reads back as the same map.
    let wanted: BTreeMap<String, String> = pairs
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let encoded: Vec<String> = wanted
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(&percent_encode(k)),
                percent_encode(&percent_encode(v))
            )
        })
        .collect();
    let read = metadata_filter(&encoded.join("&"));
    ensure(read == wanted, || {
        format!("metadata filter {wanted:?} read back as {read:?}")
    })?;
    // API key headers: whatever the bytes, no panic, a trimmed key.
    let mut headers = http::HeaderMap::new();
    for line in q.split('\n') {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value),
            )
        {
            headers.append(n, v);
        }
    }
    if let Some(k) = presented_key(&headers) {
        ensure(k.trim() == k, || format!("an untrimmed key {k:?}"))?;
    }
    Ok(sig((pairs.len().min(8), wanted.len().min(4))))
}

pub const SIGNED_URL: Target = Target {
    name: "e2b_signed_url",
    about: "a signed /files URL: the path and user the server verifies are the ones the agent acts on",
    seeds: || {
        [
            "path=%2Fhome%2Fuser%2Fa.txt&username=user&signature=v1_abc",
            "path=/home/user/a.txt&username=user&signature=v1_abc&signature_expiration=1700000000",
            "path=/a&signature=v1_x",
            "signature=v1_x&path=/b&username=",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[
        b"&path=",
        b"&username=",
        b"&username=root",
        b"&signature=",
        b"pa%74h=",
        b"&",
        b"=",
        b"%26",
        b"+",
    ],
    run: signed_url,
};

/// The server checks a signed URL's query (`signed_query`) and forwards
/// the agent a query rebuilt from the checked values; the agent must read
/// from it exactly the path and user that were signed, and no name the
/// server refused may pass as a single one.
fn signed_url(input: &[u8]) -> Result<u64, String> {
    let q = text(input);
    let signed = match signed_query(Some(&q)) {
        Ok(s) => s,
        Err((status, message)) => {
            ensure(!message.is_empty(), || "an empty refusal".to_owned())?;
            return Ok(sig(("refused", status.as_u16())));
        }
    };
    let forwarded = signed.forwarded();
    let agent = parse_query(Some(&forwarded));
    let agent_path = agent.get("path").cloned().unwrap_or_default();
    let agent_user = agent.get("username").cloned().unwrap_or_default();
    ensure(
        agent_path == signed.path && agent_user == signed.user,
        || {
            format!(
                "the server verified path {:?} for user {:?}; the agent serves path {agent_path:?} for user {agent_user:?} (forwarded {forwarded:?})",
                signed.path, signed.user
            )
        },
    )?;
    // The raw query, read by the agent, may differ only where the server
    // refused it: duplicates are never forwarded as they came.
    let raw = parse_query(Some(&q));
    if raw.get("path") != Some(&signed.path) {
        let names = query_pairs(Some(&q));
        ensure(
            names.iter().filter(|(k, _)| k == "path").count() == 1,
            || "a duplicated path passed the check".to_owned(),
        )?;
    }
    Ok(sig(("signed", signed.user.is_empty())))
}

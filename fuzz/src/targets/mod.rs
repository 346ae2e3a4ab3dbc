//! The targets, one per parser of untrusted input.

mod agent;
mod connect;
mod e2b;
mod egress;
mod paths;
mod rpc;

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::Target;

/// Every target, in the order the binary lists them.
pub fn all() -> Vec<Target> {
    vec![
        rpc::ENVELOPE,
        rpc::PARAMS,
        rpc::IDS,
        connect::FRAMES,
        connect::ERRORS,
        paths::SANDBOX_PATH,
        agent::PATHS,
        agent::QUERY,
        agent::HEADERS,
        e2b::QUERY,
        e2b::SIGNED_URL,
        egress::ALLOW,
    ]
}

/// A signature of an outcome, for the corpus feedback.
pub(crate) fn sig(parts: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Fails with `message` unless `cond` holds.
pub(crate) fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(message()) }
}

/// The input as text: invalid UTF-8 replaced, as the HTTP layers would
/// refuse or replace it before these parsers see it.
pub(crate) fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

//! Wire types shared by every Capsule front door and client.
//!
//! This crate performs no I/O: it only describes what travels over the wire
//! (JSON-RPC envelopes, the `sandbox.v1.*` methods, identifiers, error kinds)
//! and validates it, so that the server, the CLI and the tests agree on one
//! definition.

pub mod admin;
pub mod e2b;
pub mod error;
pub mod ids;
pub mod rpc;
pub mod sandbox;
pub mod timefmt;

pub use error::{ApiError, ErrorKind};
pub use ids::SandboxId;

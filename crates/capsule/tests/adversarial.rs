//! The adversarial suite: attacks run from inside real sandboxes and
//! through every front door of a real server, written the way an attacker
//! would try them. Each attack asserts that it failed and that the host is
//! unchanged, and records a row (attack, expected, observed, result) in
//! `target/adversarial/results.jsonl`; `render_security_results` turns the
//! rows into the results table of `docs/security.md`.
//!
//! An attack that works fails its test. Tests that reproduce an open
//! vulnerability say so in their name and doc comment.
//!
//! Run: `cargo nextest run -p capsule --test adversarial`, then
//! `cargo nextest run -p capsule --test adversarial --run-ignored only render_security_results`.

mod common;

// An inline module, so that the attack files live in `tests/adversarial/`.
mod adversarial {
    mod api;
    mod e2b;
    mod filesystem;
    mod mcp;
    mod network;
    mod privilege;
    mod report;
    mod resources;
}

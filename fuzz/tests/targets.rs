//! Every fuzz target, as a test: each runs for `CAPSULE_FUZZ_SECS` (default
//! 5 s) and fails with the shrunk input and the seed that reproduces it.

use capsule_fuzz::run_target_test;

#[test]
fn rpc_envelope() {
    run_target_test("rpc_envelope");
}

#[test]
fn rpc_params() {
    run_target_test("rpc_params");
}

#[test]
fn sandbox_ids() {
    run_target_test("sandbox_ids");
}

#[test]
fn connect_frames() {
    run_target_test("connect_frames");
}

#[test]
fn connect_errors() {
    run_target_test("connect_errors");
}

#[test]
fn sandbox_path() {
    run_target_test("sandbox_path");
}

#[test]
fn agent_resolve() {
    run_target_test("agent_resolve");
}

#[test]
fn agent_query() {
    run_target_test("agent_query");
}

#[test]
fn agent_identity() {
    run_target_test("agent_identity");
}

#[test]
fn e2b_query() {
    run_target_test("e2b_query");
}

/// The server checks a signed URL and forwards only the signed path and
/// user; the agent must read back exactly those (see the adversarial test
/// `signed_file_urls_cannot_be_widened`, which found the original hole).
#[test]
fn e2b_signed_url() {
    run_target_test("e2b_signed_url");
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = capsule_fuzz::targets::all()
        .iter()
        .map(|t| t.name)
        .collect();
    let this_file = include_str!("targets.rs");
    for name in names {
        assert!(
            this_file.contains(&format!("run_target_test(\"{name}\")")),
            "fuzz target {name} has no test in fuzz/tests/targets.rs"
        );
    }
}

#[test]
fn egress_allow() {
    run_target_test("egress_allow");
}

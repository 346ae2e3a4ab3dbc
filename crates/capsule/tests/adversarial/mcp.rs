//! The MCP door: a session works only on its owner's (and its group's)
//! sandboxes, keeps the identity it started with, and cannot be reached
//! from a web page through DNS rebinding.

use serde_json::json;

use crate::common::Server;
use crate::common::attack::{Mcp, Recorder, Req, one_line};

fn id_of(v: &serde_json::Value) -> String {
    v["sandbox_id"]
        .as_str()
        .or_else(|| v["id"].as_str())
        .unwrap_or("")
        .to_owned()
}

#[test]
fn mcp_sessions_see_only_their_owners_sandboxes() {
    let mut rec = Recorder::new("mcp", "mcp_sessions_see_only_their_owners_sandboxes");
    let server = Server::start();
    let mut alice = Mcp::open(&server, &[("X-Capsule-User", "alice")]).expect("alice's session");
    let mut bob = Mcp::open(&server, &[("X-Capsule-User", "bob")]).expect("bob's session");
    let created = alice
        .tool("create_sandbox", json!({"template": "python"}))
        .expect("alice creates a sandbox");
    let a = id_of(&created);
    alice
        .tool(
            "write_file",
            json!({"sandbox_id": a, "path": "/workspace/alice.txt", "content": "alice's secret"}),
        )
        .expect("alice writes");
    let rpc_made = server.create("base");
    for (what, tool, args) in [
        ("get_sandbox", "get_sandbox", json!({"sandbox_id": a})),
        (
            "read_file",
            "read_file",
            json!({"sandbox_id": a, "path": "/workspace/alice.txt"}),
        ),
        (
            "download",
            "download",
            json!({"sandbox_id": a, "path": "/workspace/alice.txt"}),
        ),
        (
            "list_dir",
            "list_dir",
            json!({"sandbox_id": a, "path": "/workspace"}),
        ),
        (
            "write_file",
            "write_file",
            json!({"sandbox_id": a, "path": "/workspace/bob.txt", "content": "x"}),
        ),
        (
            "upload",
            "upload",
            json!({"sandbox_id": a, "path": "/workspace/bob.bin", "content_base64": "eA=="}),
        ),
        (
            "exec",
            "exec",
            json!({"sandbox_id": a, "command": "cat /workspace/alice.txt"}),
        ),
        (
            "run_code",
            "run_code",
            json!({"sandbox_id": a, "code": "print(open('/workspace/alice.txt').read())"}),
        ),
        ("delete_sandbox", "delete_sandbox", json!({"sandbox_id": a})),
    ] {
        let r = bob.tool(tool, args);
        let text = match &r {
            Ok(v) => v.to_string(),
            Err(e) => e.clone(),
        };
        rec.check(
            &format!("another owner's session calls {what} on alice's sandbox"),
            "sandbox_not_found, as if it did not exist",
            one_line(&text, 140),
            r.is_err() && text.contains("sandbox_not_found") && !text.contains("alice's secret"),
        );
    }
    let r = bob.request(
        "resources/read",
        json!({"uri": format!("capsule://{a}/workspace/alice.txt")}),
    );
    rec.check(
        "another owner's session reads alice's file as a resource",
        "an error",
        one_line(&r.to_string(), 140),
        r["result"].is_null() && !r.to_string().contains("alice's secret"),
    );
    let listed = bob.tool("list_sandboxes", json!({})).unwrap_or_default();
    rec.check(
        "another owner's session lists sandboxes",
        "alice's sandbox and JSON-RPC ones are absent",
        one_line(&listed.to_string(), 140),
        !listed.to_string().contains(&a) && !listed.to_string().contains(&rpc_made),
    );
    let r = alice.tool("exec", json!({"sandbox_id": rpc_made, "command": "id"}));
    rec.check(
        "an MCP session uses a sandbox made through JSON-RPC",
        "sandbox_not_found",
        one_line(&format!("{r:?}"), 140),
        r.as_ref().is_err_and(|e| e.contains("sandbox_not_found")),
    );
    // Alice's sandbox is untouched by all of that.
    let still = alice.tool(
        "read_file",
        json!({"sandbox_id": a, "path": "/workspace/alice.txt"}),
    );
    rec.check(
        "alice's sandbox after bob's attempts",
        "intact",
        one_line(&format!("{still:?}"), 100),
        still
            .as_ref()
            .is_ok_and(|v| v.to_string().contains("alice's secret")),
    );

    // Identity is fixed once a session has used it.
    let mut hijack = Mcp::open(&server, &[("X-Capsule-User", "mallory")]).expect("a session");
    let _ = hijack.tool("list_sandboxes", json!({}));
    hijack.set_header("X-Capsule-User", "alice");
    let r = hijack.tool("get_sandbox", json!({"sandbox_id": a}));
    rec.check(
        "switch a session's X-Capsule-User to alice after its first tool call",
        "refused: the session keeps its identity",
        one_line(&format!("{r:?}"), 140),
        r.is_err(),
    );
    hijack.set_header("X-Capsule-User", "mallory");
    // Before the first tool call the identity is still open: the session
    // takes whoever calls a tool first, not whoever initialized it. The
    // user header is an assertion, not a credential, in this version.
    let mut early = Mcp::open(&server, &[("X-Capsule-User", "mallory")]).expect("a session");
    early.set_header("X-Capsule-User", "alice");
    let r = early.tool("get_sandbox", json!({"sandbox_id": a}));
    if r.is_ok() {
        rec.known_limit(
            "initialize a session as mallory, then call tools as alice",
            "bound to the initializing identity (docs/mcp.md: \"bound to the identity of its first request\")",
            "bound at the first tool call instead: the session acts for alice",
        );
    } else {
        rec.check(
            "initialize a session as mallory, then call tools as alice",
            "refused",
            one_line(&format!("{r:?}"), 140),
            true,
        );
    }
    // Owner metadata is Capsule's.
    let r = bob.tool(
        "create_sandbox",
        json!({"template": "base", "metadata": {"mcp.owner": "open/alice"}}),
    );
    rec.check(
        "create a sandbox with metadata mcp.owner naming alice",
        "refused: mcp.* keys are reserved",
        one_line(&format!("{r:?}"), 140),
        r.is_err(),
    );
    // Through another door the same label is accepted today: a sandbox
    // planted in alice's view. The API's users are trusted in this version.
    let planted = server.rpc(
        "sandbox.v1.create",
        json!({"template": "base", "metadata": {"mcp.owner": "open/alice"}}),
    );
    let planted_id = planted["result"]["id"].as_str().unwrap_or("").to_owned();
    let seen = alice
        .tool("list_sandboxes", json!({}))
        .map(|v| v.to_string().contains(&planted_id) && !planted_id.is_empty())
        .unwrap_or(false);
    if seen {
        rec.known_limit(
            "plant a sandbox into alice's MCP view through JSON-RPC metadata mcp.owner",
            "refused once tenants are enforced for every door",
            format!("JSON-RPC accepted it; alice's session lists {planted_id}"),
        );
    } else {
        rec.check(
            "plant a sandbox into alice's MCP view through JSON-RPC metadata mcp.owner",
            "refused",
            one_line(&planted.to_string(), 120),
            true,
        );
    }
    // Groups: members share, outsiders do not.
    let mut carol = Mcp::open(
        &server,
        &[("X-Capsule-User", "carol"), ("X-Capsule-Group", "lab")],
    )
    .expect("carol");
    let mut dave = Mcp::open(
        &server,
        &[("X-Capsule-User", "dave"), ("X-Capsule-Group", "lab")],
    )
    .expect("dave");
    let mut erin = Mcp::open(
        &server,
        &[("X-Capsule-User", "erin"), ("X-Capsule-Group", "lab2")],
    )
    .expect("erin");
    let c = id_of(
        &carol
            .tool("create_sandbox", json!({"template": "base"}))
            .expect("carol creates"),
    );
    let shared = dave.tool("exec", json!({"sandbox_id": c, "command": "echo shared"}));
    let outsider = erin.tool("exec", json!({"sandbox_id": c, "command": "echo pwned"}));
    rec.check(
        "a member of another group (lab2) uses a lab sandbox",
        "sandbox_not_found (while lab members share it)",
        format!(
            "dave (lab): {}; erin (lab2): {}",
            one_line(&format!("{shared:?}"), 60),
            one_line(&format!("{outsider:?}"), 60)
        ),
        shared.is_ok() && outsider.is_err(),
    );
    // DNS rebinding: a page served from another name cannot talk to /mcp.
    let resp = Req::new("POST", "/mcp")
        .header("Host", "attacker.example")
        .header("Accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "x", "version": "0"}}}),
        )
        .send(server.port);
    rec.check(
        "initialize an MCP session with Host: attacker.example (DNS rebinding)",
        "refused",
        resp.brief(),
        resp.status >= 400 && resp.header("mcp-session-id").is_none(),
    );
    for s in [alice, bob, hijack, early, carol, dave, erin] {
        s.close();
    }
    server.shutdown_and_check_clean();
    rec.finish();
}

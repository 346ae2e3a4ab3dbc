//! API keys, tenants, quotas, rate limits and the audit log, through the
//! real server: what one tenant's key can and cannot reach.

mod common;

use common::{Server, http_with};
use serde_json::{Value, json};

const OPERATOR: &str = "operator-key-for-tests";

fn make_key(server: &Server, tenant: &str, role: &str) -> String {
    server.ok(
        "admin.v1.createKey",
        json!({"tenant": tenant, "role": role, "name": format!("{tenant} {role}")}),
    )["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn each_tenant_sees_only_its_own_sandboxes() {
    let server = Server::start_with(&["--api-keys", OPERATOR]);
    let acme = make_key(&server, "acme", "member");
    let globex = make_key(&server, "globex", "member");
    let a = server.with_key(&acme);
    let g = server.with_key(&globex);
    let mine = a.create("base");
    a.ok(
        "sandbox.v1.writeFile",
        json!({"id": mine, "path": "secret.txt", "content": "c2VjcmV0"}),
    );

    // The other tenant gets sandbox_not_found for every call naming it,
    // the same answer as for an id that never existed.
    let calls: Vec<(&str, Value)> = vec![
        ("sandbox.v1.get", json!({"id": mine})),
        ("sandbox.v1.exec", json!({"id": mine, "cmd": "id"})),
        ("sandbox.v1.run", json!({"id": mine, "code": "id"})),
        ("sandbox.v1.runCode", json!({"id": mine, "code": "1"})),
        (
            "sandbox.v1.readFile",
            json!({"id": mine, "path": "secret.txt"}),
        ),
        (
            "sandbox.v1.writeFile",
            json!({"id": mine, "path": "x", "content": ""}),
        ),
        (
            "sandbox.v1.listDir",
            json!({"id": mine, "path": "/workspace"}),
        ),
        ("sandbox.v1.stat", json!({"id": mine, "path": "/workspace"})),
        ("sandbox.v1.makeDir", json!({"id": mine, "path": "d"})),
        (
            "sandbox.v1.remove",
            json!({"id": mine, "path": "secret.txt"}),
        ),
        (
            "sandbox.v1.setTimeout",
            json!({"id": mine, "ttl_ms": 60000}),
        ),
        ("sandbox.v1.stats", json!({"id": mine})),
        ("sandbox.v1.pause", json!({"id": mine})),
        ("sandbox.v1.resume", json!({"id": mine})),
        ("sandbox.v1.snapshot", json!({"id": mine, "name": "s"})),
        ("sandbox.v1.fork", json!({"id": mine, "count": 1})),
        ("sandbox.v1.delete", json!({"id": mine})),
    ];
    for (method, params) in &calls {
        let e = g.err(method, params.clone());
        assert_eq!(e["data"]["kind"], "sandbox_not_found", "{method}: {e}");
        let never = g.err(
            method,
            serde_json::from_str(&params.to_string().replace(&mine, "zzzzzzzz")).unwrap(),
        );
        assert_eq!(
            e["message"].as_str().unwrap().replace(&mine, "zzzzzzzz"),
            never["message"],
            "{method}"
        );
    }
    assert_eq!(g.ok("sandbox.v1.list", json!({}))["sandboxes"], json!([]));
    let listed = a.ok("sandbox.v1.list", json!({}));
    assert_eq!(listed["sandboxes"][0]["id"], mine.as_str());
    // The owner still has it, untouched; the operator (an admin) sees it too.
    let back = a.ok(
        "sandbox.v1.readFile",
        json!({"id": mine, "path": "secret.txt"}),
    );
    assert_eq!(back["content"], "c2VjcmV0");
    let all = server.ok("sandbox.v1.list", json!({}));
    assert_eq!(all["sandboxes"].as_array().unwrap().len(), 1);

    // Snapshots and volumes belong to their tenant as well.
    if common::is_root() {
        let snap = a.ok(
            "sandbox.v1.snapshot",
            json!({"id": mine, "name": "acme-snap"}),
        );
        let snap_id = snap["snapshot_id"].as_str().unwrap().to_owned();
        a.ok(
            "sandbox.v1.createVolume",
            json!({"name": "acme-vol", "size_mb": 64}),
        );
        assert_eq!(
            g.ok("sandbox.v1.listSnapshots", json!({}))["snapshots"],
            json!([])
        );
        assert_eq!(
            g.ok("sandbox.v1.listVolumes", json!({}))["volumes"],
            json!([])
        );
        for params in [
            json!({"template": "base", "snapshot": snap_id}),
            json!({"template": "base", "snapshot": "acme-snap"}),
            json!({"template": "base", "volumes": [{"name": "acme-vol", "path": "/data"}]}),
        ] {
            let e = g.err("sandbox.v1.create", params.clone());
            assert_eq!(e["data"]["kind"], "invalid_params", "{params}: {e}");
        }
        // Another tenant's snapshot or volume looks like one that does not exist.
        for (method, params, missing) in [
            (
                "sandbox.v1.deleteSnapshot",
                json!({"snapshot": snap_id}),
                json!({"snapshot": "no-such-snap"}),
            ),
            (
                "sandbox.v1.deleteVolume",
                json!({"name": "acme-vol"}),
                json!({"name": "no-such-vol"}),
            ),
        ] {
            let e = g.err(method, params);
            let m = g.err(method, missing);
            assert_eq!(e["data"]["kind"], m["data"]["kind"], "{method}: {e} vs {m}");
            assert_eq!(e["data"]["kind"], "invalid_params", "{method}: {e}");
        }
        // Still there for their owner.
        assert_eq!(
            a.ok("sandbox.v1.listSnapshots", json!({}))["snapshots"][0]["snapshot_id"],
            snap_id.as_str()
        );
        assert_eq!(
            a.ok("sandbox.v1.listVolumes", json!({}))["volumes"][0]["name"],
            "acme-vol"
        );
        a.ok("sandbox.v1.deleteSnapshot", json!({"snapshot": snap_id}));
        a.ok("sandbox.v1.deleteVolume", json!({"name": "acme-vol"}));
    }

    // The terminal and the E2B control plane apply the same rule.
    assert_eq!(terminal_status(&server, &mine, &globex), 404);
    assert_eq!(terminal_status(&server, &mine, &acme), 101);
    for (method, path) in [
        ("GET", format!("/sandboxes/{mine}")),
        ("DELETE", format!("/sandboxes/{mine}")),
    ] {
        let (status, _) =
            http_with(server.port, method, &path, &[("X-API-Key", &globex)], b"").unwrap();
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, body) = http_with(
        server.port,
        "GET",
        "/v2/sandboxes",
        &[("X-API-Key", &globex)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!([]));
    let (_, body) = http_with(
        server.port,
        "GET",
        "/v2/sandboxes",
        &[("X-API-Key", &acme)],
        b"",
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&body).contains(&mine));
    server.shutdown_and_check_clean();
}

/// The HTTP status of a terminal handshake with `key` (101 when it opens).
fn terminal_status(server: &Server, id: &str, key: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut req = format!("ws://127.0.0.1:{}/terminal/{id}", server.port)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {key}").parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    })
}

#[test]
fn keys_are_made_listed_by_prefix_and_revoked() {
    let server = Server::start_with(&["--api-keys", OPERATOR]);
    let made = server.ok(
        "admin.v1.createKey",
        json!({"tenant": "acme", "name": "ci runner"}),
    );
    let key = made["key"].as_str().unwrap().to_owned();
    let key_id = made["key_id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("cap_{key_id}_")));
    assert_eq!(made["role"], "member");

    let listed = server.ok("admin.v1.listKeys", json!({"tenant": "acme"}));
    let entry = &listed["keys"][0];
    assert_eq!(entry["key_id"], key_id.as_str());
    assert_eq!(entry["prefix"], format!("cap_{key_id}_..."));
    assert!(
        !listed.to_string().contains(&key),
        "the secret is never listed"
    );
    // The store keeps a hash only.
    let db = std::fs::read(server.state.join("state.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(&key));

    // Members cannot administer.
    let member = server.with_key(&key);
    member.ok("sandbox.v1.list", json!({}));
    for method in [
        "admin.v1.createKey",
        "admin.v1.listKeys",
        "admin.v1.listTenants",
        "admin.v1.audit",
        "admin.v1.setPool",
    ] {
        let e = member.err(
            method,
            json!({"tenant": "acme", "template": "base", "size": 1}),
        );
        assert_eq!(e["data"]["kind"], "permission_denied", "{method}: {e}");
    }
    let e = member.err("admin.v1.getTenant", json!({"tenant": "other"}));
    assert_eq!(e["data"]["kind"], "permission_denied");
    assert_eq!(member.ok("admin.v1.getTenant", json!({}))["tenant"], "acme");

    server.ok("admin.v1.revokeKey", json!({"key_id": key_id}));
    let (status, resp) = member.rpc("sandbox.v1.list", json!({}));
    assert_eq!(status, 401);
    assert_eq!(resp["error"]["data"]["kind"], "unauthorized");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let listed = server.ok("admin.v1.listKeys", json!({}));
    assert!(listed["keys"][0]["revoked_at"].is_string());

    // Unknown and missing keys are refused too.
    let (status, resp) = server
        .with_key("cap_nothere_x")
        .rpc("sandbox.v1.list", json!({}));
    assert_eq!(
        (status, resp["error"]["data"]["kind"].clone()),
        (401, json!("unauthorized"))
    );
    let (status, _) = http_with(
        server.port,
        "POST",
        "/rpc",
        &[],
        br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.list"}"#,
    )
    .unwrap();
    assert_eq!(status, 401);
    let e = server.err("admin.v1.revokeKey", json!({"key_id": "nope"}));
    assert!(e["message"].as_str().unwrap().contains("nope"));
    server.shutdown_and_check_clean();
}

#[test]
fn keys_survive_a_restart_and_an_open_server_closes_once_keys_exist() {
    let mut server = Server::start();
    // Open: anything goes, as the operator.
    server.ok("sandbox.v1.list", json!({}));
    let admin = server.ok(
        "admin.v1.createKey",
        json!({"tenant": "ops", "role": "admin"}),
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Now a key is needed.
    let (status, _) = http_with(
        server.port,
        "POST",
        "/rpc",
        &[],
        br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.list"}"#,
    )
    .unwrap();
    assert_eq!(status, 401);
    server.admin_key = Some(admin.clone());
    server.restart();
    let (status, _) = http_with(
        server.port,
        "POST",
        "/rpc",
        &[],
        br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.list"}"#,
    )
    .unwrap();
    assert_eq!(status, 401, "keys are durable");
    server
        .with_key(&admin)
        .ok("admin.v1.listTenants", json!({}));
    server.shutdown_and_check_clean();
}

#[test]
fn quotas_are_enforced_with_the_limit_and_current_use() {
    let server = Server::start_with(&["--api-keys", OPERATOR]);
    let key = make_key(&server, "small", "member");
    let t = server.with_key(&key);
    server.ok(
        "admin.v1.setQuotas",
        json!({"tenant": "small", "quotas": {"max_sandboxes": 2, "max_memory_mb": 300}}),
    );
    let first = t.ok(
        "sandbox.v1.create",
        json!({"template": "base", "memory_mb": 128}),
    )["id"]
        .clone();
    let e = t.err(
        "sandbox.v1.create",
        json!({"template": "base", "memory_mb": 256}),
    );
    assert_eq!(e["data"]["kind"], "quota_exceeded", "{e}");
    assert_eq!(e["data"]["quota"], "memory_mb");
    assert_eq!(e["data"]["limit"], "300");
    assert_eq!(e["data"]["current"], "128");
    t.ok(
        "sandbox.v1.create",
        json!({"template": "base", "memory_mb": 64}),
    );
    let e = t.err(
        "sandbox.v1.create",
        json!({"template": "base", "memory_mb": 32}),
    );
    assert_eq!(e["data"]["quota"], "sandboxes", "{e}");
    let info = t.ok("admin.v1.getTenant", json!({}));
    assert_eq!(info["usage"]["sandboxes"], 2);
    assert_eq!(info["usage"]["memory_mb"], 192);
    assert_eq!(info["quotas"]["max_sandboxes"], 2);
    // Freeing one makes room; other tenants are not limited by it.
    t.ok("sandbox.v1.delete", json!({"id": first}));
    t.ok(
        "sandbox.v1.create",
        json!({"template": "base", "memory_mb": 32}),
    );
    server.ok("sandbox.v1.create", json!({"template": "base"}));
    let e = server.err(
        "admin.v1.setQuotas",
        json!({"tenant": "small", "quotas": {"max_sandbox": 1}}),
    );
    assert_eq!(e["data"]["kind"], "invalid_params");
    server.shutdown_and_check_clean();
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let server = Server::start_with(&["--api-keys", OPERATOR]);
    let made = server.ok(
        "admin.v1.createKey",
        json!({"tenant": "busy", "rate_limit_per_min": 5}),
    );
    let key = made["key"].as_str().unwrap().to_owned();
    let t = server.with_key(&key);
    for _ in 0..5 {
        t.ok("sandbox.v1.list", json!({}));
    }
    let auth = format!("Bearer {key}");
    let (status, body) = http_with(
        server.port,
        "POST",
        "/rpc",
        &[("Authorization", &auth)],
        br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.list"}"#,
    )
    .unwrap();
    assert_eq!(status, 429);
    let resp: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(resp["error"]["data"]["kind"], "quota_exceeded");
    assert_eq!(resp["error"]["data"]["limit"], 5);
    // Another key is not slowed down by it.
    for _ in 0..10 {
        server.ok("sandbox.v1.list", json!({}));
    }
    server.shutdown_and_check_clean();
}

#[test]
fn state_changing_calls_are_audited() {
    let server = Server::start_with(&["--api-keys", OPERATOR]);
    let key = make_key(&server, "acme", "member");
    let t = server.with_key(&key);
    let id = t.create("base");
    t.ok("sandbox.v1.exec", json!({"id": id, "cmd": "true"}));
    let _ = t.err("sandbox.v1.readFile", json!({"id": id, "path": "/nope"}));
    let _ = t.err("sandbox.v1.remove", json!({"id": id, "path": "/nope"}));
    t.ok("sandbox.v1.delete", json!({"id": id}));
    let log = server.ok("admin.v1.audit", json!({"tenant": "acme"}));
    let actions: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("sandbox.v1.delete".to_owned(), "ok".to_owned()),
            ("sandbox.v1.remove".to_owned(), "file_not_found".to_owned()),
            ("sandbox.v1.exec".to_owned(), "ok".to_owned()),
            ("sandbox.v1.create".to_owned(), "ok".to_owned()),
        ],
        "reads are not audited; writes are, newest first: {log}"
    );
    let entry = &log["entries"][0];
    assert_eq!(entry["target"], id.as_str());
    assert_eq!(entry["tenant"], "acme");
    assert!(entry["key_id"].as_str().unwrap().len() == 12);
    let everything = server.ok("admin.v1.audit", json!({"limit": 1000}));
    assert!(
        everything["entries"]
            .to_string()
            .contains("admin.v1.createKey")
    );
    let e = server.err("admin.v1.audit", json!({"since": "yesterday"}));
    assert!(e["message"].as_str().unwrap().contains("yesterday"));
    server.shutdown_and_check_clean();
}

#[test]
fn the_cli_manages_keys_and_quotas() {
    let server = Server::start_with(&["--api-keys", OPERATOR]);
    let out = server
        .cli()
        .env("CAPSULE_API_KEY", OPERATOR)
        .args(["keys", "create", "acme", "--name", "laptop"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("cap_"));
    let out = server
        .cli()
        .env("CAPSULE_API_KEY", OPERATOR)
        .args(["tenants", "set-quota", "acme", "--max-sandboxes", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server
        .cli()
        .env("CAPSULE_API_KEY", &key)
        .args(["create", "base"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = server
        .cli()
        .env("CAPSULE_API_KEY", &key)
        .args(["create", "base"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("quota"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server
        .cli()
        .env("CAPSULE_API_KEY", OPERATOR)
        .args(["--json", "keys", "list"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["keys"][0]["name"], "laptop");
    let out = server
        .cli()
        .env("CAPSULE_API_KEY", OPERATOR)
        .args(["audit", "--tenant", "acme"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sandbox.v1.create") && text.contains("quota_exceeded"),
        "{text}"
    );
    server.shutdown_and_check_clean();
}

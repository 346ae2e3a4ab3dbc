//! The E2B doors: in-sandbox traffic routed by headers and signed file
//! URLs. Smuggled, duplicated and conflicting headers, CRLF injection,
//! tokens of the wrong sandbox, and signed URLs replayed or widened.

use serde_json::json;

use crate::common::Server;
use crate::common::attack::{
    E2bSandbox, Recorder, Req, Resp, e2b_create, file_signature, qenc, raw_exchange,
    server_healthy, stop_and_check_clean,
};

/// Writes `path` in `sb` through envd, with `headers` exactly as given.
fn upload(server: &Server, headers: &[(String, String)], path: &str, body: &str) -> Resp {
    Req::new("POST", &format!("/files?path={}&username=root", qenc(path)))
        .headers(headers)
        .header("Content-Type", "application/octet-stream")
        .body(body.as_bytes().to_vec())
        .send(server.port)
}

/// Whether `path` exists in the sandbox `id` (checked through JSON-RPC).
fn exists(server: &Server, id: &str, path: &str) -> bool {
    server.rpc(
        "sandbox.v1.stat",
        json!({"id": id, "path": path, "user": "root"}),
    )["result"]
        .is_object()
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn e2b_sandbox_routing_headers_cannot_be_smuggled() {
    let mut rec = Recorder::new("e2b", "e2b_sandbox_routing_headers_cannot_be_smuggled");
    let server = Server::start();
    let a = e2b_create(&server, None);
    let b = e2b_create(&server, None);
    let mut n = 0;
    let mut try_write = |rec: &mut Recorder, what: &str, headers: Vec<(String, String)>| {
        n += 1;
        let path = format!("/workspace/smuggled-{n}");
        let resp = upload(&server, &headers, &path, "x");
        let in_a = exists(&server, &a.id, &path);
        let in_b = exists(&server, &b.id, &path);
        // The attacker holds only A's token: nothing may land in B.
        rec.check(
            what,
            "never reaches sandbox B (whose token was not presented)",
            format!("{}; landed in A: {in_a}, in B: {in_b}", resp.brief()),
            !in_b,
        );
    };
    try_write(
        &mut rec,
        "A's token with B's id",
        h(&[("E2b-Sandbox-Id", &b.id), ("X-Access-Token", &a.envd_token)]),
    );
    try_write(
        &mut rec,
        "two E2b-Sandbox-Id headers (B then A) with A's token",
        h(&[
            ("E2b-Sandbox-Id", &b.id),
            ("E2b-Sandbox-Id", &a.id),
            ("X-Access-Token", &a.envd_token),
        ]),
    );
    try_write(
        &mut rec,
        "two E2b-Sandbox-Id headers (A then B) with A's token",
        h(&[
            ("E2b-Sandbox-Id", &a.id),
            ("E2b-Sandbox-Id", &b.id),
            ("X-Access-Token", &a.envd_token),
        ]),
    );
    try_write(
        &mut rec,
        "E2b-Sandbox-Id \"B, A\" in one header with A's token",
        h(&[
            ("E2b-Sandbox-Id", &format!("{}, {}", b.id, a.id)),
            ("X-Access-Token", &a.envd_token),
        ]),
    );
    try_write(
        &mut rec,
        "B's id with A's token in Authorization: Bearer",
        h(&[
            ("E2b-Sandbox-Id", &b.id),
            ("Authorization", &format!("Bearer {}", a.envd_token)),
        ]),
    );
    try_write(
        &mut rec,
        "B's id with A's traffic token on the envd port",
        h(&[
            ("E2b-Sandbox-Id", &b.id),
            ("E2b-Traffic-Access-Token", &a.traffic_token),
        ]),
    );
    try_write(
        &mut rec,
        "B's id, port 49999, A's traffic token",
        h(&[
            ("E2b-Sandbox-Id", &b.id),
            ("E2b-Sandbox-Port", "49999"),
            ("E2b-Traffic-Access-Token", &a.traffic_token),
        ]),
    );
    try_write(
        &mut rec,
        "B's id with two X-Access-Token headers (A's, then an empty one)",
        h(&[
            ("E2b-Sandbox-Id", &b.id),
            ("X-Access-Token", &a.envd_token),
            ("X-Access-Token", ""),
        ]),
    );
    try_write(
        &mut rec,
        "Host naming B (E2B's domain routing) with A's token and no id header",
        h(&[
            ("Host", &format!("49983-{}.e2b.app", b.id)),
            ("X-Access-Token", &a.envd_token),
        ]),
    );
    try_write(
        &mut rec,
        "Host naming B plus A's id header and token",
        h(&[
            ("Host", &format!("49983-{}.e2b.app", b.id)),
            ("E2b-Sandbox-Id", &a.id),
            ("X-Access-Token", &a.envd_token),
        ]),
    );
    // Duplicate tokens: a wrong one first must not let the right one be ignored wrongly.
    let resp = upload(
        &server,
        &h(&[
            ("E2b-Sandbox-Id", &b.id),
            ("X-Access-Token", "0000"),
            ("X-Access-Token", &b.envd_token),
        ]),
        "/workspace/dup-token",
        "x",
    );
    rec.check(
        "B's id with a wrong X-Access-Token first and B's second",
        "refused or accepted, consistently for the token checked",
        resp.brief(),
        resp.status == 401 || resp.status == 200,
    );
    for port in ["0", "22", "49983/..", "-1", "4998300000", "49983 49999"] {
        let resp = Req::new("GET", "/health")
            .header("E2b-Sandbox-Id", &a.id)
            .header("X-Access-Token", &a.envd_token)
            .header("E2b-Sandbox-Port", port)
            .send(server.port);
        rec.check(
            &format!("E2b-Sandbox-Port {port:?}"),
            "only envd (49983) and the interpreter (49999) are open",
            resp.brief(),
            resp.status == 502 || resp.status == 401,
        );
    }

    // CRLF and control characters never become headers.
    for (what, raw) in [
        (
            "bare CR inside X-Access-Token",
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {}\r\nX-Access-Token: {}\rE2b-Sandbox-Id: {}\r\nConnection: close\r\n\r\n",
                a.id, a.envd_token, b.id
            ),
        ),
        (
            "obsolete line folding carrying a second id",
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Access-Token: {}\r\nE2b-Sandbox-Id: {}\r\n {}\r\nConnection: close\r\n\r\n",
                a.envd_token, b.id, a.id
            ),
        ),
        (
            "NUL inside E2b-Sandbox-Id",
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {}\0{}\r\nX-Access-Token: {}\r\nConnection: close\r\n\r\n",
                b.id, a.id, a.envd_token
            ),
        ),
    ] {
        let resp = raw_exchange(server.port, raw.as_bytes());
        let observed = resp
            .as_ref()
            .map(Resp::brief)
            .unwrap_or_else(|| "closed".into());
        let status = resp.map(|r| r.status).unwrap_or(0);
        rec.check(
            what,
            "400 or a closed connection, never routed to B",
            observed,
            status != 204 && status != 200,
        );
    }
    // A file whose name carries CRLF: the download's headers stay intact.
    let name = "/workspace/evil\r\nX-Injected: yes\r\n.txt";
    let up = upload(&server, &a.headers(), name, "payload");
    let down = Req::new("GET", &format!("/files?path={}&username=root", qenc(name)))
        .headers(&a.headers())
        .send(server.port);
    rec.check(
        "download a file named with CRLF and a header (response splitting)",
        "no injected header",
        format!(
            "upload {}, download {} content-disposition {:?}",
            up.status,
            down.status,
            down.header("content-disposition")
        ),
        down.header("x-injected").is_none(),
    );
    let q = Req::new(
        "GET",
        "/files?path=/workspace/x%0d%0aX-Injected:%20yes&username=root",
    )
    .headers(&a.headers())
    .send(server.port);
    rec.check(
        "CRLF in the path query parameter",
        "no injected header",
        q.brief(),
        q.header("x-injected").is_none(),
    );
    rec.check(
        "the server after the header attacks",
        "healthy",
        format!("{}", server_healthy(&server)),
        server_healthy(&server),
    );
    server.shutdown_and_check_clean();
    rec.finish();
}

/// Signed file URLs (`upload_url`/`download_url`) are capabilities for one
/// path, one operation and one user. Replays for anything else must fail.
///
/// Found by this suite and fixed (the server now refuses repeated names,
/// forwards a query rebuilt from the signed values only, strips the
/// caller's credentials and saturates the expiry): the server checked the signature against the *first*
/// `path` and `username` query parameters (`query_pairs(...).find`) while
/// the agent acts on the *last* (`parse_query` collects into a HashMap).
/// Appending `&path=/root/secret&username=root` to any signed download URL
/// reads any file of that sandbox as root; the same on an upload URL writes
/// any file as root. And a URL signed without `username` lets the agent
/// take the user from an `Authorization: Basic` header the URL's holder
/// adds, so it acts as root. Also: `signature_expiration` is multiplied by
/// 1000 unchecked, so a huge value overflows (a panic in debug builds,
/// which drops the connection).
#[test]
fn signed_file_urls_cannot_be_widened() {
    let mut rec = Recorder::new("e2b", "signed_file_urls_cannot_be_widened");
    let server = Server::start();
    let sb = e2b_create(&server, None);
    let other = e2b_create(&server, None);
    let secret = format!("root-only-{}", crate::common::attack::random_hex(6));
    upload(&server, &sb.headers(), "/root/secret.txt", &secret);
    server.ok(
        "sandbox.v1.exec",
        json!({"id": sb.id, "cmd": "chmod 600 /root/secret.txt; echo public > /home/user/public.txt", "user": "root"}),
    );
    let sign = |path: &str, op: &str, user: &str, exp: Option<u64>| {
        file_signature(path, op, user, &sb.envd_token, exp)
    };
    let public = "/home/user/public.txt";
    let url = |path: &str, user: Option<&str>, sig: &str| {
        let mut q = format!("/files?path={}", qenc(path));
        if let Some(u) = user {
            q.push_str(&format!("&username={}", qenc(u)));
        }
        q.push_str(&format!("&signature={}", qenc(sig)));
        q
    };
    let read_sig = sign(public, "read", "user", None);
    let legit = Req::new("GET", &url(public, Some("user"), &read_sig)).send(server.port);
    assert_eq!(
        legit.text().trim(),
        "public",
        "the legitimate URL must work: {}",
        legit.brief()
    );
    let leaked = |r: &Resp| r.text().contains(&secret);
    let cases: Vec<(&str, Req)> = vec![
        (
            "replay a read URL for another path",
            Req::new("GET", &url("/root/secret.txt", Some("user"), &read_sig)),
        ),
        (
            "replay a read URL for another user",
            Req::new("GET", &url(public, Some("root"), &read_sig)),
        ),
        (
            "replay a read URL with a second path parameter",
            Req::new(
                "GET",
                &format!(
                    "{}&path={}",
                    url(public, Some("user"), &read_sig),
                    qenc("/root/secret.txt")
                ),
            ),
        ),
        (
            "replay a read URL with a second path and username",
            Req::new(
                "GET",
                &format!(
                    "{}&path={}&username=root",
                    url(public, Some("user"), &read_sig),
                    qenc("/root/secret.txt")
                ),
            ),
        ),
        (
            "replay a read URL with a percent-encoded second path parameter name",
            Req::new(
                "GET",
                &format!(
                    "{}&pa%74h={}&user%6eame=root",
                    url(public, Some("user"), &read_sig),
                    qenc("/root/secret.txt")
                ),
            ),
        ),
        (
            "a URL signed without a username, plus Authorization: Basic root",
            Req::new(
                "GET",
                &url(
                    "/root/secret.txt",
                    None,
                    &sign("/root/secret.txt", "read", "", None),
                ),
            )
            .header("Authorization", "Basic cm9vdDo="),
        ),
        (
            "replay the signature under the other sandbox's id header",
            Req::new("GET", &url(public, Some("user"), &read_sig))
                .header("E2b-Sandbox-Id", &other.id),
        ),
    ];
    for (what, req) in cases {
        let resp = req.send(server.port);
        rec.check(
            what,
            "401; the root-only file never returned",
            if leaked(&resp) {
                format!("{} returned the root-only file", resp.status)
            } else {
                resp.brief()
            },
            !leaked(&resp) && resp.status != 200,
        );
    }
    // A read URL used to write, and a write URL widened to another file.
    let write_sig = sign("/home/user/upload.txt", "write", "user", None);
    let writes: Vec<(&str, String, &str)> = vec![
        (
            "use a read URL to upload",
            url(public, Some("user"), &read_sig),
            public,
        ),
        (
            "replay a write URL for another path",
            url("/etc/capsule-adv-planted", Some("user"), &write_sig),
            "/etc/capsule-adv-planted",
        ),
        (
            "replay a write URL with a second path and username",
            format!(
                "{}&path={}&username=root",
                url("/home/user/upload.txt", Some("user"), &write_sig),
                qenc("/etc/capsule-adv-planted")
            ),
            "/etc/capsule-adv-planted",
        ),
    ];
    for (what, target, victim_path) in writes {
        let resp = Req::new("POST", &target)
            .header("Content-Type", "application/octet-stream")
            .body(b"planted".to_vec())
            .send(server.port);
        let content = server.rpc(
            "sandbox.v1.readFile",
            json!({"id": sb.id, "path": victim_path, "user": "root"}),
        );
        let planted = content["result"]["content"] == crate::common::b64(b"planted");
        rec.check(
            what,
            "401; the other file untouched",
            format!("{}; {victim_path} overwritten: {planted}", resp.brief()),
            !planted,
        );
    }
    // Expired and malformed expirations.
    let past = 1_000_000_000u64;
    let expired = format!(
        "{}&signature_expiration={past}",
        url(
            public,
            Some("user"),
            &sign(public, "read", "user", Some(past))
        )
    );
    let resp = Req::new("GET", &expired).send(server.port);
    rec.check(
        "an expired signed URL",
        "401",
        resp.brief(),
        resp.status == 401,
    );
    let stripped = url(
        public,
        Some("user"),
        &sign(public, "read", "user", Some(past)),
    );
    let resp = Req::new("GET", &stripped).send(server.port);
    rec.check(
        "an expiring URL with its expiration removed",
        "401",
        resp.brief(),
        resp.status == 401,
    );
    for exp in ["9223372036854775807", "-1", "1e30", "99999999999999999999"] {
        let target = format!(
            "{}&signature_expiration={exp}",
            url(public, Some("user"), &read_sig)
        );
        let resp = Req::new("GET", &target).send(server.port);
        rec.check(
            &format!("signature_expiration={exp}"),
            "401 with a message, the connection answered",
            resp.brief(),
            resp.status == 401,
        );
    }
    rec.check(
        "the server after the signed URL attacks",
        "healthy",
        format!("{}", server_healthy(&server)),
        server_healthy(&server),
    );
    server.shutdown_and_check_clean();
    rec.finish();
}

#[test]
fn api_keys_guard_every_control_door() {
    let mut rec = Recorder::new("e2b", "api_keys_guard_every_control_door");
    let key = "e2b_adversarial_0123456789abcdef";
    let server = Server::start_with(&["--api-keys", key]);
    let sb: E2bSandbox = e2b_create(&server, Some(key));
    let rpc = json!({"jsonrpc": "2.0", "id": 1, "method": "sandbox.v1.list", "params": {}});
    let cases: Vec<(&str, Req)> = vec![
        (
            "JSON-RPC without a key",
            Req::new("POST", "/rpc").json(&rpc),
        ),
        (
            "JSON-RPC with a wrong key",
            Req::new("POST", "/rpc")
                .header("X-API-Key", "e2b_wrong")
                .json(&rpc),
        ),
        (
            "JSON-RPC with the key's prefix",
            Req::new("POST", "/rpc")
                .header("X-API-Key", &key[..key.len() - 1])
                .json(&rpc),
        ),
        (
            "JSON-RPC with two X-API-Key headers (wrong first)",
            Req::new("POST", "/rpc")
                .header("X-API-Key", "wrong")
                .header("X-API-Key", key)
                .json(&rpc),
        ),
        (
            "JSON-RPC with the key in the query string",
            Req::new("POST", &format!("/rpc?api_key={key}")).json(&rpc),
        ),
        (
            "JSON-RPC with Authorization: Basic <key>",
            Req::new("POST", "/rpc")
                .header("Authorization", &format!("Basic {key}"))
                .json(&rpc),
        ),
        ("E2B list without a key", Req::new("GET", "/v2/sandboxes")),
        (
            "E2B detail (reveals the envd token) without a key",
            Req::new("GET", &format!("/sandboxes/{}", sb.id)),
        ),
        (
            "E2B kill without a key",
            Req::new("DELETE", &format!("/sandboxes/{}", sb.id)),
        ),
        (
            "E2B kill with a sandbox's envd token as the key",
            Req::new("DELETE", &format!("/sandboxes/{}", sb.id))
                .header("X-API-Key", &sb.envd_token),
        ),
        (
            "E2B create with the key after another word",
            Req::new("POST", "/sandboxes").header("X-API-Key", &format!("x {key}")),
        ),
        (
            "terminal without a key",
            Req::new("GET", &format!("/terminal/{}", sb.id)),
        ),
        (
            "MCP without a key",
            Req::new("POST", "/mcp")
                .header("Accept", "application/json, text/event-stream")
                .json(
                    &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "x", "version": "0"}}}),
                ),
        ),
        (
            "in-sandbox traffic with neither the sandbox's token nor a key",
            Req::new("GET", "/files?path=/etc/hostname").header("E2b-Sandbox-Id", &sb.id),
        ),
    ];
    for (what, req) in cases {
        let resp = req.send(server.port);
        rec.check(
            what,
            "401",
            resp.brief(),
            resp.status == 401 || resp.status == 400,
        );
    }
    // Still running after the kill attempts.
    let list = Req::new("GET", "/v2/sandboxes")
        .header("X-API-Key", key)
        .send(server.port);
    rec.check(
        "the sandbox after unauthenticated kill attempts",
        "still listed",
        list.brief(),
        list.text().contains(&sb.id),
    );
    let resp = Req::new("DELETE", &format!("/sandboxes/{}", sb.id))
        .header("X-API-Key", key)
        .send(server.port);
    assert_eq!(resp.status, 204, "{}", resp.brief());
    stop_and_check_clean(server);
    rec.finish();
}

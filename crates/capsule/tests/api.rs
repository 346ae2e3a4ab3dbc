//! The JSON-RPC API against a real server and real sandboxes: the seed's
//! examples exactly as printed, every method, and every kind of bad input.

mod common;

use std::time::Duration;

use common::{Server, b64, unb64};
use serde_json::{Value, json};

fn is_rfc3339_utc(s: &str) -> bool {
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[test]
fn the_seed_api_reference_works_as_printed() {
    let server = Server::start();
    // sandbox.v1.create, as printed.
    let (status, resp) = server.post_rpc_raw(
        br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.create","params":{"template":"python","ttl_ms":600000}}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(resp["jsonrpc"], "2.0");
    assert_eq!(resp["id"], 1);
    let result = &resp["result"];
    let keys: Vec<&str> = result
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["id", "template", "created_at", "expires_at"]);
    let id = result["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 8);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(result["template"], "python");
    assert!(
        is_rfc3339_utc(result["created_at"].as_str().unwrap()),
        "{result}"
    );
    assert!(
        is_rfc3339_utc(result["expires_at"].as_str().unwrap()),
        "{result}"
    );

    // sandbox.v1.exec, as printed.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"sandbox.v1.exec","params":{{"id":"{id}","cmd":["python3","-c","print('hello')"],"timeout_ms":30000}}}}"#
    );
    let (_, resp) = server.post_rpc_raw(body.as_bytes());
    assert_eq!(resp["id"], 2);
    let r = &resp["result"];
    assert_eq!(r["stdout"], "hello\n");
    assert_eq!(r["stderr"], "");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["timed_out"], false);
    assert!(r["duration_ms"].is_u64());

    // sandbox.v1.writeFile and readFile, as printed.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"sandbox.v1.writeFile","params":{{"id":"{id}","path":"/workspace/app.py","content":"cHJpbnQoJ2hlbGxvJyk="}}}}"#
    );
    let (_, resp) = server.post_rpc_raw(body.as_bytes());
    assert_eq!(
        resp["result"],
        json!({"path": "/workspace/app.py", "size": 14})
    );
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"sandbox.v1.readFile","params":{{"id":"{id}","path":"/workspace/app.py"}}}}"#
    );
    let (_, resp) = server.post_rpc_raw(body.as_bytes());
    assert_eq!(resp["result"]["content"], "cHJpbnQoJ2hlbGxvJyk=");
    assert_eq!(resp["result"]["size"], 14);
    // The file is really there for code in the sandbox.
    let out = server.exec(&id, json!(["python3", "/workspace/app.py"]));
    assert_eq!(out["stdout"], "hello\n");

    // sandbox.v1.listDir, as printed.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"sandbox.v1.listDir","params":{{"id":"{id}","path":"/workspace"}}}}"#
    );
    let (_, resp) = server.post_rpc_raw(body.as_bytes());
    let entries = resp["result"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "app.py");
    assert_eq!(entries[0]["path"], "/workspace/app.py");
    assert_eq!(entries[0]["type"], "file");
    assert_eq!(entries[0]["size"], 14);
    assert_eq!(entries[0]["mode"], 0o644);

    // sandbox.v1.delete, as printed.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":6,"method":"sandbox.v1.delete","params":{{"id":"{id}"}}}}"#
    );
    let (_, resp) = server.post_rpc_raw(body.as_bytes());
    assert_eq!(resp["result"], json!({"deleted": true}));
    let e = server.err("sandbox.v1.get", json!({"id": id}));
    assert_eq!(e["code"], -32001);
    assert_eq!(e["data"]["kind"], "sandbox_not_found");
    assert!(e["message"].as_str().unwrap().contains(&id));
    server.shutdown_and_check_clean();
}

#[test]
fn get_list_set_timeout_and_templates() {
    let server = Server::start();
    let a = server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "ttl_ms": 60000, "cpu": 0.5, "memory_mb": 128, "metadata": {"team": "red", "run": "1"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = server.ok(
        "sandbox.v1.create",
        json!({"template": "python", "metadata": {"team": "blue"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = server.ok("sandbox.v1.get", json!({"id": a}));
    assert_eq!(info["id"], a.as_str());
    assert_eq!(info["template"], "base");
    assert_eq!(info["state"], "running");
    assert_eq!(info["cpu"], 0.5);
    assert_eq!(info["memory_mb"], 128);
    assert_eq!(info["metadata"], json!({"run": "1", "team": "red"}));

    let all = server.ok("sandbox.v1.list", json!({}));
    let ids: Vec<&str> = all["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{all}"
    );
    let red = server.ok("sandbox.v1.list", json!({"metadata": {"team": "red"}}));
    assert_eq!(red["sandboxes"].as_array().unwrap().len(), 1);
    assert_eq!(red["sandboxes"][0]["id"], a.as_str());
    let none = server.ok(
        "sandbox.v1.list",
        json!({"metadata": {"team": "red", "run": "2"}}),
    );
    assert!(none["sandboxes"].as_array().unwrap().is_empty());

    let before = info["expires_at"].as_str().unwrap().to_owned();
    let r = server.ok(
        "sandbox.v1.setTimeout",
        json!({"id": a, "ttl_ms": 3_600_000}),
    );
    let after = r["expires_at"].as_str().unwrap();
    assert!(after > before.as_str(), "{before} -> {after}");
    assert_eq!(
        server.ok("sandbox.v1.get", json!({"id": a}))["expires_at"],
        after
    );

    let t = server.ok("sandbox.v1.templates", json!({}));
    let templates = t["templates"].as_array().unwrap();
    for name in ["base", "python", "node"] {
        let entry = templates
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(entry["available"], true, "{entry}");
    }
    let go = templates
        .iter()
        .find(|x| x["name"] == "go")
        .expect("go is listed");
    if go["available"] == false {
        assert!(go["reason"].as_str().unwrap().contains("go"), "{go}");
        let e = server.err("sandbox.v1.create", json!({"template": "go"}));
        assert_eq!(e["data"]["kind"], "template_unavailable");
    }
    server.shutdown_and_check_clean();
}

#[test]
fn run_uses_each_templates_interpreter() {
    let server = Server::start();
    let py = server.create("python");
    let r = server.ok(
        "sandbox.v1.run",
        json!({"id": py, "code": "print(sum(range(10)))"}),
    );
    assert_eq!(r["stdout"], "45\n");
    let r = server.ok(
        "sandbox.v1.run",
        json!({"id": py, "code": "import sys; sys.exit(3)"}),
    );
    assert_eq!(r["exit_code"], 3);
    let r = server.ok("sandbox.v1.run", json!({"id": py, "code": "1/0"}));
    assert_eq!(r["exit_code"], 1);
    assert!(
        r["stderr"].as_str().unwrap().contains("ZeroDivisionError"),
        "{r}"
    );
    let node = server.create("node");
    let r = server.ok(
        "sandbox.v1.run",
        json!({"id": node, "code": "console.log(6*7)"}),
    );
    assert_eq!(r["stdout"], "42\n");
    let base = server.create("base");
    let r = server.ok(
        "sandbox.v1.run",
        json!({"id": base, "code": "echo $((2+3))"}),
    );
    assert_eq!(r["stdout"], "5\n");
    server.shutdown_and_check_clean();
}

#[test]
fn exec_semantics() {
    let server = Server::start_with(&["--output-limit", "1000"]);
    let id = server.create("base");
    // argv is passed as is; a string goes through /bin/sh -c.
    assert_eq!(
        server.exec(&id, json!(["printf", "%s|", "a b", "$HOME"]))["stdout"],
        "a b|$HOME|"
    );
    assert_eq!(
        server.exec(&id, json!("echo $HOME; pwd"))["stdout"],
        "/home/user\n/workspace\n"
    );
    // env, cwd, stdin, user.
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "echo $GREETING; pwd; cat", "env": {"GREETING": "hi"}, "cwd": "/tmp", "stdin": "from stdin"}),
    );
    assert_eq!(r["stdout"], "hi\n/tmp\nfrom stdin");
    assert_eq!(server.exec(&id, json!(["id", "-u"]))["stdout"], "1000\n");
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": ["id", "-u"], "user": "root"}),
    );
    assert_eq!(r["stdout"], "0\n");
    // Exit codes and signals.
    let r = server.exec(&id, json!("echo out; echo err >&2; exit 7"));
    assert_eq!(
        (
            r["exit_code"].as_i64(),
            r["stdout"].as_str(),
            r["stderr"].as_str()
        ),
        (Some(7), Some("out\n"), Some("err\n"))
    );
    let r = server.exec(&id, json!("kill -9 $$"));
    assert_eq!(r["exit_code"], -1);
    assert_eq!(r["signal"], 9);
    // A missing program answers like a shell would.
    let r = server.exec(&id, json!(["no-such-program"]));
    assert_eq!(r["exit_code"], 127);
    assert!(
        r["stderr"].as_str().unwrap().contains("no-such-program"),
        "{r}"
    );
    // Timeouts kill the whole tree and keep what was printed.
    let started = std::time::Instant::now();
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": "echo before; (setsid sh -c 'sleep 60' &); sleep 60", "timeout_ms": 500}),
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["stdout"], "before\n");
    let left = server.exec(&id, json!("ps -eo comm= | grep -c '^sleep$' || true"));
    assert_eq!(
        left["stdout"], "0\n",
        "a sleep of the timed-out tree survived"
    );
    // Output is capped per stream with a flag.
    let r = server.exec(
        &id,
        json!("head -c 5000 /dev/zero | tr '\\0' a; head -c 10 /dev/zero | tr '\\0' b >&2"),
    );
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(r["stdout_truncated"], true);
    assert_eq!(r["stderr"], "bbbbbbbbbb");
    assert_eq!(r["stderr_truncated"], false);
    // Invalid UTF-8 is replaced, not an error.
    let r = server.exec(&id, json!("printf 'a\\377b'"));
    assert_eq!(r["stdout"], "a\u{FFFD}b");
    server.shutdown_and_check_clean();
}

#[test]
fn files_beyond_the_seed() {
    let server = Server::start();
    let id = server.create("base");
    // Relative paths land in /workspace; modes as octal strings; parents are made.
    let r = server.ok(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "deep/er/run.sh", "content": b64(b"#!/bin/sh\necho ran\n"), "mode": "0755"}),
    );
    assert_eq!(r["path"], "/workspace/deep/er/run.sh");
    assert_eq!(
        server.exec(&id, json!(["/workspace/deep/er/run.sh"]))["stdout"],
        "ran\n"
    );
    // Binary content round-trips byte for byte.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    server.ok(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "/tmp/bin", "content": b64(&bytes)}),
    );
    let back = server.ok("sandbox.v1.readFile", json!({"id": id, "path": "/tmp/bin"}));
    assert_eq!(unb64(back["content"].as_str().unwrap()), bytes);
    assert_eq!(back["size"], 70_000);
    // Files the API writes belong to the sandbox user.
    assert_eq!(
        server.exec(&id, json!(["stat", "-c", "%U %a", "/tmp/bin"]))["stdout"],
        "user 644\n"
    );
    // Listing reports directories and symlinks.
    server.sh(
        &id,
        "mkdir -p /workspace/d && ln -s /etc/hostname /workspace/link",
    );
    let list = server.ok(
        "sandbox.v1.listDir",
        json!({"id": id, "path": "/workspace"}),
    );
    let kinds: Vec<(String, String)> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(kinds.contains(&("d".into(), "dir".into())), "{kinds:?}");
    assert!(kinds.contains(&("deep".into(), "dir".into())), "{kinds:?}");
    assert!(
        kinds.contains(&("link".into(), "symlink".into())),
        "{kinds:?}"
    );
    // stat, makeDir, remove.
    let st = server.ok(
        "sandbox.v1.stat",
        json!({"id": id, "path": "/workspace/deep/er/run.sh"}),
    );
    assert_eq!(st["entry"]["mode"], 0o755);
    server.ok(
        "sandbox.v1.makeDir",
        json!({"id": id, "path": "newdir/sub"}),
    );
    let e = server.err(
        "sandbox.v1.makeDir",
        json!({"id": id, "path": "newdir/sub"}),
    );
    assert_eq!(e["data"]["kind"], "already_exists");
    server.ok("sandbox.v1.remove", json!({"id": id, "path": "newdir"}));
    let e = server.err("sandbox.v1.stat", json!({"id": id, "path": "newdir"}));
    assert_eq!(e["data"]["kind"], "file_not_found");
    // Errors say which path and why.
    let e = server.err(
        "sandbox.v1.readFile",
        json!({"id": id, "path": "/workspace/nope.txt"}),
    );
    assert_eq!(e["data"]["kind"], "file_not_found");
    assert_eq!(e["data"]["path"], "/workspace/nope.txt");
    let e = server.err(
        "sandbox.v1.readFile",
        json!({"id": id, "path": "/workspace"}),
    );
    assert_eq!(e["data"]["kind"], "is_a_directory");
    let e = server.err(
        "sandbox.v1.listDir",
        json!({"id": id, "path": "/workspace/deep/er/run.sh"}),
    );
    assert_eq!(e["data"]["kind"], "not_a_directory");
    // The unprivileged user cannot write where it may not; root can.
    let e = server.err(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "/etc/motd", "content": b64(b"x")}),
    );
    assert_eq!(e["data"]["kind"], "permission_denied", "{e}");
    server.ok(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "/etc/motd", "content": b64(b"x"), "user": "root"}),
    );
    server.shutdown_and_check_clean();
}

#[test]
fn envelope_errors_use_the_standard_codes() {
    let server = Server::start_with(&["--max-request-bytes", "1048576"]);
    let cases: Vec<(&[u8], i64, &str)> = vec![
        (b"{not json", -32700, "parse_error"),
        (b"[]", -32600, "invalid_request"),
        (b"42", -32600, "invalid_request"),
        (br#"{"id":1,"method":"sandbox.v1.list"}"#, -32600, "invalid_request"),
        (br#"{"jsonrpc":"2.0","id":1,"method":7}"#, -32600, "invalid_request"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.nope"}"#, -32601, "method_not_found"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.get","params":{}}"#, -32602, "invalid_params"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.get","params":{"id":12}}"#, -32602, "invalid_params"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.get","params":{"id":"../../x"}}"#, -32602, "invalid_params"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.create","params":{"tll_ms":5}}"#, -32602, "invalid_params"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.create","params":["python"]}"#, -32602, "invalid_params"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.get","params":{"id":"zzzzzzzz"}}"#, -32001, "sandbox_not_found"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.create","params":{"template":"cobol"}}"#, -32004, "template_not_found"),
    ];
    for (body, code, kind) in cases {
        let (status, resp) = server.post_rpc_raw(body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
        assert_eq!(
            resp["error"]["code"],
            code,
            "{} -> {resp}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(resp["error"]["data"]["kind"], kind, "{resp}");
        assert!(!resp["error"]["message"].as_str().unwrap().is_empty());
    }
    // Messages name the offending value.
    let e = server.err("sandbox.v1.create", json!({"template": "cobol"}));
    assert!(e["message"].as_str().unwrap().contains("cobol"), "{e}");
    let e = server.err("sandbox.v1.create", json!({"ttl_ms": 5}));
    assert!(e["message"].as_str().unwrap().contains('5'), "{e}");
    for bad in [
        json!({"cpu": 0}),
        json!({"cpu": 1000}),
        json!({"memory_mb": 1}),
        json!({"ttl_ms": 999_999_999_999u64}),
        json!({"network": "host"}),
        json!({"env": {"A=B": "x"}}),
    ] {
        let e = server.err("sandbox.v1.create", bad.clone());
        assert!(
            ["invalid_params", "unsupported"].contains(&e["data"]["kind"].as_str().unwrap()),
            "{bad}: {e}"
        );
    }
    // Notifications get no answer; a batch answers each call by id.
    let (status, _) = server.post_rpc_raw(br#"{"jsonrpc":"2.0","method":"sandbox.v1.list"}"#);
    assert_eq!(status, 204);
    let (status, resp) = server.post_rpc_raw(
        br#"[{"jsonrpc":"2.0","id":"a","method":"sandbox.v1.templates"},{"jsonrpc":"2.0","method":"sandbox.v1.list"},{"jsonrpc":"2.0","id":"b","method":"nope"},5]"#,
    );
    assert_eq!(status, 200);
    let items = resp.as_array().unwrap();
    assert_eq!(items.len(), 3, "{resp}");
    assert!(items[0]["result"]["templates"].is_array());
    assert_eq!(items[1]["id"], "b");
    assert_eq!(items[1]["error"]["code"], -32601);
    assert_eq!(items[2]["error"]["code"], -32600);
    // Oversized bodies are refused before they are read whole.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"sandbox.v1.writeFile","params":{{"id":"abcdefgh","path":"x","content":"{}"}}}}"#,
        "A".repeat(2 << 20)
    );
    let (status, resp) = server.post_rpc_raw(huge.as_bytes());
    assert_eq!(status, 413);
    assert_eq!(resp["error"]["data"]["kind"], "payload_too_large", "{resp}");
    // A client that keeps connections alive is told this one is done (the
    // unread rest of the body makes it unusable).
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            huge.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(huge.as_bytes());
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 413"), "{text}");
        assert!(text.contains("connection: close"), "{text}");
    }
    // Invalid base64 names the field.
    let id = server.create("base");
    let e = server.err(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "a", "content": "%%%"}),
    );
    assert_eq!(e["data"]["kind"], "invalid_params");
    assert!(e["message"].as_str().unwrap().contains("content"), "{e}");
    // Bad command shapes.
    for cmd in [json!([]), json!(""), json!([1, 2]), json!({"a": 1})] {
        let e = server.err("sandbox.v1.exec", json!({"id": id, "cmd": cmd}));
        assert_eq!(e["data"]["kind"], "invalid_params", "{cmd}: {e}");
    }
    let e = server.err(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": ["true"], "timeout_ms": 0}),
    );
    assert_eq!(e["data"]["kind"], "invalid_params");
    let e = server.err(
        "sandbox.v1.exec",
        json!({"id": id, "cmd": ["true"], "cwd": "/nope"}),
    );
    assert_eq!(e["data"]["kind"], "invalid_params");
    assert!(e["message"].as_str().unwrap().contains("/nope"), "{e}");
    // The server is still fine after all of it.
    assert_eq!(
        server.exec(&id, json!(["echo", "still fine"]))["stdout"],
        "still fine\n"
    );
    server.shutdown_and_check_clean();
}

#[test]
fn health_reports_version_and_backend() {
    let server = Server::start();
    let (status, body) = common::http(server.port, "GET", "/health", b"").unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["backend"], "native");
    assert!(v["version"].is_string());
    server.shutdown_and_check_clean();
}

#[test]
fn a_refused_remove_leaves_everything_in_place() {
    let server = Server::start();
    let id = server.create("base");
    server.ok(
        "sandbox.v1.writeFile",
        json!({"id": id, "path": "/workspace/keep/me.txt", "content": b64(b"precious")}),
    );
    // The user owns /workspace but not /, so /workspace itself cannot go.
    let e = server.err("sandbox.v1.remove", json!({"id": id, "path": "/workspace"}));
    assert!(e["message"].as_str().unwrap().contains("/workspace"), "{e}");
    let back = server.ok(
        "sandbox.v1.readFile",
        json!({"id": id, "path": "/workspace/keep/me.txt"}),
    );
    assert_eq!(unb64(back["content"].as_str().unwrap()), b"precious");
    // What the user may remove goes, contents and all.
    server.ok(
        "sandbox.v1.remove",
        json!({"id": id, "path": "/workspace/keep"}),
    );
    let list = server.ok(
        "sandbox.v1.listDir",
        json!({"id": id, "path": "/workspace"}),
    );
    assert_eq!(list["entries"], json!([]), "{list}");
    let hidden = server.exec(&id, json!(["ls", "-A", "/workspace"]));
    assert_eq!(hidden["stdout"], "", "nothing is left behind: {hidden}");
    server.shutdown_and_check_clean();
}

#[test]
fn run_code_keeps_state_per_language() {
    let server = Server::start();
    let id = server.create("python");
    let r = server.ok(
        "sandbox.v1.runCode",
        json!({"id": id, "code": "import math\nx = 41\nprint('set')"}),
    );
    assert_eq!(r["stdout"], "set\n", "{r}");
    assert_eq!(r["results"], json!([]), "{r}");
    let r = server.ok(
        "sandbox.v1.runCode",
        json!({"id": id, "code": "x + math.floor(1.5)"}),
    );
    assert_eq!(r["results"][0]["text"], "42", "{r}");
    assert_eq!(r["results"][0]["is_main_result"], true, "{r}");
    assert_eq!(r["execution_count"], 2, "{r}");
    assert!(r.get("error").is_none(), "{r}");
    // Errors come back as data, not as a failed call.
    let r = server.ok("sandbox.v1.runCode", json!({"id": id, "code": "1/0"}));
    assert_eq!(r["error"]["name"], "ZeroDivisionError", "{r}");
    assert!(
        r["error"]["traceback"].as_str().unwrap().contains("1/0"),
        "{r}"
    );
    // JavaScript has its own state; env applies to one run.
    server.ok(
        "sandbox.v1.runCode",
        json!({"id": id, "language": "javascript", "code": "let n = 6"}),
    );
    let r = server.ok(
        "sandbox.v1.runCode",
        json!({"id": id, "language": "javascript", "code": "n * Number(process.env.M)", "env": {"M": "7"}}),
    );
    assert_eq!(r["results"][0]["text"], "42", "{r}");
    // A run past its timeout is interrupted; the state survives.
    let r = server.ok(
        "sandbox.v1.runCode",
        json!({"id": id, "code": "import time\ntime.sleep(30)", "timeout_ms": 1000}),
    );
    assert_eq!(r["timed_out"], true, "{r}");
    let r = server.ok("sandbox.v1.runCode", json!({"id": id, "code": "x"}));
    assert_eq!(r["results"][0]["text"], "41", "{r}");
    // Bad input names what is wrong.
    let e = server.err(
        "sandbox.v1.runCode",
        json!({"id": id, "language": "cobol", "code": "1"}),
    );
    assert_eq!(e["data"]["kind"], "invalid_params", "{e}");
    assert!(e["message"].as_str().unwrap().contains("cobol"), "{e}");
    let e = server.err(
        "sandbox.v1.runCode",
        json!({"id": id, "context_id": "nosuchcontext", "code": "1"}),
    );
    assert_eq!(e["data"]["kind"], "invalid_params", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("nosuchcontext"),
        "{e}"
    );
    server.shutdown_and_check_clean();
}

//! Egress networking through the real server with real sandboxes: the
//! "internet" is an HTTP server on 198.51.100.1 (TEST-NET-2) inside a
//! network namespace this test makes, reached from the host over a veth
//! pair. Needs root (it builds that namespace, and egress needs a root
//! server).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::Command;

use common::{Server, eventually, is_root};
use serde_json::{Value, json};

const UPSTREAM: &str = "198.51.100.1";
const SECRET: &str = "sk-capsule-test-5b1e0c9d";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's own network namespace and veth pair, removed on drop (also
/// when an assertion fails).
struct Upstream {
    netns: String,
    host_if: String,
}

impl Upstream {
    fn create() -> Self {
        let pid = std::process::id();
        let up = Upstream {
            netns: format!("capsule-egress-test-{pid}"),
            host_if: format!("ceg{pid}h"),
        };
        let peer = format!("ceg{pid}n");
        ip(&["netns", "add", &up.netns]);
        ip(&[
            "link",
            "add",
            &up.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &up.netns]);
        ip(&["addr", "add", "198.51.100.2/24", "dev", &up.host_if]);
        ip(&["link", "set", &up.host_if, "up"]);
        ip(&[
            "-n",
            &up.netns,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            &peer,
        ]);
        ip(&["-n", &up.netns, "link", "set", &peer, "up"]);
        ip(&["-n", &up.netns, "link", "set", "lo", "up"]);
        up
    }

    /// An HTTP server on 198.51.100.1:80 inside the namespace that answers
    /// every request with its request line and headers.
    fn serve_echo(&self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.netns)).unwrap();
        let listener = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open namespace fd.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind((UPSTREAM, 80)).unwrap()
        })
        .join()
        .unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let body = format!("upstream says hello\n{head}");
                    let _ = (&stream).write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                });
            }
        });
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Whether the server process holds the socket with this inode.
fn server_holds_socket(server: &Server, inode: &str) -> bool {
    let state = server.state.to_string_lossy().into_owned();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("serve") && cmd.contains(&state) && !cmd.contains("__sandbox")
        })
        .expect("the server process");
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == wanted))
}

/// The inode of the proxy's listening socket, as the sandbox sees it
/// (127.0.0.1:3128 in state LISTEN in its own /proc/net/tcp).
fn proxy_listener_inode(server: &Server, id: &str) -> String {
    let r = server.sh(
        id,
        "awk '$2 == \"0100007F:0C38\" && $4 == \"0A\" {print $10}' /proc/net/tcp",
    );
    let inode = r["stdout"].as_str().unwrap_or_default().trim().to_owned();
    assert!(!inode.is_empty(), "no proxy listener in the sandbox: {r}");
    inode
}

fn create(server: &Server, network: Value) -> String {
    server.ok(
        "sandbox.v1.create",
        json!({"template": "base", "network": network}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// curl in the sandbox; (exit code, stdout).
fn curl(server: &Server, id: &str, args: &str) -> (i64, String) {
    let r = server.sh(id, &format!("curl -sS -m 10 {args} 2>&1"));
    (
        r["exit_code"].as_i64().unwrap_or(-1),
        r["stdout"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn egress_reaches_only_the_allow_list_and_keeps_secrets_outside() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let upstream = Upstream::create();
    upstream.serve_echo();
    let mut server = Server::start();

    // Loopback only: no route out, and no proxy to talk to.
    let none = create(&server, json!("none"));
    let (code, out) = curl(&server, &none, &format!("--noproxy '*' http://{UPSTREAM}/"));
    assert_ne!(code, 0, "a sandbox without network reached upstream: {out}");
    let (code, out) = curl(
        &server,
        &none,
        &format!("-x http://127.0.0.1:3128 http://{UPSTREAM}/"),
    );
    assert_ne!(code, 0, "a sandbox without network has a proxy: {out}");

    // A host loopback service, allow-listed, still out of reach.
    let host_service = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let id = create(
        &server,
        json!({
            "mode": "egress",
            "allow": ["198.51.100.0/24", "127.0.0.0/8", "169.254.0.0/16"],
            "secrets": [{"host": UPSTREAM, "header": "X-Api-Key", "value": SECRET}],
        }),
    );
    let (code, out) = curl(
        &server,
        &id,
        &format!("-H 'X-Api-Key: forged' http://{UPSTREAM}/hi"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream says hello"), "{out}");
    assert!(out.contains("GET /hi HTTP/1.1"), "{out}");
    // The proxy put the secret in and dropped the sandbox's own value.
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("x-api-key: {}", SECRET.to_ascii_lowercase())),
        "{out}"
    );
    assert!(!out.contains("forged"), "{out}");
    // No direct route, proxy or not.
    let (code, out) = curl(&server, &id, &format!("--noproxy '*' http://{UPSTREAM}/"));
    assert_ne!(code, 0, "reached upstream around the proxy: {out}");
    // CONNECT tunnels to allowed destinations (plain bytes here).
    let (code, out) = curl(&server, &id, &format!("-p http://{UPSTREAM}/tunnel"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("GET /tunnel"), "{out}");
    assert!(!out.contains(SECRET), "a secret went into a tunnel: {out}");

    for (url, needle) in [
        (
            "http://203.0.113.9/".to_owned(),
            "not in this sandbox's network allow-list",
        ),
        (format!("http://127.0.0.1:{host_port}/"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local",
        ),
        ("http://198.51.100.2/".to_owned(), "an address of this host"),
    ] {
        // curl honours NO_PROXY for 127.0.0.1; the point is what the proxy does.
        let (_, out) = curl(&server, &id, &format!("--noproxy '' -i {url}"));
        assert!(out.contains("403"), "{url}: {out}");
        assert!(out.contains(needle), "{url}: {out}");
    }
    let (code, out) = curl(&server, &id, "-p http://203.0.113.9/");
    assert_ne!(code, 0, "CONNECT to a host off the list: {out}");
    assert!(out.contains("403"), "{out}");

    // The secret is nowhere the sandbox can look.
    // The script names the secret in two halves, so that its own command
    // line does not hold it.
    let (head, tail) = SECRET.split_at(8);
    // As the sandbox's root, which can read every process's environment.
    let r = server.ok(
        "sandbox.v1.exec",
        json!({"id": id, "user": "root", "cmd": format!(
            "env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'; \
             a='{head}'; b='{tail}'; grep -rsq \"$a$b\" /etc /tmp /run /var /home /workspace /root 2>/dev/null \
             && echo FOUND-IN\"-A-\"FILE; true"
        )}),
    );
    let seen = format!("{}{}", r["stdout"], r["stderr"]);
    assert!(
        !seen.contains(SECRET) && !seen.contains("FOUND-IN-A-FILE"),
        "the secret is visible inside: {seen}"
    );
    assert!(seen.contains("HTTP_PROXY=http://127.0.0.1:3128"), "{seen}");
    let info = server.ok("sandbox.v1.get", json!({"id": id}));
    assert!(!info.to_string().contains(SECRET), "{info}");
    let list = server.ok("sandbox.v1.list", json!({}));
    assert!(!list.to_string().contains(SECRET), "{list}");

    // An empty allow-list allows nothing.
    let closed = create(&server, json!("egress"));
    let (_, out) = curl(&server, &closed, &format!("-i http://{UPSTREAM}/"));
    assert!(out.contains("403"), "{out}");

    // A restarted server serves the proxy again.
    server.restart();
    let (code, out) = curl(&server, &id, &format!("http://{UPSTREAM}/again"));
    assert_eq!(code, 0, "{out}\n{}", server.log_text());
    assert!(out.contains(SECRET), "{out}");

    assert!(
        !server.log_text().contains(SECRET),
        "the secret is in the log"
    );
    // Deleting egress sandboxes closes their proxies' listeners (which
    // would otherwise keep the sandboxes' network namespaces alive).
    let listeners = [
        proxy_listener_inode(&server, &id),
        proxy_listener_inode(&server, &closed),
    ];
    for inode in &listeners {
        assert!(server_holds_socket(&server, inode), "{inode}");
    }
    server.ok("sandbox.v1.delete", json!({"id": id}));
    server.ok("sandbox.v1.delete", json!({"id": closed}));
    for inode in &listeners {
        assert!(
            eventually(std::time::Duration::from_secs(5), || {
                !server_holds_socket(&server, inode)
            }),
            "the proxy listener {inode} outlived its sandbox"
        );
    }
    drop(host_service);
    server.shutdown_and_check_clean();
    drop(upstream);
}

#[test]
fn bad_network_settings_name_the_offending_entry() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let server = Server::start();
    for (network, needle) in [
        (
            json!({"mode": "egress", "allow": ["ok.example", "exa mple.com"]}),
            "\"exa mple.com\"",
        ),
        (
            json!({"mode": "egress", "allow": ["10.0.0.1/8"]}),
            "\"10.0.0.1/8\"",
        ),
        (json!({"mode": "egress", "allow": ["*"]}), "\"*\""),
        (
            json!({"mode": "egress", "allow": ["a.example"],
                   "secrets": [{"host": "b.example", "header": "X-K", "value": "v"}]}),
            "network.secrets[0].host",
        ),
        (
            json!({"mode": "egress", "allow": ["a.example"],
                   "secrets": [{"host": "a.example", "header": "X-K", "value": ""}]}),
            "network.secrets[0].value",
        ),
        (json!({"mode": "none", "allow": ["a.example"]}), "egress"),
    ] {
        let e = server.err(
            "sandbox.v1.create",
            json!({"template": "base", "network": network}),
        );
        assert_eq!(e["data"]["kind"], "invalid_params", "{network}: {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{network}: {message}");
    }
    let e = server.err(
        "sandbox.v1.create",
        json!({"template": "base", "network": "bridge"}),
    );
    assert_eq!(e["data"]["kind"], "unsupported", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"bridge\""),
        "{e}"
    );
    server.shutdown_and_check_clean();
}

#[test]
fn a_rootless_server_refuses_egress_plainly() {
    let user = common::test_user();
    let exists = Command::new("id")
        .arg(&user)
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root() || !exists {
        eprintln!("skipped: needs root and the user {user}");
        return;
    }
    let server = Server::start_as(&user, &[]);
    let e = server.err(
        "sandbox.v1.create",
        json!({"template": "base", "network": {"mode": "egress", "allow": ["198.51.100.0/24"]}}),
    );
    assert_eq!(e["data"]["kind"], "unsupported", "{e}");
    assert!(
        e["message"].as_str().unwrap_or_default().contains("root"),
        "{e}"
    );
    // Nothing was started for the refused create.
    assert!(
        server.sandbox_dirs().is_empty(),
        "{:?}",
        server.sandbox_dirs()
    );
    server.shutdown_and_check_clean();
}

//! Network attacks: sandboxes have network "none", a loopback of their
//! own and nothing else. Only 127.0.0.0/8 listeners of this test and
//! addresses inside the sandboxes' own namespaces are targeted (the host's
//! other addresses and 169.254.169.254 only from inside, where no route
//! leads anywhere).

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use serde_json::json;

use crate::common::Server;
use crate::common::attack::{Recorder, host_addresses, probe, record_probe};

const EGRESS_PROBE: &str = r#"
def tcp(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "connected"
    finally:
        s.close()
for what, host, port, fam in [
    ("the host's loopback listener", "127.0.0.1", P["tcp"], socket.AF_INET),
    ("the host's loopback listener through 127.0.0.2", "127.0.0.2", P["tcp"], socket.AF_INET),
    ("the host's loopback listener over IPv6 (::1)", "::1", P["tcp"], socket.AF_INET6),
    ("the Capsule server's own port", "127.0.0.1", P["server"], socket.AF_INET),
    ("the cloud metadata service 169.254.169.254:80", "169.254.169.254", 80, socket.AF_INET),
]:
    ok, out = tryit(lambda h=host, p=port, f=fam: tcp(h, p, f))
    row(f"TCP connect to {what}", "refused or unreachable", out, ok)
for addr in P["host_addrs"]:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ok, out = tryit(lambda a=addr, f=fam: tcp(a, P["tcp"], f))
    row(f"TCP connect to the host's address {addr}", "unreachable", out, ok)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ok, out = tryit(lambda: u.sendto(b"capsule-adv-udp", ("127.0.0.1", P["udp"])))
row("UDP to the host's loopback socket", "never arrives (checked on the host)", out if not ok else "sent locally", False)
ok, out = tryit(lambda: socket.getaddrinfo("example.com", 80))
row("resolve a public name (DNS)", "fails: no resolver reachable", out if not ok else f"resolved {out[0][4]}", ok)
for what, args in [("a raw IPv4 socket", (socket.AF_INET, socket.SOCK_RAW, 1)),
                   ("a packet socket", (17, socket.SOCK_RAW, 0))]:
    ok, out = tryit(lambda a=args: socket.socket(*a))
    row(f"open {what}", "EPERM (no CAP_NET_RAW)", out if not ok else "opened", ok)
ok, out = tryit(lambda: rd("/proc/net/dev").splitlines()[2:])
ifaces = [l.split(":")[0].strip() for l in out] if ok else []
row("find a network interface besides loopback", "only lo", ifaces, ifaces != ["lo"])
ok, out = tryit(lambda: rd("/proc/net/route").splitlines()[1:])
row("find a route out (/proc/net/route)", "no routes", out if ok else out, ok and len(out) > 0)
import subprocess
for what, cmd in [("add a network interface", ["ip", "link", "add", "adv0", "type", "dummy"]),
                  ("add a default route", ["ip", "route", "add", "default", "dev", "lo"])]:
    ok, out = tryit(lambda c=cmd: subprocess.run(c, capture_output=True, text=True, timeout=5))
    row(what, "refused (no CAP_NET_ADMIN)", (out.stderr.strip() or f"rc {out.returncode}") if ok else out, ok and out.returncode == 0)
"#;

#[test]
fn nothing_leaves_the_network_namespace() {
    let mut rec = Recorder::new("network", "nothing_leaves_the_network_namespace");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let server = Server::start();
    let id = server.create("python");
    let params = json!({
        "tcp": tcp.local_addr().unwrap().port(),
        "udp": udp.local_addr().unwrap().port(),
        "server": server.port,
        "host_addrs": host_addresses(),
    });
    for user in ["root", "user"] {
        let rows = probe(&server, &id, user, &params, EGRESS_PROBE);
        record_probe(&mut rec, user, &rows);
    }
    let accepted = tcp.accept().is_ok();
    rec.check(
        "any sandbox connection reaches the host's TCP listener",
        "none accepted",
        format!("accepted: {accepted}"),
        !accepted,
    );
    let mut buf = [0u8; 64];
    let got = udp.recv_from(&mut buf).is_ok();
    rec.check(
        "any sandbox datagram reaches the host's UDP socket",
        "none received",
        format!("received: {got}"),
        !got,
    );
    server.shutdown_and_check_clean();
    rec.finish();
}

#[test]
fn sandboxes_share_no_network() {
    let mut rec = Recorder::new("network", "sandboxes_share_no_network");
    let server = Server::start();
    let a = server.create("python");
    let b = server.create("python");
    // B serves on its loopback, TCP and an abstract unix socket.
    server.ok(
        "sandbox.v1.exec",
        json!({"id": b, "timeout_ms": 10000, "cmd": ["python3", "-c",
            "import socket,os,time\n\
             t=socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('127.0.0.1', 7777)); t.listen()\n\
             u=socket.socket(socket.AF_UNIX); u.bind(b'\\0capsule-adv-b'); u.listen()\n\
             if os.fork()==0:\n    os.setsid()\n    time.sleep(120)\n    os._exit(0)\n"]}),
    );
    let check_b = server.ok(
        "sandbox.v1.exec",
        json!({"id": b, "cmd": ["python3", "-c",
            "import socket\ns=socket.socket(); s.settimeout(2); print(s.connect_ex(('127.0.0.1', 7777)))"]}),
    );
    assert_eq!(
        check_b["stdout"], "0\n",
        "B's own listener must work: {check_b}"
    );
    let probe_a = r#"
s = socket.socket(); s.settimeout(2)
ok, out = tryit(lambda: s.connect(("127.0.0.1", 7777)))
row("TCP connect to the neighbour's loopback listener (127.0.0.1:7777)", "refused: each sandbox has its own loopback", out if not ok else "connected", ok)
u = socket.socket(socket.AF_UNIX)
ok, out = tryit(lambda: u.connect(b"\0capsule-adv-b"))
row("connect to the neighbour's abstract unix socket", "refused", out if not ok else "connected", ok)
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ok, out = tryit(lambda: t.bind(("127.0.0.1", 7777)))
row("the neighbour's port is taken here too (a shared namespace would say so)", "free: bind works", out if not ok else "bound", not ok)
"#;
    for user in ["root", "user"] {
        let rows = probe(&server, &a, user, &json!({}), probe_a);
        record_probe(&mut rec, user, &rows);
    }
    server.shutdown_and_check_clean();
    rec.finish();
}

"""Every method of the blocking client against a real server."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from capsule_server import CapsuleServer
from conftest import OUTPUT_LIMIT

from capsule_sdk import (
    Capsule,
    CapsuleClient,
    ExecResult,
    FileEntry,
    SandboxExpiredError,
    SandboxInfo,
    SandboxNotFoundError,
    TemplateInfo,
    __version__,
)


def test_health(client: CapsuleClient) -> None:
    h = client.health()
    assert h["status"] == "ok"
    assert h["backend"] == "native"
    assert isinstance(h["version"], str)


def test_templates(client: CapsuleClient) -> None:
    templates = {t.name: t for t in client.templates()}
    assert all(isinstance(t, TemplateInfo) for t in templates.values())
    for name, interpreter in [("base", ["sh", "-c"]), ("python", ["python3", "-c"]), ("node", ["node", "-e"])]:
        assert templates[name].available, templates[name]
        assert templates[name].run == interpreter
        assert templates[name].description
    go = templates["go"]
    if not go.available:
        assert go.reason and "go" in go.reason


def test_create_defaults(client: CapsuleClient) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    with client.create() as capsule:
        assert isinstance(capsule, Capsule)
        assert len(capsule.id) == 8 and capsule.id.isalnum()
        assert capsule.template == "base"
        assert capsule.created_at >= before - timedelta(seconds=2)
        # The server's default time to live is 10 minutes.
        assert capsule.expires_at - capsule.created_at == timedelta(minutes=10)
        info = capsule.info()
        assert isinstance(info, SandboxInfo)
        assert (info.id, info.template, info.state) == (capsule.id, "base", "running")
        assert info.memory_mb == 512 and info.cpu == 1.0 and info.metadata == {}
        assert "Capsule(id=" in repr(capsule)


def test_create_with_every_option(client: CapsuleClient) -> None:
    with client.create(
        "python",
        ttl_ms=120_000,
        cpu=0.5,
        memory_mb=256,
        env={"GREETING": "bonjour"},
        metadata={"suite": "py-sdk", "case": "options"},
        network="none",
    ) as capsule:
        assert capsule.template == "python"
        assert capsule.expires_at - capsule.created_at == timedelta(minutes=2)
        info = capsule.info()
        assert info.cpu == 0.5
        assert info.memory_mb == 256
        assert info.metadata == {"suite": "py-sdk", "case": "options"}
        assert capsule.exec("echo $GREETING").stdout == "bonjour\n"


def test_get_and_list(client: CapsuleClient) -> None:
    with client.create(metadata={"team": "red"}) as red, client.create(metadata={"team": "blue"}) as blue:
        again = client.get(red.id)
        assert isinstance(again, Capsule)
        assert (again.id, again.template, again.created_at) == (red.id, red.template, red.created_at)
        # The object from get() is fully usable.
        assert again.exec(["echo", "via get"]).stdout == "via get\n"

        everything = client.list()
        assert {red.id, blue.id} <= {s.id for s in everything}
        assert all(isinstance(s, SandboxInfo) for s in everything)
        only_red = client.list(metadata={"team": "red"})
        assert [s.id for s in only_red] == [red.id]
        assert only_red[0].metadata == {"team": "red"}
        assert only_red[0].state == "running"
        assert client.list(metadata={"team": "red", "other": "x"}) == []


def test_set_timeout(capsule: Capsule) -> None:
    old = capsule.expires_at
    new = capsule.set_timeout(3_600_000)
    assert new == capsule.expires_at
    assert new > old
    assert timedelta(minutes=59) < new - datetime.now(timezone.utc) <= timedelta(minutes=60, seconds=1)
    assert capsule.info().expires_at == new
    # Shortening works too, and the server really enforces it.
    capsule.set_timeout(1_000)
    time.sleep(2.5)
    with pytest.raises(SandboxExpiredError):
        capsule.exec("true")


def test_run_uses_the_template_interpreter(client: CapsuleClient, py_capsule: Capsule) -> None:
    r = py_capsule.run("print(sum(range(10)))")
    assert isinstance(r, ExecResult)
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out, r.ok) == ("45\n", "", 0, False, True)
    assert isinstance(r.duration_ms, int)
    r = py_capsule.run("import sys; sys.exit(3)")
    assert r.exit_code == 3 and not r.ok
    r = py_capsule.run("1/0")
    assert r.exit_code == 1 and "ZeroDivisionError" in r.stderr
    r = py_capsule.run("import os, sys; print(os.environ['X'], sys.stdin.read())", env={"X": "ex"}, stdin="in")
    assert r.stdout == "ex in\n"
    r = py_capsule.run("import time; time.sleep(30)", timeout_ms=300)
    assert r.timed_out and not r.ok
    with client.create("node") as node:
        assert node.run("console.log(6*7)").stdout == "42\n"
    with client.create("base") as base:
        assert base.run("echo $((2+3))").stdout == "5\n"


def test_exec(capsule: Capsule) -> None:
    # argv runs as is; a string goes through /bin/sh -c.
    assert capsule.exec(["printf", "%s|", "a b", "$HOME"]).stdout == "a b|$HOME|"
    assert capsule.exec("echo $HOME; pwd").stdout == "/home/user\n/workspace\n"
    r = capsule.exec("echo $GREETING; pwd; cat", env={"GREETING": "hi"}, cwd="/tmp", stdin="from stdin")
    assert r.stdout == "hi\n/tmp\nfrom stdin"
    assert capsule.exec(["id", "-u"]).stdout == "1000\n"
    assert capsule.exec(["id", "-u"], user="root").stdout == "0\n"
    assert capsule.exec(["id", "-u"], user="user").stdout == "1000\n"
    r = capsule.exec("echo out; echo err >&2; exit 7")
    assert (r.exit_code, r.stdout, r.stderr, r.signal) == (7, "out\n", "err\n", None)
    r = capsule.exec("kill -9 $$")
    assert (r.exit_code, r.signal) == (-1, 9)
    r = capsule.exec(["no-such-program"])
    assert r.exit_code == 127 and "no-such-program" in r.stderr


def test_exec_timeout_keeps_output(capsule: Capsule) -> None:
    started = time.monotonic()
    r = capsule.exec("echo before; sleep 60", timeout_ms=500)
    assert time.monotonic() - started < 20
    assert r.timed_out is True
    assert r.stdout == "before\n"
    assert r.duration_ms >= 500


def test_exec_output_is_capped(capsule: Capsule) -> None:
    r = capsule.exec(f"head -c {OUTPUT_LIMIT * 2} /dev/zero | tr '\\0' a; echo small >&2")
    assert r.stdout_truncated is True
    assert len(r.stdout) == OUTPUT_LIMIT
    assert r.stderr == "small\n" and r.stderr_truncated is False


def test_exec_longer_than_the_client_timeout(server: CapsuleServer) -> None:
    # The client waits for the command's own timeout plus grace, not just its
    # default request timeout.
    with CapsuleClient(server.url, timeout=1.0) as client, client.create() as capsule:
        r = capsule.exec("sleep 2; echo done", timeout_ms=10_000)
        assert r.stdout == "done\n"


def test_files_text_and_bytes(capsule: Capsule) -> None:
    w = capsule.write_file("/workspace/data.txt", "Hello World")
    assert (w.path, w.size) == ("/workspace/data.txt", 11)
    assert capsule.read_file_text("/workspace/data.txt") == "Hello World"
    assert capsule.read_file("/workspace/data.txt") == b"Hello World"
    # Code in the sandbox sees the same file.
    assert capsule.exec(["cat", "/workspace/data.txt"]).stdout == "Hello World"

    # Non-ASCII text is UTF-8; other encodings on request.
    capsule.write_file("unicode.txt", "héllo ☃")
    assert capsule.read_file("unicode.txt") == "héllo ☃".encode()
    capsule.write_file("latin1.txt", "café".encode("latin-1"))
    assert capsule.read_file_text("latin1.txt", encoding="latin-1") == "café"

    # Binary content round-trips byte for byte, through bytes, bytearray and memoryview.
    blob = bytes(range(256)) * 8000  # ~2 MB
    assert capsule.write_file("/tmp/blob.bin", blob).size == len(blob)
    assert capsule.read_file("/tmp/blob.bin") == blob
    capsule.write_file("/tmp/ba.bin", bytearray(b"\x00\xff"))
    capsule.write_file("/tmp/mv.bin", memoryview(b"\x01\x02"))
    assert capsule.read_file("/tmp/ba.bin") == b"\x00\xff"
    assert capsule.read_file("/tmp/mv.bin") == b"\x01\x02"

    # Empty files.
    assert capsule.write_file("empty", b"").size == 0
    assert capsule.read_file("empty") == b""


def test_write_file_modes_paths_and_user(capsule: Capsule) -> None:
    # Relative paths are relative to /workspace; parents are made.
    w = capsule.write_file("deep/er/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    assert w.path == "/workspace/deep/er/run.sh"
    assert capsule.exec(["/workspace/deep/er/run.sh"]).stdout == "ran\n"
    capsule.write_file("secret", "s", mode="0600")
    assert capsule.stat("secret").mode == 0o600
    assert capsule.stat("deep/er/run.sh").mode == 0o755
    assert capsule.exec(["stat", "-c", "%U %a", "/workspace/secret"]).stdout == "user 600\n"
    # root can write where the sandbox user cannot.
    capsule.write_file("/etc/motd", "root was here", user="root")
    assert capsule.read_file_text("/etc/motd", user="root") == "root was here"
    assert capsule.exec(["stat", "-c", "%U", "/etc/motd"]).stdout == "root\n"


def test_list_dir_stat_make_dir_remove(capsule: Capsule) -> None:
    capsule.write_file("a.txt", "12345")
    capsule.exec("mkdir -p /workspace/d && ln -s /etc/hostname /workspace/link")
    entries = {e.name: e for e in capsule.list_dir("/workspace")}
    assert set(entries) == {"a.txt", "d", "link"}
    assert all(isinstance(e, FileEntry) for e in entries.values())
    a = entries["a.txt"]
    assert (a.path, a.type, a.size, a.mode, a.is_file) == ("/workspace/a.txt", "file", 5, 0o644, True)
    assert isinstance(a.modified_at, datetime) and a.modified_at.tzinfo is not None
    assert abs(a.modified_at - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert entries["d"].is_dir and entries["d"].type == "dir"
    link = entries["link"]
    assert link.is_symlink and link.symlink_target == "/etc/hostname"
    # The default path is /workspace, and relative paths work too.
    assert {e.name for e in capsule.list_dir()} == set(entries)
    assert capsule.list_dir("d") == []

    st = capsule.stat("/workspace/a.txt")
    assert st == a or (st.name, st.size, st.type) == ("a.txt", 5, "file")
    made = capsule.make_dir("newdir/sub")
    assert (made.path, made.type) == ("/workspace/newdir/sub", "dir")
    assert capsule.stat("newdir").is_dir
    capsule.write_file("newdir/sub/f", "x")
    capsule.remove("newdir")
    assert "newdir" not in {e.name for e in capsule.list_dir()}
    capsule.remove("a.txt")
    assert capsule.exec("test -e /workspace/a.txt").exit_code == 1


def test_delete(client: CapsuleClient) -> None:
    capsule = client.create()
    capsule.delete()
    with pytest.raises(SandboxNotFoundError) as e:
        client.get(capsule.id)
    assert capsule.id in str(e.value)
    assert capsule.id not in {s.id for s in client.list()}
    # A second delete says so.
    with pytest.raises(SandboxNotFoundError):
        capsule.delete()


def test_context_manager_deletes(client: CapsuleClient, server: CapsuleServer) -> None:
    with client.create("python") as capsule:
        assert capsule.id in server.sandbox_ids()
    assert capsule.id not in server.sandbox_ids()
    with pytest.raises(SandboxNotFoundError):
        capsule.info()


def test_context_manager_deletes_on_error_and_keeps_the_error(client: CapsuleClient, server: CapsuleServer) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with client.create() as capsule:
            raise RuntimeError("boom")
    assert capsule.id not in server.sandbox_ids()


def test_context_manager_tolerates_a_sandbox_already_gone(client: CapsuleClient) -> None:
    with client.create() as capsule:
        capsule.delete()
    with client.create(ttl_ms=1_000) as short:
        time.sleep(2.5)
    with pytest.raises(SandboxExpiredError):
        short.info()


def test_client_context_manager_and_repr(server: CapsuleServer) -> None:
    with CapsuleClient(server.url + "/") as client:
        assert client.base_url == server.url
        assert repr(client) == f"CapsuleClient({server.url!r})"
        assert client.templates()


def test_raw_call_accepts_short_and_full_method_names(client: CapsuleClient) -> None:
    assert "templates" in client.call("templates")
    assert "sandboxes" in client.call("sandbox.v1.list", {})


def test_api_key_is_sent_and_harmless(server: CapsuleServer) -> None:
    # This server does not authenticate; the key must not break anything.
    with CapsuleClient(server.url, api_key="secret-key") as client:
        assert client._headers["Authorization"] == "Bearer secret-key"
        with client.create() as capsule:
            assert capsule.exec("echo ok").stdout == "ok\n"
            with capsule.terminal() as term:
                term.send("echo $((40 + 2))\n")
                term.expect("42")


def test_version() -> None:
    assert __version__ == "0.1.0"


def test_bad_base_url() -> None:
    with pytest.raises(ValueError, match="http"):
        CapsuleClient("localhost:8080")

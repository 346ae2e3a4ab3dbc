"""`capsule mcp` over stdio through the official `mcp` Python SDK: with an
embedded engine, and in front of a running server."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from conftest import err, http_session, run, stdio_session


def test_embedded_engine_session(server):
    root = Path(tempfile.mkdtemp(prefix="capsule-mcp-stdio-"))
    root.chmod(0o755)

    async def main():
        async with stdio_session(after=("--state-dir", str(root))) as s:
            tools = {t.name for t in (await s.list_tools()).tools}
            assert {"run_code", "exec", "read_file", "write_file"} <= tools
            r = await s.call_tool("run_code", {"code": "total = sum(range(10))\ntotal"})
            assert r.structuredContent["results"][0]["text"] == "45", r.content
            r = await s.call_tool("run_code", {"code": "console.log(6 * 7)", "language": "javascript"})
            assert r.structuredContent["stdout"] == "42\n"
            r = await s.call_tool("write_file", {"path": "hello.txt", "content": "hi from stdio"})
            assert not r.isError
            r = await s.call_tool("read_file", {"path": "hello.txt"})
            assert r.structuredContent["content"] == "hi from stdio"
            r = await s.call_tool("read_file", {"path": "../../../etc/passwd"})
            assert r.isError and err(r)["kind"] == "path_outside_sandbox"
            sessions = [p for p in root.iterdir() if p.name.startswith("mcp-")]
            assert len(sessions) == 1, sessions
    try:
        run(main())
        # The session's engine, sandboxes and files are gone with it.
        deadline = time.monotonic() + 20
        while any(p.name.startswith("mcp-") for p in root.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(p.name.startswith("mcp-") for p in root.iterdir()), list(root.iterdir())
    finally:
        import shutil
        shutil.rmtree(root, ignore_errors=True)


def test_in_front_of_a_running_server(server):
    env = {"CAPSULE_API_KEY": server.api_key}

    async def main():
        async with stdio_session(before=("--url", server.url), after=("--as-user", "carol"), env=env) as s:
            r = await s.call_tool("exec", {"command": "hostname; echo $((2+3))"})
            assert r.structuredContent["stdout"].endswith("5\n"), r.content
            default_box = r.structuredContent["sandbox_id"]
            assert default_box in server.sandbox_ids()
            r = await s.call_tool("create_sandbox", {"template": "base", "ttl_ms": 120000})
            kept = r.structuredContent["sandbox_id"]
        return default_box, kept
    default_box, kept = run(main())
    deadline = time.monotonic() + 10
    while default_box in server.sandbox_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert default_box not in server.sandbox_ids(), "the session's default sandbox ends with it"
    assert kept in server.sandbox_ids()

    # The same user over HTTP sees the kept sandbox; nobody else does.
    async def check():
        async with http_session(server, user="carol") as s:
            listed = (await s.call_tool("list_sandboxes", {})).structuredContent["sandboxes"]
            assert kept in [x["sandbox_id"] for x in listed]
            await s.call_tool("delete_sandbox", {"sandbox_id": kept})
    run(check())
    assert kept not in server.sandbox_ids()


def test_an_unreachable_server_fails_fast_with_a_message(server):
    import subprocess
    import os
    from conftest import capsule_bin
    started = time.monotonic()
    p = subprocess.run(
        [capsule_bin(), "--url", "http://127.0.0.1:9", "mcp"],
        input=b"", capture_output=True, timeout=30, env={**os.environ, "CAPSULE_API_KEY": "x"},
    )
    assert p.returncode != 0
    assert b"127.0.0.1:9" in p.stderr, p.stderr
    assert time.monotonic() - started < 20


def test_sigterm_ends_the_session_and_its_sandboxes():
    """A client that stops the server with SIGTERM (as the SDKs do when it
    does not exit on its own) still leaves nothing behind."""
    import json
    import signal
    import subprocess

    from conftest import capsule_bin

    root = Path(tempfile.mkdtemp(prefix="capsule-mcp-term-"))
    root.chmod(0o755)
    proc = subprocess.Popen(
        [capsule_bin(), "mcp", "--state-dir", str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for msg in (
            {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "t", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "exec", "arguments": {"command": "echo alive"}}},
        ):
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            proc.stdin.flush()
        answers = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert answers[1]["result"]["structuredContent"]["stdout"] == "alive\n", answers[1]
        assert any(p.name.startswith("mcp-") for p in root.iterdir())
        proc.send_signal(signal.SIGTERM)  # stdin stays open
        assert proc.wait(timeout=20) == 0
        assert not any(p.name.startswith("mcp-") for p in root.iterdir()), list(root.iterdir())
    finally:
        if proc.poll() is None:
            # Let it clean up its sandboxes before forcing it.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        import shutil

        shutil.rmtree(root, ignore_errors=True)

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

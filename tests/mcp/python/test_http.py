"""Capsule's MCP endpoint (`/mcp`, streamable HTTP) through the official
`mcp` Python SDK, against a real server and real sandboxes."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from conftest import OTHER_KEY, err, http_session, run

TOOLS = {
    "create_sandbox", "list_sandboxes", "get_sandbox", "delete_sandbox", "run_code", "exec",
    "read_file", "write_file", "list_dir", "upload", "download",
}


def test_tools_are_listed_with_schemas_and_descriptions(server):
    async def main():
        async with http_session(server) as s:
            listed = (await s.list_tools()).tools
            assert {t.name for t in listed} == TOOLS
            for t in listed:
                assert t.description and len(t.description) > 30, t.name
                assert t.inputSchema["type"] == "object", t.name
                assert t.outputSchema and t.outputSchema["type"] == "object", t.name
            exec_tool = next(t for t in listed if t.name == "exec")
            assert exec_tool.inputSchema["required"] == ["command"]
            assert "timeout_ms" in exec_tool.inputSchema["properties"]
    run(main())


def test_a_session_works_in_its_default_sandbox_and_it_goes_with_the_session(server):
    async def main():
        async with http_session(server) as s:
            r = await s.call_tool("run_code", {"code": "data = [3, 1, 2]\nprint('loaded')"})
            assert not r.isError, r.content
            box = r.structuredContent["sandbox_id"]
            assert r.structuredContent["stdout"] == "loaded\n"
            r = await s.call_tool("run_code", {"code": "sorted(data)"})
            assert r.structuredContent["results"][0]["text"] == "[1, 2, 3]"
            assert r.structuredContent["sandbox_id"] == box
            r = await s.call_tool("write_file", {"path": "notes/todo.txt", "content": "ship it\n"})
            assert r.structuredContent["path"] == "/workspace/notes/todo.txt"
            r = await s.call_tool("read_file", {"path": "/workspace/notes/todo.txt"})
            assert r.structuredContent["content"] == "ship it\n"
            r = await s.call_tool("exec", {"command": "cat notes/todo.txt; whoami; exit 3"})
            assert r.structuredContent["stdout"] == "ship it\nuser\n"
            assert r.structuredContent["exit_code"] == 3
            r = await s.call_tool("list_dir", {"path": "notes"})
            assert [e["name"] for e in r.structuredContent["entries"]] == ["todo.txt"]
            assert box in server.sandbox_ids()
            return box
    box = run(main())
    # Ending the session (the client's DELETE) deletes its default sandbox.
    deadline = time.monotonic() + 10
    while box in server.sandbox_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert box not in server.sandbox_ids()


def test_errors_are_tool_errors_with_the_api_kinds(server):
    async def main():
        async with http_session(server) as s:
            r = await s.call_tool("read_file", {"path": "/../../etc/shadow"})
            assert r.isError
            assert err(r)["kind"] == "path_outside_sandbox"
            assert "/../../etc/shadow" in err(r)["message"]
            r = await s.call_tool("read_file", {"path": "/workspace/missing.txt"})
            assert r.isError and err(r)["kind"] == "file_not_found"
            r = await s.call_tool("create_sandbox", {"template": "no-such-template"})
            assert r.isError and err(r)["kind"] == "template_not_found"
            r = await s.call_tool("get_sandbox", {"sandbox_id": "not an id!"})
            assert r.isError and err(r)["kind"] == "invalid_params"
            r = await s.call_tool("upload", {"path": "x.bin", "content_base64": "%%%"})
            assert r.isError and "base64" in err(r)["message"]
            r = await s.call_tool("exec", {})  # missing `command`
            assert r.isError
            # A failed call leaves the session working.
            r = await s.call_tool("exec", {"command": "echo fine"})
            assert r.structuredContent["stdout"] == "fine\n"
    run(main())


def test_explicit_sandboxes_outlive_the_session_and_stay_with_their_owner(server):
    async def main():
        async with http_session(server, user="alice", group="lab") as a:
            r = await a.call_tool("create_sandbox", {"template": "python", "ttl_ms": 120000, "metadata": {"task": "t1"}})
            assert not r.isError, r.content
            made = r.structuredContent
            assert made["template"] == "python" and made["metadata"] == {"task": "t1"}
            r = await a.call_tool("create_sandbox", {"metadata": {"mcp.owner": "forged"}})
            assert r.isError and err(r)["kind"] == "invalid_params"
        box = made["sandbox_id"]
        assert box in server.sandbox_ids(), "explicitly created sandboxes are kept"
        # The same owner in a new session finds it; so does the same group.
        for user, group in [("alice", None), ("dave", "lab")]:
            async with http_session(server, user=user, group=group) as s:
                listed = (await s.call_tool("list_sandboxes", {})).structuredContent["sandboxes"]
                assert box in [x["sandbox_id"] for x in listed], (user, group)
                r = await s.call_tool("exec", {"command": "echo seen", "sandbox_id": box})
                assert r.structuredContent["stdout"] == "seen\n"
        # Another user, another group, or another key: it does not exist for them.
        for key, user, group in [("default", "bob", None), ("default", "bob", "other"), (OTHER_KEY, "alice", "lab")]:
            async with http_session(server, key=key, user=user, group=group) as s:
                listed = (await s.call_tool("list_sandboxes", {})).structuredContent["sandboxes"]
                assert box not in [x["sandbox_id"] for x in listed]
                for tool, args in [("get_sandbox", {}), ("exec", {"command": "id"}), ("read_file", {"path": "/etc/hostname"}), ("delete_sandbox", {})]:
                    r = await s.call_tool(tool, {**args, "sandbox_id": box})
                    assert r.isError and err(r)["kind"] == "sandbox_not_found", (tool, r.content)
        async with http_session(server, user="alice") as a:
            r = await a.call_tool("delete_sandbox", {"sandbox_id": box})
            assert r.structuredContent == {"sandbox_id": box, "deleted": True}
        assert box not in server.sandbox_ids()
    run(main())


def test_sandboxes_made_outside_mcp_are_not_visible(server):
    made = server.rpc("sandbox.v1.create", {"template": "base"})["result"]["id"]
    try:
        async def main():
            async with http_session(server) as s:
                r = await s.call_tool("exec", {"command": "id", "sandbox_id": made})
                assert r.isError and err(r)["kind"] == "sandbox_not_found"
        run(main())
    finally:
        server.rpc("sandbox.v1.delete", {"id": made})


def test_the_endpoint_needs_the_api_key(server):
    for headers in [{}, {"X-API-Key": "wrong"}]:
        r = httpx.post(
            server.url + "/mcp",
            headers={**headers, "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            timeout=10,
        )
        assert r.status_code == 401, (headers, r.status_code, r.text)

    async def main():
        async with http_session(server, key=None):
            pass
    with pytest.raises(BaseException):
        run(main())


def test_binary_files_round_trip_and_big_ones_are_refused(server):
    async def main():
        async with http_session(server) as s:
            raw = bytes(range(256)) * 64
            r = await s.call_tool("upload", {"path": "bin/all.bin", "content_base64": base64.b64encode(raw).decode()})
            assert r.structuredContent["size"] == len(raw)
            r = await s.call_tool("download", {"path": "bin/all.bin"})
            assert base64.b64decode(r.structuredContent["content_base64"]) == raw
            r = await s.call_tool("read_file", {"path": "bin/all.bin"})
            assert r.isError and "download" in err(r)["message"]
            await s.call_tool("exec", {"command": "head -c 9000000 /dev/zero > /workspace/big.bin"})
            r = await s.call_tool("download", {"path": "big.bin"})
            assert r.isError and err(r)["kind"] == "payload_too_large"
    run(main())


def test_long_output_is_cut_with_a_note_and_long_runs_report_progress(server):
    async def main():
        async with http_session(server) as s:
            r = await s.call_tool("exec", {"command": "seq 1 100000"})
            out = r.structuredContent
            assert out["truncated"] is True
            assert len(out["stdout"]) < 40_000
            assert "truncated" in out["stdout"] and out["stdout"].startswith("1\n2\n3\n")
            seen = []

            async def progress(done, total, message):
                seen.append((done, message))
            r = await s.call_tool("exec", {"command": "sleep 2.5; echo finished"}, progress_callback=progress)
            assert r.structuredContent["stdout"] == "finished\n"
            assert len(seen) >= 2, seen
            assert all("running for" in m for _, m in seen)
    run(main())


def test_resources_and_prompts(server):
    async def main():
        async with http_session(server, user="res") as s:
            await s.call_tool("write_file", {"path": "report/summary.md", "content": "# Done\n"})
            await s.call_tool("upload", {"path": "pic.bin", "content_base64": base64.b64encode(b"\x00\xff\x10").decode()})
            box = (await s.call_tool("get_sandbox", {})).structuredContent["sandbox_id"]
            uris = {str(r.uri) for r in (await s.list_resources()).resources}
            assert f"capsule://{box}/workspace/report/summary.md" in uris
            md = await s.read_resource(f"capsule://{box}/workspace/report/summary.md")
            assert md.contents[0].text == "# Done\n" and md.contents[0].mimeType == "text/markdown"
            blob = await s.read_resource(f"capsule://{box}/workspace/pic.bin")
            assert base64.b64decode(blob.contents[0].blob) == b"\x00\xff\x10"
            templates = (await s.list_resource_templates()).resourceTemplates
            assert templates[0].uriTemplate == "capsule://{sandbox_id}/{path}"
            prompts = {p.name for p in (await s.list_prompts()).prompts}
            assert prompts == {"sandbox_workflow", "analyze_file"}
            got = await s.get_prompt("analyze_file", {"path": "/workspace/data.csv", "question": "What is the mean?"})
            assert "/workspace/data.csv" in got.messages[0].content.text
            assert "What is the mean?" in got.messages[0].content.text
            return box
    box = run(main())

    async def other():
        async with http_session(server, user="someone-else") as s:
            with pytest.raises(Exception):
                await s.read_resource(f"capsule://{box}/workspace/report/summary.md")
            uris = {str(r.uri) for r in (await s.list_resources()).resources}
            assert not any(box in u for u in uris)
    run(other())


def test_charts_come_back_as_images(server):
    async def main():
        async with http_session(server) as s:
            probe = await s.call_tool("run_code", {"code": "import importlib.util; importlib.util.find_spec('matplotlib') is not None"})
            if probe.structuredContent["results"][0]["text"] != "True":
                pytest.skip("matplotlib is not installed on this host")
            r = await s.call_tool("run_code", {"code": "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5])\nplt.show()"})
            assert not r.isError
            images = [c for c in r.content if c.type == "image"]
            assert len(images) == 1 and images[0].mimeType == "image/png"
            assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
    run(main())


def _post(server, headers: dict, body: dict) -> tuple[httpx.Response, list]:
    """One raw MCP POST; the JSON-RPC messages of its (SSE or JSON) answer."""
    import json

    r = httpx.post(
        server.url + "/mcp",
        headers={"Accept": "application/json, text/event-stream", **headers},
        json=body,
        timeout=30,
    )
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    else:
        messages = [r.json()] if r.content else []
    return r, messages


def test_a_session_stays_with_the_identity_that_opened_it(server):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    r, _ = _post(server, {"X-API-Key": server.api_key, "X-Capsule-User": "erin"}, init)
    sid = r.headers["mcp-session-id"]
    base = {"Mcp-Session-Id": sid}
    _post(server, {**base, "X-API-Key": server.api_key, "X-Capsule-User": "erin"},
          {"jsonrpc": "2.0", "method": "notifications/initialized"})
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_sandboxes", "arguments": {}}}
    _, ok = _post(server, {**base, "X-API-Key": server.api_key, "X-Capsule-User": "erin"}, call)
    assert ok[-1]["result"]["isError"] is False
    # The same session id with another user (or another key) is refused.
    _, other = _post(server, {**base, "X-API-Key": server.api_key, "X-Capsule-User": "mallory"}, {**call, "id": 3})
    assert other[-1]["result"]["isError"] is True
    assert "another identity" in other[-1]["result"]["content"][0]["text"]
    r, _ = _post(server, {**base, "X-API-Key": OTHER_KEY, "X-Capsule-User": "erin"}, {**call, "id": 4})
    if r.status_code == 200:
        assert "another identity" in r.text
    httpx.request("DELETE", server.url + "/mcp", headers={**base, "X-API-Key": server.api_key}, timeout=10)

"""The MCP Inspector's CLI mode (`--cli`) against Capsule: over HTTP and
over stdio. The Inspector is pinned in tests/mcp/inspector (npm)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import capsule_bin

INSPECTOR = Path(__file__).resolve().parents[1] / "inspector" / "node_modules" / ".bin" / "mcp-inspector"


def inspector(*args: str) -> subprocess.CompletedProcess:
    assert INSPECTOR.exists(), f"install the Inspector first: (cd {INSPECTOR.parents[2]} && npm ci)"
    return subprocess.run([str(INSPECTOR), "--cli", *args], capture_output=True, text=True, timeout=120)


def test_tools_list_and_call_over_http(server):
    url = server.url + "/mcp"
    key = ["--header", f"X-API-Key: {server.api_key}"]
    listed = inspector(url, "--transport", "http", *key, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert {"run_code", "exec", "read_file", "write_file", "create_sandbox"} <= names

    called = inspector(url, "--transport", "http", *key, "--method", "tools/call",
                       "--tool-name", "exec", "--tool-arg", "command=echo from-inspector")
    assert called.returncode == 0, called.stderr
    out = json.loads(called.stdout)
    assert out["structuredContent"]["stdout"] == "from-inspector\n"
    assert out["isError"] is False

    # A tool error exits non-zero with the error on stderr.
    failed = inspector(url, "--transport", "http", *key, "--method", "tools/call",
                       "--tool-name", "read_file", "--tool-arg", "path=/../../etc/shadow")
    assert failed.returncode != 0
    assert "path_outside_sandbox" in failed.stdout + failed.stderr

    # Without the key the Inspector cannot even connect (on the 401 it
    # looks for OAuth credentials, which it has none of).
    refused = inspector(url, "--transport", "http", "--method", "tools/list")
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()
    assert "run_code" not in refused.stdout


def test_tools_list_and_call_over_stdio(server):
    target = [capsule_bin(), "--url", server.url, "--api-key", server.api_key, "mcp"]
    listed = inspector("--method", "tools/list", "--", *target)
    assert listed.returncode == 0, listed.stderr
    assert "run_code" in {t["name"] for t in json.loads(listed.stdout)["tools"]}
    called = inspector("--method", "tools/call", "--tool-name", "run_code", "--tool-arg", "code=sum([1, 2, 3])", "--", *target)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["structuredContent"]["results"][0]["text"] == "6"

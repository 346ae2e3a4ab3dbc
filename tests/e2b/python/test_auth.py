"""Credentials: API keys for the control plane, access tokens per sandbox."""

from __future__ import annotations

import httpx
import pytest
from e2b import AuthenticationException, Sandbox


def test_wrong_or_missing_api_key_is_rejected(server, monkeypatch):
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "f" * 40)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_" + "0" * 40).next_items()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for path in ("/sandboxes", "/v2/sandboxes"):
            r = http.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert "api key" in r.json()["message"].lower()
        assert http.get("/v2/sandboxes", headers={"X-API-Key": server.api_key}).status_code == 200


def _envd(server, sandbox_id: str, token: str | None) -> httpx.Response:
    headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983", "Content-Type": "application/json"}
    if token is not None:
        headers["X-Access-Token"] = token
    return httpx.post(
        server.url + "/filesystem.Filesystem/ListDir",
        headers=headers,
        json={"path": "/home/user", "depth": 1},
        timeout=10,
    )


def test_envd_calls_need_the_sandbox_token(server):
    a = Sandbox.create()
    b = Sandbox.create()
    try:
        token_a = a._envd_access_token
        token_b = b._envd_access_token
        assert token_a and token_b and token_a != token_b
        assert _envd(server, a.sandbox_id, token_a).status_code == 200
        missing = _envd(server, a.sandbox_id, None)
        wrong = _envd(server, a.sandbox_id, "not-the-token")
        assert missing.status_code == 401 and wrong.status_code == 401
        # One sandbox's token never opens another.
        crossed = _envd(server, b.sandbox_id, token_a)
        assert crossed.status_code == 401
        # Nor does the API key.
        assert _envd(server, a.sandbox_id, server.api_key).status_code == 401
        # Files too.
        r = httpx.get(
            server.url + "/files",
            params={"path": "/etc/hostname"},
            headers={"E2b-Sandbox-Id": b.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": token_a},
            timeout=10,
        )
        assert r.status_code == 401
    finally:
        a.kill()
        b.kill()


def test_sdk_with_a_forged_token_gets_the_sdk_error(server, sandbox):
    from e2b import ConnectionConfig

    forged = Sandbox(
        sandbox_id=sandbox.sandbox_id,
        envd_version=sandbox._envd_version,
        envd_access_token="forged",
        sandbox_domain=None,
        connection_config=ConnectionConfig(headers={"X-Access-Token": "forged"}),
    )
    with pytest.raises(AuthenticationException):
        forged.files.read("/etc/hostname")
    with pytest.raises(AuthenticationException):
        forged.commands.run("echo nope")
    # The real handle still works.
    assert sandbox.commands.run("echo yes").stdout == "yes\n"

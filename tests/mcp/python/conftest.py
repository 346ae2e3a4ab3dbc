"""A real Capsule server for the MCP tests, and MCP sessions against it
through the official `mcp` Python SDK (streamable HTTP and stdio)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import AsyncIterator, Iterator, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "harness"))
from capsule_server import REPO, Server  # noqa: E402

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
import httpx  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402


def capsule_bin() -> str:
    return os.environ.get("CAPSULE_BIN") or str(REPO / "target" / "debug" / "capsule")


#: A second API key the server accepts: another tenant.
OTHER_KEY = "capsule_other_tenant_key_0123456789"


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    srv = Server("--api-keys", OTHER_KEY)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if report.failed and srv is not None:
        report.sections.append(("capsule server log (tail)", srv.log_tail()))


@contextlib.asynccontextmanager
async def http_session(
    server: Server, key: Optional[str] = "default", user: Optional[str] = None, group: Optional[str] = None
) -> AsyncIterator[ClientSession]:
    """An MCP session over streamable HTTP; ends (DELETE) on exit."""
    headers = {}
    if key is not None:
        headers["X-API-Key"] = server.api_key if key == "default" else key
    if user:
        headers["X-Capsule-User"] = user
    if group:
        headers["X-Capsule-Group"] = group
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(60, read=300)) as http:
        async with streamable_http_client(server.url + "/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@contextlib.asynccontextmanager
async def stdio_session(
    before: tuple = (), after: tuple = (), env: Optional[dict] = None
) -> AsyncIterator[ClientSession]:
    """An MCP session with `capsule <before> mcp <after>` as a child process."""
    params = StdioServerParameters(
        command=capsule_bin(), args=[*before, "mcp", *after], env={**os.environ, **(env or {})}
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def err(result) -> dict:  # type: ignore[no-untyped-def]
    """The `error` object of a failed tool call."""
    import json

    assert result.isError, result
    assert result.structuredContent is None
    return json.loads(result.content[0].text)["error"]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)

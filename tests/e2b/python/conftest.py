"""A real Capsule server for the E2B SDK tests, and the SDK pointed at it.

The server is started once per test session on a free loopback port with a
fresh state directory and an API key; the SDKs find it through nothing but
the environment variables E2B users already set: E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "harness"))
from capsule_server import Server  # noqa: E402


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    srv = Server()
    os.environ["E2B_API_URL"] = srv.url
    os.environ["E2B_SANDBOX_URL"] = srv.url
    os.environ["E2B_API_KEY"] = srv.api_key
    os.environ.pop("E2B_DOMAIN", None)
    os.environ.pop("E2B_ACCESS_TOKEN", None)
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


@pytest.fixture
def sandbox(server: Server) -> Iterator["object"]:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=300)
    try:
        yield sbx
    finally:
        try:
            sbx.kill()
        except Exception:
            pass


@pytest.fixture
def interpreter(server: Server) -> Iterator["object"]:
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(timeout=300)
    try:
        yield sbx
    finally:
        try:
            sbx.kill()
        except Exception:
            pass

"""A real Capsule server for the E2B SDK tests, and the SDK pointed at it.

The server is started once per test session on a free loopback port with a
fresh state directory and an API key; the SDKs find it through nothing but
the environment variables E2B users already set: E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self) -> None:
        binary = Path(os.environ.get("CAPSULE_BIN") or REPO / "target" / "debug" / "capsule")
        if not binary.is_file():
            raise RuntimeError(f"no capsule binary at {binary}: run `cargo build -p capsule` or set CAPSULE_BIN")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = "e2b_" + secrets.token_hex(20)
        self.tmp = Path(tempfile.mkdtemp(prefix="capsule-e2b-"))
        self.tmp.chmod(0o755)  # sandboxes run as other uids
        self.log_path = self.tmp / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(binary), "serve",
                "--listen", f"127.0.0.1:{self.port}",
                "--state-dir", str(self.tmp / "state"),
                "--api-keys", self.api_key,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"capsule serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"capsule serve did not become healthy:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def rss_peak_kib(self) -> int:
        """The server process's peak resident memory (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


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

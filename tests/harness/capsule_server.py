"""A real Capsule server for the Python integration suites (E2B, MCP).

The binary is $CAPSULE_BIN, or the repository's debug build.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import json
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `capsule serve` on a free loopback port with a fresh state
    directory and an API key; stopped (by its own PID) and cleaned up by
    `stop`."""

    def __init__(self, *extra_args: str) -> None:
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
                *extra_args,
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

    def rpc(self, method: str, params: dict) -> dict:
        """Calls a JSON-RPC method; returns the whole response object."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        req = urllib.request.Request(
            self.url + "/rpc",
            data=body,
            headers={"Content-Type": "application/json", "X-API-Key": self.api_key},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def sandbox_ids(self) -> list:
        """Ids of the server's running sandboxes."""
        return [s["id"] for s in self.rpc("sandbox.v1.list", {})["result"]["sandboxes"]]

    def _mounts(self) -> list:
        """Mount points under this server's directory, deepest first."""
        prefix = str(self.tmp) + "/"
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
        return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)

    def stop(self) -> None:
        """Deletes the server's sandboxes, stops it with SIGTERM and removes
        its directory. Mounts still left after that (the store of a server
        that kept a sandbox the listing did not show) are detached, so that
        nothing leaks into later tests, and reported on stderr with the end
        of the server's log."""
        if self.proc.poll() is None:
            try:
                for sandbox_id in self.sandbox_ids():
                    self.rpc("sandbox.v1.delete", {"id": sandbox_id})
            except (OSError, KeyError, ValueError):
                pass  # a server that cannot answer is stopped all the same
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        left = self._mounts()
        for point in left:
            subprocess.run(["umount", "-l", point], check=False)
        if left:
            print(
                f"warning: the server left mounts behind after it stopped: {left}\n{self.log_tail(60)}",
                file=sys.stderr,
            )
        shutil.rmtree(self.tmp, ignore_errors=True)

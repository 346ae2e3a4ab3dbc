"""Starts and stops a real `capsule serve` for the tests.

Each server gets a free port (or the one asked for) and a fresh temporary
state directory. Stopping it deletes every sandbox it still has, sends
SIGTERM, waits, and removes the directory. Only the process started here is
ever signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[3]


def capsule_bin() -> Path:
    """The server binary: $CAPSULE_BIN, or the repository's debug build."""
    env = os.environ.get("CAPSULE_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "capsule"
    if not path.is_file():
        raise RuntimeError(
            f"the Capsule server binary is missing at {path}; build it with "
            f"`cargo build -p capsule` in {REPO_ROOT} or set CAPSULE_BIN"
        )
    return path


def server_supports(flag: str) -> bool:
    """Whether `capsule serve` of the binary under test knows `flag`."""
    out = subprocess.run([str(capsule_bin()), "serve", "--help"], capture_output=True, text=True, timeout=60)
    return flag in out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # Like the server: connections in TIME_WAIT do not make a port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class CapsuleServer:
    """One `capsule serve` process."""

    def __init__(self, port: Optional[int] = None, args: Sequence[str] = (), api_key: Optional[str] = None) -> None:
        self.port = port or free_port()
        self.api_key = api_key
        self.args: List[str] = list(args)
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="capsule-sdk-py-"))
        # Sandbox processes run as other uids and must be able to reach the state.
        self.tmp.chmod(0o755)
        self.state_dir = self.tmp / "state"
        self.state_dir.mkdir()
        self.log_path = self.tmp / "server.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, wait: float = 60.0) -> "CapsuleServer":
        log = open(self.log_path, "ab")
        cmd = [str(capsule_bin()), "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state_dir)]
        self.proc = subprocess.Popen(cmd + self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log_text = self.log()
                self._cleanup_dir()
                raise RuntimeError(f"capsule serve exited with {self.proc.returncode}:\n{log_text}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"capsule serve did not become healthy on {self.url} within {wait}s")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rpc(self, method: str, params: Any) -> Any:
        """A bare JSON-RPC call (independent of the SDK under test)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.url}/rpc", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def sandbox_ids(self) -> List[str]:
        return [s["id"] for s in self.rpc("sandbox.v1.list", {})["result"]["sandboxes"]]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                for sandbox_id in self.sandbox_ids():
                    self.rpc("sandbox.v1.delete", {"id": sandbox_id})
                self._drain_pools()
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        self._cleanup_dir()

    def _drain_pools(self, wait: float = 30.0) -> None:
        """Empties the warm pools (``--pool``) and waits for their sandboxes
        to go. Pooled sandboxes are not listed, so deleting the listed ones
        misses them, and a server stopped with sandboxes left keeps them
        running (and its storage mounted) for its next start."""
        answer = self.rpc("sandbox.v1.pools", {})
        pools = answer.get("result", {}).get("pools", []) if isinstance(answer, dict) else []
        if not pools:
            return
        for pool in pools:
            self.rpc("admin.v1.setPool", {"template": pool["template"], "size": 0})
        sandboxes = self.state_dir / "native" / "sandboxes"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not sandboxes.is_dir() or not any(sandboxes.iterdir()):
                return
            time.sleep(0.1)

    def _cleanup_dir(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "CapsuleServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The asyncio client: :class:`AsyncCapsuleClient`, :class:`AsyncCapsule`
and :class:`AsyncTerminal`. Same methods as the blocking client, awaited::

    async with AsyncCapsuleClient("http://localhost:8080") as client:
        async with client.create("python") as capsule:
            result = await capsule.run("print(6 * 7)")
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from datetime import datetime
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Coroutine,
    Dict,
    Generator,
    Generic,
    List,
    Mapping,
    Optional,
    Pattern,
    Sequence,
    TypeVar,
    Union,
)

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from . import _protocol as p
from .client import User
from .errors import (
    CapsuleConnectionError,
    CapsuleError,
    CapsuleTimeoutError,
    SandboxExpiredError,
    SandboxNotFoundError,
    TerminalClosedError,
)
from .models import (
    ExecResult,
    FileEntry,
    PauseResult,
    PoolInfo,
    SandboxInfo,
    SandboxStats,
    SnapshotInfo,
    TemplateInfo,
    VolumeInfo,
    WriteResult,
    parse_timestamp,
)
from .terminal import closed_error

__all__ = ["AsyncCapsuleClient", "AsyncCapsule", "AsyncTerminal"]

R = TypeVar("R", "AsyncCapsule", "AsyncTerminal")


class _Pending(Generic[R]):
    """An awaitable that is also an async context manager, so both
    ``x = await client.create()`` and ``async with client.create() as x``
    work."""

    def __init__(self, coro: Coroutine[Any, Any, R]) -> None:
        self._coro: Coroutine[Any, Any, R] = coro
        self._value: Optional[R] = None

    def __await__(self) -> Generator[Any, None, R]:
        return self._coro.__await__()

    async def __aenter__(self) -> R:
        self._value = await self._coro
        return self._value

    async def __aexit__(self, *exc: object) -> None:
        if self._value is not None:
            await self._value.__aexit__(*exc)


class AsyncCapsuleClient:
    """The asyncio twin of :class:`~capsule_sdk.CapsuleClient`; every method
    is a coroutine. Close it with :meth:`aclose` or ``async with``."""

    def __init__(
        self,
        base_url: str = p.DEFAULT_BASE_URL,
        api_key: Optional[str] = None,
        timeout: float = p.DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = p.normalize_base_url(base_url)
        self.timeout = timeout
        self._headers = p.request_headers(api_key)
        self._http = httpx.AsyncClient(headers=self._headers, timeout=timeout)
        self._ids = itertools.count(1)

    async def call(
        self, method: str, params: Optional[Mapping[str, Any]] = None, *, timeout: Optional[float] = None
    ) -> Any:
        """Calls a JSON-RPC method and returns its ``result`` (see
        :meth:`capsule_sdk.CapsuleClient.call`)."""
        url = f"{self.base_url}/rpc"
        body = p.encode_request(next(self._ids), method, params if params is not None else {})
        wait = timeout if timeout is not None else self.timeout
        try:
            response = await self._http.post(url, content=body, timeout=wait, headers=p.request_options(body))
        except httpx.TimeoutException as e:
            raise CapsuleTimeoutError(
                f"the Capsule server at {self.base_url} did not answer {p.full_method(method)} within {wait:g}s"
            ) from e
        except httpx.HTTPError as e:
            raise CapsuleConnectionError(p.connection_error_message(self.base_url, method, len(body), e)) from e
        return p.decode_response(response.status_code, response.content, self.base_url, method)

    async def health(self) -> Dict[str, Any]:
        """Returns ``GET /health``."""
        try:
            response = await self._http.get(f"{self.base_url}/health")
        except httpx.TimeoutException as e:
            raise CapsuleTimeoutError(f"the Capsule server at {self.base_url} did not answer /health") from e
        except httpx.HTTPError as e:
            raise CapsuleConnectionError(f"cannot reach the Capsule server at {self.base_url}: {e}") from e
        result: Dict[str, Any] = response.json()
        return result

    async def aclose(self) -> None:
        """Closes the client's connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncCapsuleClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncCapsuleClient({self.base_url!r})"

    def create(
        self,
        template: Optional[str] = None,
        ttl_ms: Optional[int] = None,
        cpu: Optional[float] = None,
        memory_mb: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        network: Optional[Union[str, Mapping[str, Any]]] = None,
        snapshot: Optional[str] = None,
        volumes: Optional[Sequence[p.Volume]] = None,
        disk_mb: Optional[int] = None,
        auto_pause_ms: Optional[int] = None,
        pause_on_expiry: Optional[bool] = None,
        runtime: Optional[str] = None,
    ) -> "_Pending[AsyncCapsule]":
        """Creates a sandbox (parameters as in
        :meth:`capsule_sdk.CapsuleClient.create`). Await it, or use
        ``async with`` to delete the sandbox when the block ends."""
        params = p.drop_none(
            template=template,
            ttl_ms=ttl_ms,
            cpu=cpu,
            memory_mb=memory_mb,
            env=dict(env) if env else None,
            metadata=dict(metadata) if metadata else None,
            network=network,
            snapshot=snapshot,
            volumes=p.volumes_param(volumes),
            disk_mb=disk_mb,
            auto_pause_ms=auto_pause_ms,
            pause_on_expiry=pause_on_expiry,
            runtime=runtime,
        )

        async def create() -> AsyncCapsule:
            return AsyncCapsule(self, await self.call("create", params))

        return _Pending(create())

    async def get(self, sandbox_id: str) -> "AsyncCapsule":
        """Returns the sandbox with this id."""
        return AsyncCapsule(self, await self.call("get", {"id": sandbox_id}))

    async def list(self, metadata: Optional[Mapping[str, str]] = None) -> List[SandboxInfo]:
        """Lists the live sandboxes, optionally filtered by metadata."""
        params = {"metadata": dict(metadata)} if metadata is not None else {}
        result = await self.call("list", params)
        return [SandboxInfo.from_json(s) for s in result["sandboxes"]]

    async def templates(self) -> List[TemplateInfo]:
        """Lists the templates and whether this server can run each."""
        result = await self.call("templates", {})
        return [TemplateInfo.from_json(t) for t in result["templates"]]

    async def pools(self) -> List[PoolInfo]:
        """Lists the warm pools and how many sandboxes each has ready."""
        result = await self.call("pools", {})
        return [PoolInfo.from_json(pool) for pool in result["pools"]]

    async def list_snapshots(self) -> List[SnapshotInfo]:
        """Lists the snapshots (of this tenant), oldest first."""
        result = await self.call("listSnapshots", {})
        return [SnapshotInfo.from_json(s) for s in result["snapshots"]]

    async def delete_snapshot(self, snapshot: str) -> None:
        """Deletes a snapshot by id or name; see
        :meth:`capsule_sdk.CapsuleClient.delete_snapshot`."""
        await self.call("deleteSnapshot", {"snapshot": snapshot})

    async def create_volume(self, name: str, size_mb: int) -> VolumeInfo:
        """Makes a named persistent volume; see
        :meth:`capsule_sdk.CapsuleClient.create_volume`."""
        return VolumeInfo.from_json(await self.call("createVolume", {"name": name, "size_mb": size_mb}))

    async def list_volumes(self) -> List[VolumeInfo]:
        """Lists the volumes (of this tenant)."""
        result = await self.call("listVolumes", {})
        return [VolumeInfo.from_json(v) for v in result["volumes"]]

    async def delete_volume(self, name: str) -> None:
        """Deletes a volume and its files; refused while a running sandbox
        mounts it."""
        await self.call("deleteVolume", {"name": name})


class AsyncCapsule:
    """The asyncio twin of :class:`~capsule_sdk.Capsule`."""

    def __init__(self, client: AsyncCapsuleClient, data: Mapping[str, Any]) -> None:
        self.client = client
        self.id: str = data["id"]
        self.template: str = data["template"]
        self.created_at: datetime = parse_timestamp(data["created_at"])
        self.expires_at: datetime = parse_timestamp(data["expires_at"])
        self._terminals: List[AsyncTerminal] = []

    def __repr__(self) -> str:
        return f"AsyncCapsule(id={self.id!r}, template={self.template!r})"

    async def __aenter__(self) -> "AsyncCapsule":
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.delete()
        except (SandboxNotFoundError, SandboxExpiredError):
            pass

    async def info(self) -> SandboxInfo:
        """Fetches the sandbox's current state from the server."""
        info = SandboxInfo.from_json(await self.client.call("get", {"id": self.id}))
        self.expires_at = info.expires_at
        return info

    async def run(
        self,
        code: str,
        timeout_ms: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
    ) -> ExecResult:
        """Runs code with the template's interpreter; see :meth:`capsule_sdk.Capsule.run`."""
        params = p.drop_none(id=self.id, code=code, timeout_ms=timeout_ms, env=dict(env) if env else None, stdin=stdin)
        result = await self.client.call("run", params, timeout=p.exec_timeout(self.client.timeout, timeout_ms))
        return ExecResult.from_json(result)

    async def exec(
        self,
        cmd: p.Command,
        timeout_ms: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
        user: Optional[User] = None,
    ) -> ExecResult:
        """Runs a command (argv list, or a string for ``/bin/sh -c``); see :meth:`capsule_sdk.Capsule.exec`."""
        params = p.drop_none(
            id=self.id,
            cmd=p.command_param(cmd),
            timeout_ms=timeout_ms,
            env=dict(env) if env else None,
            cwd=cwd,
            stdin=stdin,
            user=user,
        )
        result = await self.client.call("exec", params, timeout=p.exec_timeout(self.client.timeout, timeout_ms))
        return ExecResult.from_json(result)

    async def write_file(
        self,
        path: str,
        content: p.Content,
        mode: Union[int, str, None] = None,
        user: Optional[User] = None,
    ) -> WriteResult:
        """Writes a file (str as UTF-8, or bytes), creating parent directories."""
        params = p.drop_none(id=self.id, path=path, content=p.b64encode(content), mode=p.mode_param(mode), user=user)
        result = await self.client.call("writeFile", params)
        return WriteResult(path=result["path"], size=result["size"])

    async def read_file(self, path: str, user: Optional[User] = None) -> bytes:
        """Reads a file's bytes."""
        result = await self.client.call("readFile", p.drop_none(id=self.id, path=path, user=user))
        return p.b64decode(result["content"])

    async def read_file_text(self, path: str, encoding: str = "utf-8", user: Optional[User] = None) -> str:
        """Reads a file and decodes it (UTF-8 by default)."""
        return (await self.read_file(path, user=user)).decode(encoding)

    async def list_dir(self, path: str = "/workspace", user: Optional[User] = None) -> List[FileEntry]:
        """Lists a directory's entries."""
        result = await self.client.call("listDir", p.drop_none(id=self.id, path=path, user=user))
        return [FileEntry.from_json(e) for e in result["entries"]]

    async def stat(self, path: str, user: Optional[User] = None) -> FileEntry:
        """Describes one path (a symlink itself, not its target)."""
        result = await self.client.call("stat", p.drop_none(id=self.id, path=path, user=user))
        return FileEntry.from_json(result["entry"])

    async def make_dir(self, path: str, user: Optional[User] = None) -> FileEntry:
        """Creates a directory and its parents."""
        result = await self.client.call("makeDir", p.drop_none(id=self.id, path=path, user=user))
        return FileEntry.from_json(result["entry"])

    async def remove(self, path: str, user: Optional[User] = None) -> None:
        """Removes a file, or a directory with everything in it."""
        await self.client.call("remove", p.drop_none(id=self.id, path=path, user=user))

    async def set_timeout(self, ttl_ms: int) -> datetime:
        """Gives the sandbox a new time to live, counted from now; returns the new expiry."""
        result = await self.client.call("setTimeout", {"id": self.id, "ttl_ms": ttl_ms})
        self.expires_at = parse_timestamp(result["expires_at"])
        return self.expires_at

    async def pause(self) -> PauseResult:
        """Freezes every process of the sandbox; any later call resumes it.
        See :meth:`capsule_sdk.Capsule.pause`."""
        result = PauseResult.from_json(await self.client.call("pause", {"id": self.id}))
        self.expires_at = result.expires_at
        return result

    async def resume(self) -> PauseResult:
        """Thaws a paused sandbox ahead of the next call."""
        result = PauseResult.from_json(await self.client.call("resume", {"id": self.id}))
        self.expires_at = result.expires_at
        return result

    async def stats(self) -> SandboxStats:
        """The sandbox's resource use now, with its limits."""
        return SandboxStats.from_json(await self.client.call("stats", {"id": self.id}))

    async def snapshot(self, name: Optional[str] = None) -> SnapshotInfo:
        """Captures the sandbox's files as a snapshot; see
        :meth:`capsule_sdk.Capsule.snapshot`."""
        result = await self.client.call("snapshot", p.drop_none(id=self.id, name=name))
        return SnapshotInfo.from_json(result)

    async def fork(
        self,
        count: int = 1,
        ttl_ms: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> List["AsyncCapsule"]:
        """Makes ``count`` copies of the sandbox; see
        :meth:`capsule_sdk.Capsule.fork`."""
        params = p.drop_none(
            id=self.id, count=count, ttl_ms=ttl_ms, metadata=dict(metadata) if metadata else None
        )
        result = await self.client.call("fork", params)
        return [AsyncCapsule(self.client, s) for s in result["sandboxes"]]

    async def delete(self) -> None:
        """Deletes the sandbox and closes the terminals this object opened."""
        try:
            await self.client.call("delete", {"id": self.id})
        finally:
            for term in list(self._terminals):
                await term.close()

    def terminal(self, cols: int = 80, rows: int = 24, timeout: Optional[float] = None) -> "_Pending[AsyncTerminal]":
        """Opens a shell. Await it, or use ``async with`` to close it when the
        block ends."""

        async def open_terminal() -> AsyncTerminal:
            term = await AsyncTerminal.open(
                self.client.base_url,
                self.id,
                cols=cols,
                rows=rows,
                headers={k: v for k, v in self.client._headers.items() if k in ("Authorization", "User-Agent")},
                timeout=timeout if timeout is not None else self.client.timeout,
                on_close=self._forget_terminal,
            )
            self._terminals.append(term)
            return term

        return _Pending(open_terminal())

    def _forget_terminal(self, term: "AsyncTerminal") -> None:
        if term in self._terminals:
            self._terminals.remove(term)


class AsyncTerminal:
    """The asyncio twin of :class:`~capsule_sdk.Terminal`."""

    def __init__(
        self, connection: ClientConnection, on_close: Optional[Callable[["AsyncTerminal"], None]] = None
    ) -> None:
        self._ws = connection
        self._buffer = ""
        self._on_close = on_close
        self.close_code: Optional[int] = None
        self.close_reason: str = ""
        self.closed = False

    @classmethod
    async def open(
        cls,
        base_url: str,
        sandbox_id: str,
        *,
        cols: int,
        rows: int,
        headers: Dict[str, str],
        timeout: float,
        on_close: Optional[Callable[["AsyncTerminal"], None]] = None,
    ) -> "AsyncTerminal":
        p.resize_message(cols, rows)  # validates the size
        url = p.terminal_url(base_url, sandbox_id, cols, rows)
        try:
            ws = await connect(url, additional_headers=headers, open_timeout=timeout, max_size=None)
        except InvalidStatus as e:
            raise p.handshake_error(e.response.status_code, e.response.body or b"", url) from None
        except (TimeoutError, asyncio.TimeoutError) as e:
            raise CapsuleTimeoutError(f"the terminal at {url} did not open within {timeout}s") from e
        except (OSError, InvalidURI, WebSocketException) as e:
            raise CapsuleConnectionError(f"cannot reach the Capsule server at {base_url}: {e}") from e
        return cls(ws, on_close)

    async def send(self, data: Union[str, bytes]) -> None:
        """Types ``data`` into the terminal."""
        text = p.keyboard_text(data)
        try:
            await self._ws.send(text)
        except ConnectionClosed as e:
            raise self._closed(e) from None

    async def resize(self, cols: int, rows: int) -> None:
        """Changes the terminal size."""
        message = p.resize_message(cols, rows)
        try:
            await self._ws.send(message)
        except ConnectionClosed as e:
            raise self._closed(e) from None

    async def recv(self, timeout: Optional[float] = None) -> str:
        """Returns the next output; see :meth:`capsule_sdk.Terminal.recv`."""
        if self._buffer:
            out, self._buffer = self._buffer, ""
            return out
        return await self._recv(timeout)

    async def _recv(self, timeout: Optional[float]) -> str:
        if self.closed:
            raise closed_error(self.close_code, self.close_reason)
        try:
            data = await asyncio.wait_for(self._ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise CapsuleTimeoutError(f"no terminal output within {timeout}s") from None
        except ConnectionClosed as e:
            raise self._closed(e) from None
        return data if isinstance(data, str) else data.decode("utf-8", "replace")

    async def expect(self, pattern: Union[str, Pattern[str]], timeout: float = 10.0) -> str:
        """Reads output until ``pattern`` appears; see
        :meth:`capsule_sdk.Terminal.expect`."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self._buffer)
            if match:
                out, self._buffer = self._buffer[: match.end()], self._buffer[match.end() :]
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CapsuleTimeoutError(
                    f"terminal output did not show {regex.pattern!r} within {timeout}s; "
                    f"last output: {self._buffer[-200:]!r}"
                )
            try:
                self._buffer += await self._recv(remaining)
            except TerminalClosedError as e:
                raise closed_error(e.close_code, e.reason, self._buffer) from None

    async def wait_closed(self, timeout: Optional[float] = None) -> str:
        """Waits for the server to close the terminal; returns the reason."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.closed:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await self._recv(remaining)
            except TerminalClosedError:
                break
        return self.close_reason

    async def close(self) -> None:
        """Closes the connection, which ends the shell."""
        if not self.closed:
            try:
                await self._ws.close()
            except Exception:  # closing must never fail
                pass
            self._mark_closed(self._ws.protocol.close_code, self._ws.protocol.close_reason or "")

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self.recv()
            except TerminalClosedError:
                return

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _closed(self, e: ConnectionClosed) -> CapsuleError:
        frame = e.rcvd
        self._mark_closed(frame.code if frame else None, frame.reason if frame else "")
        return closed_error(self.close_code, self.close_reason)

    def _mark_closed(self, code: Optional[int], reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.close_reason = reason
            if self._on_close:
                self._on_close(self)

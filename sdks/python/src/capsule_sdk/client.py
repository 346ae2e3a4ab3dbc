"""The blocking client: :class:`CapsuleClient` and :class:`Capsule`."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union

import httpx

from . import _protocol as p
from .errors import (
    CapsuleConnectionError,
    CapsuleTimeoutError,
    SandboxExpiredError,
    SandboxNotFoundError,
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
from .terminal import Terminal

__all__ = ["CapsuleClient", "Capsule"]

User = Literal["user", "root"]


class CapsuleClient:
    """A connection to a Capsule server.

    Args:
        base_url: Where the server listens, e.g. ``"http://localhost:8080"``.
        api_key: Sent as ``Authorization: Bearer <api_key>`` when given (for
            servers or proxies that require it).
        timeout: Seconds to wait for an answer. ``exec`` and ``run`` wait
            longer when the command's own timeout needs it.

    The client keeps connections open; close it with :meth:`close` or use it
    as a context manager. It is safe to share between threads.
    """

    def __init__(
        self,
        base_url: str = p.DEFAULT_BASE_URL,
        api_key: Optional[str] = None,
        timeout: float = p.DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = p.normalize_base_url(base_url)
        self.timeout = timeout
        self._headers = p.request_headers(api_key)
        self._http = httpx.Client(headers=self._headers, timeout=timeout)
        self._ids = itertools.count(1)

    # -- plumbing -----------------------------------------------------------

    def call(self, method: str, params: Optional[Mapping[str, Any]] = None, *, timeout: Optional[float] = None) -> Any:
        """Calls a JSON-RPC method and returns its ``result``.

        ``method`` may be short (``"exec"``) or full (``"sandbox.v1.exec"``).
        Raises the :class:`~capsule_sdk.CapsuleError` subclass matching the
        error kind the server reports.
        """
        url = f"{self.base_url}/rpc"
        body = p.encode_request(next(self._ids), method, params if params is not None else {})
        wait = timeout if timeout is not None else self.timeout
        try:
            response = self._http.post(url, content=body, timeout=wait, headers=p.request_options(body))
        except httpx.TimeoutException as e:
            raise CapsuleTimeoutError(
                f"the Capsule server at {self.base_url} did not answer {p.full_method(method)} within {wait:g}s"
            ) from e
        except httpx.HTTPError as e:
            raise CapsuleConnectionError(p.connection_error_message(self.base_url, method, len(body), e)) from e
        return p.decode_response(response.status_code, response.content, self.base_url, method)

    def health(self) -> Dict[str, Any]:
        """Returns ``GET /health``: ``{"status", "version", "backend", "sandboxes"}``."""
        try:
            response = self._http.get(f"{self.base_url}/health")
        except httpx.TimeoutException as e:
            raise CapsuleTimeoutError(f"the Capsule server at {self.base_url} did not answer /health") from e
        except httpx.HTTPError as e:
            raise CapsuleConnectionError(f"cannot reach the Capsule server at {self.base_url}: {e}") from e
        result: Dict[str, Any] = response.json()
        return result

    def close(self) -> None:
        """Closes the client's connections."""
        self._http.close()

    def __enter__(self) -> "CapsuleClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CapsuleClient({self.base_url!r})"

    # -- sandboxes ----------------------------------------------------------

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
    ) -> "Capsule":
        """Creates a sandbox and returns it.

        Args:
            template: ``"base"`` (the default), ``"python"``, ``"node"``, ...
                (see :meth:`templates`). With ``snapshot``, the snapshot's.
            ttl_ms: Time to live; the server deletes the sandbox after it
                (server default: 10 minutes).
            cpu: CPU cores (fractions allowed).
            memory_mb: Memory limit in MiB.
            env: Environment variables for every command.
            metadata: Free-form labels, usable as a filter in :meth:`list`.
            network: ``"none"`` (default), ``"egress"``, or
                ``{"mode": "egress", "allow": [...], "secrets": [...]}``
                (see docs/network.md).
            snapshot: Start from this snapshot (its id or name, see
                :meth:`Capsule.snapshot`) instead of empty files. The
                template is then the snapshot's: leave ``template`` at its
                default or give the same one.
            volumes: Volumes to mount, each a
                :class:`~capsule_sdk.VolumeMount` (or
                ``{"name", "path", "read_only"}``); see :meth:`create_volume`.
            disk_mb: Disk limit of the sandbox's own files in MiB (at least
                16; enforced with btrfs storage).
            auto_pause_ms: Pause the sandbox after this long without calls
                (at least 1000); the next call resumes it.
            pause_on_expiry: At its end time, pause instead of being
                deleted; a later call resumes it with a fresh time to live.
            runtime: The isolation backend: ``"native"`` (default) or an OCI
                runtime the server enabled (``"gvisor"``, ``"runc"``,
                ``"crun"``).

        Use the result as a context manager to delete it when done::

            with client.create("python") as capsule:
                ...
        """
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
        result = self.call("create", params)
        return Capsule(self, result)

    def get(self, sandbox_id: str) -> "Capsule":
        """Returns the sandbox with this id. Raises
        :class:`~capsule_sdk.SandboxNotFoundError` (or ``SandboxExpiredError``)."""
        result = self.call("get", {"id": sandbox_id})
        return Capsule(self, result)

    def list(self, metadata: Optional[Mapping[str, str]] = None) -> List[SandboxInfo]:
        """Lists the live sandboxes, optionally only those whose metadata holds
        every given key/value pair."""
        params = {"metadata": dict(metadata)} if metadata is not None else {}
        result = self.call("list", params)
        return [SandboxInfo.from_json(s) for s in result["sandboxes"]]

    def templates(self) -> List[TemplateInfo]:
        """Lists the templates and whether this server can run each."""
        result = self.call("templates", {})
        return [TemplateInfo.from_json(t) for t in result["templates"]]

    def pools(self) -> List[PoolInfo]:
        """Lists the warm pools: per template, how many ready sandboxes the
        server keeps and how many are ready now."""
        result = self.call("pools", {})
        return [PoolInfo.from_json(pool) for pool in result["pools"]]

    # -- snapshots ----------------------------------------------------------

    def list_snapshots(self) -> List[SnapshotInfo]:
        """Lists the snapshots (of this tenant), oldest first. Take one with
        :meth:`Capsule.snapshot`."""
        result = self.call("listSnapshots", {})
        return [SnapshotInfo.from_json(s) for s in result["snapshots"]]

    def delete_snapshot(self, snapshot: str) -> None:
        """Deletes a snapshot by id or name. Sandboxes made from it keep their
        files. Raises :class:`~capsule_sdk.InvalidParamsError` when there is
        no such snapshot."""
        self.call("deleteSnapshot", {"snapshot": snapshot})

    # -- volumes ------------------------------------------------------------

    def create_volume(self, name: str, size_mb: int) -> VolumeInfo:
        """Makes a named persistent volume of at most ``size_mb`` MiB, to
        mount into sandboxes with ``create(volumes=[VolumeMount(name, path)])``.

        ``name`` is 1 to 63 of ``a-z 0-9 . _ -``. Raises
        :class:`~capsule_sdk.AlreadyExistsError` if the name is taken.
        """
        result = self.call("createVolume", {"name": name, "size_mb": size_mb})
        return VolumeInfo.from_json(result)

    def list_volumes(self) -> List[VolumeInfo]:
        """Lists the volumes (of this tenant)."""
        result = self.call("listVolumes", {})
        return [VolumeInfo.from_json(v) for v in result["volumes"]]

    def delete_volume(self, name: str) -> None:
        """Deletes a volume and its files. Raises
        :class:`~capsule_sdk.InvalidParamsError` when there is no such volume
        or a running sandbox mounts it (``data["used_by"]`` lists them)."""
        self.call("deleteVolume", {"name": name})


class Capsule:
    """One sandbox. Get one from :meth:`CapsuleClient.create` or
    :meth:`CapsuleClient.get`.

    Attributes:
        id: The sandbox id.
        template: The template it was created from.
        created_at: When it was created (UTC).
        expires_at: When it expires, as last seen by this object
            (:meth:`set_timeout` and :meth:`info` refresh it).
    """

    def __init__(self, client: CapsuleClient, data: Mapping[str, Any]) -> None:
        self.client = client
        self.id: str = data["id"]
        self.template: str = data["template"]
        self.created_at: datetime = parse_timestamp(data["created_at"])
        self.expires_at: datetime = parse_timestamp(data["expires_at"])
        self._terminals: List[Terminal] = []

    def __repr__(self) -> str:
        return f"Capsule(id={self.id!r}, template={self.template!r})"

    def __enter__(self) -> "Capsule":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.delete()
        except (SandboxNotFoundError, SandboxExpiredError):
            pass

    def info(self) -> SandboxInfo:
        """Fetches the sandbox's current state from the server."""
        info = SandboxInfo.from_json(self.client.call("get", {"id": self.id}))
        self.expires_at = info.expires_at
        return info

    # -- processes ----------------------------------------------------------

    def run(
        self,
        code: str,
        timeout_ms: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[str] = None,
    ) -> ExecResult:
        """Runs ``code`` with the template's interpreter (``python3 -c`` for
        python, ``node -e`` for node, ``sh -c`` for base).

        A non-zero exit is not an exception; check ``result.exit_code``.
        """
        params = p.drop_none(id=self.id, code=code, timeout_ms=timeout_ms, env=dict(env) if env else None, stdin=stdin)
        result = self.client.call("run", params, timeout=p.exec_timeout(self.client.timeout, timeout_ms))
        return ExecResult.from_json(result)

    def exec(
        self,
        cmd: p.Command,
        timeout_ms: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
        user: Optional[User] = None,
    ) -> ExecResult:
        """Runs a command: a list is an argv run as is; a string is run by
        ``/bin/sh -c``.

        Args:
            cmd: ``["ls", "-l"]`` or ``"ls -l | wc -l"``.
            timeout_ms: Kill the command after this long (server default
                30 s); the result then has ``timed_out=True``.
            env: Extra environment variables.
            cwd: Working directory (default ``/workspace``).
            stdin: Text fed to the command's standard input.
            user: ``"user"`` (default, uid 1000) or ``"root"``.
        """
        params = p.drop_none(
            id=self.id,
            cmd=p.command_param(cmd),
            timeout_ms=timeout_ms,
            env=dict(env) if env else None,
            cwd=cwd,
            stdin=stdin,
            user=user,
        )
        result = self.client.call("exec", params, timeout=p.exec_timeout(self.client.timeout, timeout_ms))
        return ExecResult.from_json(result)

    # -- files --------------------------------------------------------------

    def write_file(
        self,
        path: str,
        content: p.Content,
        mode: Union[int, str, None] = None,
        user: Optional[User] = None,
    ) -> WriteResult:
        """Writes a file, creating parent directories. ``str`` content is
        written as UTF-8. Relative paths are relative to ``/workspace``.

        ``mode`` is an int (``0o755``) or an octal string (``"0755"``);
        the default is 0644.
        """
        params = p.drop_none(id=self.id, path=path, content=p.b64encode(content), mode=p.mode_param(mode), user=user)
        result = self.client.call("writeFile", params)
        return WriteResult(path=result["path"], size=result["size"])

    def read_file(self, path: str, user: Optional[User] = None) -> bytes:
        """Reads a file's bytes."""
        result = self.client.call("readFile", p.drop_none(id=self.id, path=path, user=user))
        return p.b64decode(result["content"])

    def read_file_text(self, path: str, encoding: str = "utf-8", user: Optional[User] = None) -> str:
        """Reads a file and decodes it (UTF-8 by default)."""
        return self.read_file(path, user=user).decode(encoding)

    def list_dir(self, path: str = "/workspace", user: Optional[User] = None) -> List[FileEntry]:
        """Lists a directory's entries."""
        result = self.client.call("listDir", p.drop_none(id=self.id, path=path, user=user))
        return [FileEntry.from_json(e) for e in result["entries"]]

    def stat(self, path: str, user: Optional[User] = None) -> FileEntry:
        """Describes one path (a symlink itself, not its target)."""
        result = self.client.call("stat", p.drop_none(id=self.id, path=path, user=user))
        return FileEntry.from_json(result["entry"])

    def make_dir(self, path: str, user: Optional[User] = None) -> FileEntry:
        """Creates a directory and its parents. Raises
        :class:`~capsule_sdk.AlreadyExistsError` if it exists."""
        result = self.client.call("makeDir", p.drop_none(id=self.id, path=path, user=user))
        return FileEntry.from_json(result["entry"])

    def remove(self, path: str, user: Optional[User] = None) -> None:
        """Removes a file, or a directory with everything in it."""
        self.client.call("remove", p.drop_none(id=self.id, path=path, user=user))

    # -- lifetime -----------------------------------------------------------

    def set_timeout(self, ttl_ms: int) -> datetime:
        """Gives the sandbox a new time to live, counted from now; returns the
        new expiry time."""
        result = self.client.call("setTimeout", {"id": self.id, "ttl_ms": ttl_ms})
        self.expires_at = parse_timestamp(result["expires_at"])
        return self.expires_at

    def pause(self) -> PauseResult:
        """Freezes every process of the sandbox; its memory, files and
        processes stay as they are. Any later call that needs the sandbox
        (exec, files, terminal) resumes it. Pausing a paused sandbox does
        nothing."""
        result = PauseResult.from_json(self.client.call("pause", {"id": self.id}))
        self.expires_at = result.expires_at
        return result

    def resume(self) -> PauseResult:
        """Thaws a paused sandbox ahead of the next call (calls resume it
        anyway). Resuming a running sandbox does nothing."""
        result = PauseResult.from_json(self.client.call("resume", {"id": self.id}))
        self.expires_at = result.expires_at
        return result

    def stats(self) -> SandboxStats:
        """The sandbox's resource use now (CPU time, memory, processes,
        disk), with its limits."""
        return SandboxStats.from_json(self.client.call("stats", {"id": self.id}))

    # -- snapshots and forks ------------------------------------------------

    def snapshot(self, name: Optional[str] = None) -> SnapshotInfo:
        """Captures the sandbox's files (not its memory or processes) as a
        snapshot to create new sandboxes from
        (``client.create(snapshot=...)``). The sandbox is frozen for the
        moment of the capture, then goes on.

        Args:
            name: A name to create from, unique among the snapshots: 1 to 63
                of ``a-z 0-9 . _ -``. Raises
                :class:`~capsule_sdk.AlreadyExistsError` if it is taken.
        """
        result = self.client.call("snapshot", p.drop_none(id=self.id, name=name))
        return SnapshotInfo.from_json(result)

    def fork(
        self,
        count: int = 1,
        ttl_ms: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> List["Capsule"]:
        """Makes ``count`` (1 to 64) new sandboxes whose files start as
        copies of this one's now, with the same template, limits,
        environment, metadata and volumes. All or nothing.

        Args:
            count: How many copies.
            ttl_ms: Time to live of the copies (default: this sandbox's
                remaining time).
            metadata: Added to this sandbox's metadata on each copy.
        """
        params = p.drop_none(
            id=self.id, count=count, ttl_ms=ttl_ms, metadata=dict(metadata) if metadata else None
        )
        result = self.client.call("fork", params)
        return [Capsule(self.client, s) for s in result["sandboxes"]]

    def delete(self) -> None:
        """Deletes the sandbox (its processes and files) and closes the
        terminals this object opened."""
        try:
            self.client.call("delete", {"id": self.id})
        finally:
            for term in list(self._terminals):
                term.close()

    # -- terminal -----------------------------------------------------------

    def terminal(self, cols: int = 80, rows: int = 24, timeout: Optional[float] = None) -> Terminal:
        """Opens an interactive shell in the sandbox, in a ``cols`` x ``rows``
        terminal. See :class:`~capsule_sdk.Terminal`."""
        term = Terminal.open(
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

    def _forget_terminal(self, term: Terminal) -> None:
        if term in self._terminals:
            self._terminals.remove(term)

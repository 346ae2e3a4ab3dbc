"""Typed results of the Capsule API."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "ExecResult",
    "FileEntry",
    "PauseResult",
    "PoolInfo",
    "SandboxInfo",
    "SandboxStats",
    "SnapshotInfo",
    "TemplateInfo",
    "VolumeInfo",
    "VolumeMount",
    "WriteResult",
    "parse_timestamp",
]

_TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp(text: str) -> datetime:
    """Parses the server's RFC 3339 timestamps (``2024-01-19T10:00:00Z``,
    optionally with fractional seconds) into an aware UTC ``datetime``."""
    m = _TIMESTAMP.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m.group(7) or "0")[:6].ljust(6, "0"))
    zone = m.group(8)
    if zone == "Z":
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz).astimezone(timezone.utc)


@dataclass(frozen=True)
class ExecResult:
    """What a command (``exec``) or a piece of code (``run``) did.

    Attributes:
        stdout: Standard output, decoded as UTF-8 (invalid bytes replaced).
        stderr: Standard error, decoded the same way.
        exit_code: The exit status; ``-1`` when a signal ended the process.
        timed_out: True when the command ran past its timeout and was killed.
        duration_ms: How long it ran, in milliseconds.
        signal: The signal that ended the process, if one did.
        stdout_truncated: True when stdout passed the server's output cap.
        stderr_truncated: True when stderr passed the server's output cap.
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    duration_ms: int
    signal: Optional[int] = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ExecResult":
        return cls(
            stdout=obj["stdout"],
            stderr=obj["stderr"],
            exit_code=obj["exit_code"],
            timed_out=obj["timed_out"],
            duration_ms=obj["duration_ms"],
            signal=obj.get("signal"),
            stdout_truncated=bool(obj.get("stdout_truncated", False)),
            stderr_truncated=bool(obj.get("stderr_truncated", False)),
        )


@dataclass(frozen=True)
class FileEntry:
    """A file, directory or link in a sandbox.

    Attributes:
        name: The last component of the path.
        path: The absolute path in the sandbox.
        type: ``"file"``, ``"dir"``, ``"symlink"`` or ``"other"``.
        size: Size in bytes.
        mode: Permission bits as an int (``0o644`` is 420).
        modified_at: Last modification time (UTC).
        symlink_target: Where a symlink points, for symlinks.
    """

    name: str
    path: str
    type: str
    size: int
    mode: int
    modified_at: datetime
    symlink_target: Optional[str] = None

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_symlink(self) -> bool:
        return self.type == "symlink"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "FileEntry":
        return cls(
            name=obj["name"],
            path=obj["path"],
            type=obj["type"],
            size=obj["size"],
            mode=obj["mode"],
            modified_at=parse_timestamp(obj["modified_at"]),
            symlink_target=obj.get("symlink_target"),
        )


@dataclass(frozen=True)
class WriteResult:
    """Where ``write_file`` wrote (absolute path) and how many bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class SandboxInfo:
    """What the server knows about a sandbox.

    Attributes:
        id: The sandbox id (8 characters, ``[a-z0-9]``).
        template: The template it was created from.
        state: ``"creating"``, ``"running"``, ``"paused"``, ``"stopping"``,
            ``"deleted"`` or ``"failed"``.
        created_at: When it was created (UTC).
        expires_at: When it will be deleted unless its timeout is changed.
        cpu: CPU cores it may use.
        memory_mb: Memory limit in MiB.
        metadata: The metadata given at creation.
        error: Why it failed, when ``state`` is ``"failed"``.
        runtime: The isolation backend it runs on (``"native"``,
            ``"gvisor"``, ...); ``None`` from servers that do not say.
    """

    id: str
    template: str
    state: str
    created_at: datetime
    expires_at: datetime
    cpu: float
    memory_mb: int
    metadata: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None
    runtime: Optional[str] = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "SandboxInfo":
        return cls(
            id=obj["id"],
            template=obj["template"],
            state=obj["state"],
            created_at=parse_timestamp(obj["created_at"]),
            expires_at=parse_timestamp(obj["expires_at"]),
            cpu=float(obj["cpu"]),
            memory_mb=obj["memory_mb"],
            metadata=dict(obj.get("metadata") or {}),
            error=obj.get("error"),
            runtime=obj.get("runtime") or None,
        )


@dataclass(frozen=True)
class TemplateInfo:
    """A template the server knows.

    Attributes:
        name: The name to pass to ``create``.
        description: One line about what is in it.
        available: Whether this server can run it.
        run: How ``run`` executes code, e.g. ``["python3", "-c"]``.
        reason: Why it is unavailable, when it is.
    """

    name: str
    description: str
    available: bool
    run: List[str]
    reason: Optional[str] = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "TemplateInfo":
        return cls(
            name=obj["name"],
            description=obj.get("description", ""),
            available=bool(obj["available"]),
            run=list(obj.get("run") or []),
            reason=obj.get("reason"),
        )


@dataclass(frozen=True)
class VolumeMount:
    """A volume to mount into a new sandbox (``volumes`` of ``create``).

    Attributes:
        name: The volume's name (see ``create_volume``).
        path: Where it appears in the sandbox: an absolute path, not ``/``
            and not under ``/proc``, ``/sys``, ``/dev``, ``/tmp`` or ``/run/capsule``.
        read_only: Mount it read-only (the safe way to share one volume).
    """

    name: str
    path: str
    read_only: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "path": self.path, "read_only": self.read_only}


@dataclass(frozen=True)
class PauseResult:
    """What ``pause`` and ``resume`` report.

    Attributes:
        id: The sandbox id.
        state: ``"paused"`` after ``pause``, ``"running"`` after ``resume``.
        expires_at: Its end time as it stands (a resume moves it later by
            the time spent paused, unless the server counts paused time).
    """

    id: str
    state: str
    expires_at: datetime

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "PauseResult":
        return cls(id=obj["id"], state=obj["state"], expires_at=parse_timestamp(obj["expires_at"]))


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot: a sandbox's files at one moment, to create sandboxes from
    (``create(snapshot=...)``).

    Attributes:
        snapshot_id: Its id, e.g. ``"snap-x82kq0ma"``.
        name: The name it was given, if any.
        source: The id of the sandbox it was taken of.
        template: The template of that sandbox (and of sandboxes made from it).
        created_at: When it was taken (UTC).
        size_bytes: Bytes of its own files (beyond the template's).
    """

    snapshot_id: str
    source: str
    template: str
    created_at: datetime
    size_bytes: int
    name: Optional[str] = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "SnapshotInfo":
        return cls(
            snapshot_id=obj["snapshot_id"],
            source=obj["source"],
            template=obj["template"],
            created_at=parse_timestamp(obj["created_at"]),
            size_bytes=obj["size_bytes"],
            name=obj.get("name"),
        )


@dataclass(frozen=True)
class VolumeInfo:
    """A named persistent volume.

    Attributes:
        name: Its name, unique within the tenant.
        size_bytes: Its size limit in bytes.
        created_at: When it was made (UTC).
        used_by: Ids of the running sandboxes that mount it.
    """

    name: str
    size_bytes: int
    created_at: datetime
    used_by: List[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "VolumeInfo":
        return cls(
            name=obj["name"],
            size_bytes=obj["size_bytes"],
            created_at=parse_timestamp(obj["created_at"]),
            used_by=list(obj.get("used_by") or []),
        )


@dataclass(frozen=True)
class SandboxStats:
    """A sandbox's resource use now, with its limits. Figures the server's
    backend cannot measure are ``None``.

    Attributes:
        id: The sandbox id.
        state: ``"running"`` or ``"paused"``.
        memory_limit_bytes: Its memory limit.
        pids_limit: Its process limit.
        cpu_ns: CPU time used since it started, in nanoseconds.
        memory_bytes: Memory in use.
        memory_peak_bytes: The most memory it has used.
        pids: Processes running.
        disk_bytes: Bytes of its own files.
        disk_limit_bytes: Its disk limit, when one is enforced.
        network_rx_bytes: Bytes received, where it has a network.
        network_tx_bytes: Bytes sent, where it has a network.
    """

    id: str
    state: str
    memory_limit_bytes: int
    pids_limit: int
    cpu_ns: Optional[int] = None
    memory_bytes: Optional[int] = None
    memory_peak_bytes: Optional[int] = None
    pids: Optional[int] = None
    disk_bytes: Optional[int] = None
    disk_limit_bytes: Optional[int] = None
    network_rx_bytes: Optional[int] = None
    network_tx_bytes: Optional[int] = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "SandboxStats":
        return cls(
            id=obj["id"],
            state=obj["state"],
            memory_limit_bytes=obj["memory_limit_bytes"],
            pids_limit=obj["pids_limit"],
            cpu_ns=obj.get("cpu_ns"),
            memory_bytes=obj.get("memory_bytes"),
            memory_peak_bytes=obj.get("memory_peak_bytes"),
            pids=obj.get("pids"),
            disk_bytes=obj.get("disk_bytes"),
            disk_limit_bytes=obj.get("disk_limit_bytes"),
            network_rx_bytes=obj.get("network_rx_bytes"),
            network_tx_bytes=obj.get("network_tx_bytes"),
        )


@dataclass(frozen=True)
class PoolInfo:
    """A warm pool of ready sandboxes of one template.

    Attributes:
        template: The template it keeps sandboxes of.
        size: How many ready sandboxes the server keeps.
        ready: How many are ready now.
    """

    template: str
    size: int
    ready: int

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "PoolInfo":
        return cls(template=obj["template"], size=obj["size"], ready=obj["ready"])

"""Python client for Capsule, the self-hosted sandbox platform for AI agents.

Quick start::

    from capsule_sdk import CapsuleClient

    client = CapsuleClient("http://localhost:8080")
    with client.create("python") as capsule:
        result = capsule.run("print(sum(range(10)))")
        print(result.stdout)  # "45\\n"

For asyncio, use :class:`AsyncCapsuleClient` (same methods, awaited).
"""

from ._protocol import __version__
from .aio import AsyncCapsule, AsyncCapsuleClient, AsyncTerminal
from .client import Capsule, CapsuleClient
from .errors import (
    CapsuleError,
    CapsuleConnectionError,
    CapsuleTimeoutError,
    TerminalClosedError,
    ProtocolError,
    InvalidParamsError,
    InternalServerError,
    SandboxNotFoundError,
    SandboxExpiredError,
    SandboxNotRunningError,
    TemplateNotFoundError,
    TemplateUnavailableError,
    FileNotFoundInSandboxError,
    PathOutsideSandboxError,
    NotADirectoryInSandboxError,
    IsADirectoryInSandboxError,
    AlreadyExistsError,
    PermissionDeniedError,
    PayloadTooLargeError,
    QuotaExceededError,
    UnauthorizedError,
    OperationTimeoutError,
    UnsupportedError,
    UnavailableError,
    SandboxNotFound,
    SandboxExpired,
    SandboxNotRunning,
    TemplateNotFound,
    TemplateUnavailable,
    FileNotFound,
    PathOutsideSandbox,
    NotADirectory,
    IsADirectory,
    AlreadyExists,
    PermissionDenied,
    InvalidParams,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    Timeout,
    Unsupported,
    Unavailable,
)
from .models import ExecResult, FileEntry, SandboxInfo, TemplateInfo, WriteResult
from .terminal import Terminal

__all__ = [
    "__version__",
    "CapsuleClient",
    "Capsule",
    "Terminal",
    "AsyncCapsuleClient",
    "AsyncCapsule",
    "AsyncTerminal",
    "ExecResult",
    "FileEntry",
    "SandboxInfo",
    "TemplateInfo",
    "WriteResult",
    "CapsuleError",
    "CapsuleConnectionError",
    "CapsuleTimeoutError",
    "TerminalClosedError",
    "ProtocolError",
    "InvalidParamsError",
    "InternalServerError",
    "SandboxNotFoundError",
    "SandboxExpiredError",
    "SandboxNotRunningError",
    "TemplateNotFoundError",
    "TemplateUnavailableError",
    "FileNotFoundInSandboxError",
    "PathOutsideSandboxError",
    "NotADirectoryInSandboxError",
    "IsADirectoryInSandboxError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "UnauthorizedError",
    "OperationTimeoutError",
    "UnsupportedError",
    "UnavailableError",
    "SandboxNotFound",
    "SandboxExpired",
    "SandboxNotRunning",
    "TemplateNotFound",
    "TemplateUnavailable",
    "FileNotFound",
    "PathOutsideSandbox",
    "NotADirectory",
    "IsADirectory",
    "AlreadyExists",
    "PermissionDenied",
    "InvalidParams",
    "PayloadTooLarge",
    "QuotaExceeded",
    "Unauthorized",
    "Timeout",
    "Unsupported",
    "Unavailable",
]

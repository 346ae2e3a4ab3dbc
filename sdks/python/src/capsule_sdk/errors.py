"""Exceptions raised by the Capsule SDK.

Every error the server reports carries a stable ``kind`` (``data.kind`` in the
JSON-RPC error). The SDK raises one exception class per kind, all derived from
:class:`CapsuleError`, so callers can catch exactly what they expect::

    try:
        capsule.read_file("missing.txt")
    except FileNotFound:
        ...

Problems talking to the server at all (refused connections, DNS failures,
requests that take too long) raise :class:`CapsuleConnectionError` or
:class:`CapsuleTimeoutError` instead.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
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
    # Short aliases.
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
    "error_from_payload",
]


class CapsuleError(Exception):
    """Base class of every error the SDK raises.

    Attributes:
        message: The human-readable message (the server's, when it sent one).
        kind: The machine-readable error kind, e.g. ``"sandbox_not_found"``;
            ``None`` for errors that did not come from the server.
        code: The JSON-RPC error code, e.g. ``-32001``; ``None`` when there
            was none.
        data: The error's ``data`` object (always holds ``kind``; often also
            ``id`` or ``path``). Empty when there was none.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        code: Optional[int] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.code = code
        self.data: Dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, kind={self.kind!r}, code={self.code!r})"


class CapsuleConnectionError(CapsuleError):
    """The server could not be reached, or the connection broke."""


class CapsuleTimeoutError(CapsuleError, TimeoutError):
    """The server (or a terminal) did not answer in time."""


class TerminalClosedError(CapsuleError):
    """The terminal's WebSocket is closed (usually because the shell exited).

    Attributes:
        close_code: The WebSocket close code (1000 when the shell exited).
        reason: The close reason, e.g. ``"exit status 0"``.
    """

    def __init__(self, message: str, *, close_code: Optional[int] = None, reason: str = "") -> None:
        super().__init__(message)
        self.close_code = close_code
        self.reason = reason


class ProtocolError(CapsuleError):
    """The server did not understand the request (``parse_error``,
    ``invalid_request``, ``method_not_found``), or answered with something
    that is not a JSON-RPC response. Usually an SDK/server version mismatch."""


class InvalidParamsError(CapsuleError):
    """A parameter was missing, misspelt or out of range (``invalid_params``)."""


class InternalServerError(CapsuleError):
    """The server failed unexpectedly (``internal``)."""


class SandboxNotFoundError(CapsuleError):
    """No sandbox has this id (``sandbox_not_found``)."""


class SandboxExpiredError(CapsuleError):
    """The sandbox reached the end of its time to live (``sandbox_expired``)."""


class SandboxNotRunningError(CapsuleError):
    """The sandbox exists but is not running (``sandbox_not_running``)."""


class TemplateNotFoundError(CapsuleError):
    """No template has this name (``template_not_found``)."""


class TemplateUnavailableError(CapsuleError):
    """The template exists but this server cannot run it (``template_unavailable``)."""


class FileNotFoundInSandboxError(CapsuleError):
    """The path does not exist in the sandbox (``file_not_found``)."""


class PathOutsideSandboxError(CapsuleError):
    """The path climbs out of the sandbox (``path_outside_sandbox``)."""


class NotADirectoryInSandboxError(CapsuleError):
    """A directory was expected (``not_a_directory``)."""


class IsADirectoryInSandboxError(CapsuleError):
    """A file was expected but the path is a directory (``is_a_directory``)."""


class AlreadyExistsError(CapsuleError):
    """The path already exists (``already_exists``)."""


class PermissionDeniedError(CapsuleError):
    """The sandbox user may not do this (``permission_denied``)."""


class PayloadTooLargeError(CapsuleError):
    """The request was larger than the server accepts (``payload_too_large``)."""


class QuotaExceededError(CapsuleError):
    """A server limit was reached, e.g. too many sandboxes (``quota_exceeded``)."""


class UnauthorizedError(CapsuleError):
    """The server refused the credentials (``unauthorized``)."""


class OperationTimeoutError(CapsuleError, TimeoutError):
    """The server gave up on an operation that took too long (``timeout``).

    Note that a command that runs past its own ``timeout_ms`` is *not* an
    error: ``exec`` returns a result with ``timed_out=True``.
    """


class UnsupportedError(CapsuleError):
    """The server does not support this (``unsupported``)."""


class UnavailableError(CapsuleError):
    """The server cannot serve this right now (``unavailable``)."""


# Short aliases, for code that prefers the kind's name.
SandboxNotFound = SandboxNotFoundError
SandboxExpired = SandboxExpiredError
SandboxNotRunning = SandboxNotRunningError
TemplateNotFound = TemplateNotFoundError
TemplateUnavailable = TemplateUnavailableError
FileNotFound = FileNotFoundInSandboxError
PathOutsideSandbox = PathOutsideSandboxError
NotADirectory = NotADirectoryInSandboxError
IsADirectory = IsADirectoryInSandboxError
AlreadyExists = AlreadyExistsError
PermissionDenied = PermissionDeniedError
InvalidParams = InvalidParamsError
PayloadTooLarge = PayloadTooLargeError
QuotaExceeded = QuotaExceededError
Unauthorized = UnauthorizedError
Timeout = OperationTimeoutError
Unsupported = UnsupportedError
Unavailable = UnavailableError

#: The exception class raised for each error kind.
ERROR_CLASSES: Dict[str, Type[CapsuleError]] = {
    "parse_error": ProtocolError,
    "invalid_request": ProtocolError,
    "method_not_found": ProtocolError,
    "invalid_params": InvalidParamsError,
    "internal": InternalServerError,
    "sandbox_not_found": SandboxNotFoundError,
    "sandbox_expired": SandboxExpiredError,
    "sandbox_not_running": SandboxNotRunningError,
    "template_not_found": TemplateNotFoundError,
    "template_unavailable": TemplateUnavailableError,
    "file_not_found": FileNotFoundInSandboxError,
    "path_outside_sandbox": PathOutsideSandboxError,
    "not_a_directory": NotADirectoryInSandboxError,
    "is_a_directory": IsADirectoryInSandboxError,
    "already_exists": AlreadyExistsError,
    "permission_denied": PermissionDeniedError,
    "payload_too_large": PayloadTooLargeError,
    "quota_exceeded": QuotaExceededError,
    "unauthorized": UnauthorizedError,
    "timeout": OperationTimeoutError,
    "unsupported": UnsupportedError,
    "unavailable": UnavailableError,
}

# Used when an error has no `data.kind` (e.g. from an older server).
_KIND_BY_CODE: Dict[int, str] = {
    -32700: "parse_error",
    -32600: "invalid_request",
    -32601: "method_not_found",
    -32602: "invalid_params",
    -32603: "internal",
    -32001: "sandbox_not_found",
    -32002: "sandbox_expired",
    -32003: "sandbox_not_running",
    -32004: "template_not_found",
    -32005: "template_unavailable",
    -32006: "file_not_found",
    -32007: "path_outside_sandbox",
    -32008: "not_a_directory",
    -32009: "is_a_directory",
    -32010: "already_exists",
    -32011: "permission_denied",
    -32012: "payload_too_large",
    -32013: "quota_exceeded",
    -32014: "unauthorized",
    -32015: "timeout",
    -32016: "unsupported",
    -32017: "unavailable",
}


def error_from_payload(error: Any) -> CapsuleError:
    """Builds the exception for a JSON-RPC ``error`` object.

    Unknown kinds become a plain :class:`CapsuleError` that still carries the
    kind, so newer servers do not break older clients.
    """
    if not isinstance(error, dict):
        return ProtocolError(f"the server sent a malformed error: {error!r}")
    code = error.get("code")
    code = code if isinstance(code, int) else None
    data = error.get("data")
    data = data if isinstance(data, dict) else {}
    kind = data.get("kind")
    if not isinstance(kind, str):
        kind = _KIND_BY_CODE.get(code) if code is not None else None
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"the server reported an error ({kind or code})"
    cls = ERROR_CLASSES.get(kind or "", CapsuleError)
    return cls(message, kind=kind, code=code, data=data)

"""Wire-level helpers shared by the sync and async clients: the JSON-RPC
envelope, parameter building and error decoding. No I/O happens here."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import urlencode, urlsplit

from .errors import CapsuleError, ProtocolError, UnauthorizedError, error_from_payload
from .models import VolumeMount

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://localhost:8080"
#: Seconds to wait for an answer to any call but exec/run.
DEFAULT_TIMEOUT = 60.0
#: The server's default `timeout_ms` for exec and run.
SERVER_EXEC_TIMEOUT_MS = 30_000
#: Extra seconds exec/run get on top of the command's own timeout, for the
#: server to start the process, kill it on timeout and answer.
EXEC_GRACE = 30.0

USER_AGENT = f"capsule-sdk-python/{__version__}"

Content = Union[str, bytes, bytearray, memoryview]
Command = Union[str, Sequence[str]]
#: A volume to mount at create: a :class:`VolumeMount` or the wire's
#: ``{"name": ..., "path": ..., "read_only": ...}``.
Volume = Union[VolumeMount, Mapping[str, Any]]


def normalize_base_url(base_url: str) -> str:
    """Checks the URL is http(s) and drops a trailing slash."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
    return url


def request_headers(api_key: Optional[str]) -> Dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def full_method(method: str) -> str:
    """`exec` -> `sandbox.v1.exec`; full names pass through."""
    return method if "." in method else f"sandbox.v1.{method}"


def encode_request(request_id: int, method: str, params: Optional[Mapping[str, Any]]) -> bytes:
    envelope: Dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": full_method(method)}
    if params is not None:
        envelope["params"] = dict(params)
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


def decode_response(status: int, body: bytes, url: str, method: str) -> Any:
    """Returns the `result` of a JSON-RPC response or raises its error."""
    try:
        payload = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        payload = None
    if isinstance(payload, dict):
        if "error" in payload:
            raise error_from_payload(payload["error"])
        if "result" in payload:
            return payload["result"]
    # Not JSON-RPC: a proxy's error page, a wrong URL, another server...
    message = payload.get("message") if isinstance(payload, dict) else None
    detail = message if isinstance(message, str) and message else body[:200].decode("utf-8", "replace")
    hint = " (is this a Capsule server?)" if status in (404, 405) else ""
    raise ProtocolError(
        f"{full_method(method)}: the server at {url} answered HTTP {status} "
        f"without a JSON-RPC response{hint}: {detail!r}"
    )


#: Requests at least this large get a hint about the server's size limit
#: when the connection drops while they are sent.
LARGE_REQUEST = 1 << 20


def request_options(body: bytes) -> Dict[str, str]:
    """Extra headers for one request.

    Large bodies go on a connection of their own (``Connection: close``): when
    the server refuses a body as too large it answers 413 and then drops the
    connection without saying so, and a pooled connection reused after that
    fails the *next* request with "server disconnected".
    """
    return {"Connection": "close"} if len(body) >= LARGE_REQUEST else {}


def connection_error_message(base_url: str, method: str, body_size: int, error: Exception) -> str:
    message = f"cannot reach the Capsule server at {base_url}: {error}"
    if body_size >= LARGE_REQUEST:
        message += (
            f" (the connection dropped during a {body_size}-byte {full_method(method)} request; "
            "the server may have refused it as larger than it accepts, see `capsule serve --max-request-bytes`)"
        )
    return message


def exec_timeout(client_timeout: float, timeout_ms: Optional[int]) -> float:
    """How long to wait for exec/run: the command's own limit plus grace."""
    command = (timeout_ms if timeout_ms is not None else SERVER_EXEC_TIMEOUT_MS) / 1000.0
    return max(client_timeout, command + EXEC_GRACE)


def drop_none(**params: Any) -> Dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def to_bytes(content: Content) -> bytes:
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content)
    raise TypeError(f"file content must be str or bytes, got {type(content).__name__}")


def b64encode(content: Content) -> str:
    return base64.b64encode(to_bytes(content)).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def mode_param(mode: Union[int, str, None]) -> Union[int, str, None]:
    """Accepts ``0o644``, ``420`` or ``"0644"``; the server takes either form."""
    if mode is None or isinstance(mode, str):
        return mode
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int such as 0o644 or an octal string such as '0644', got {mode!r}")
    return mode


def volumes_param(volumes: Optional[Sequence[Volume]]) -> Optional[List[Dict[str, Any]]]:
    """``create``'s ``volumes``: each a :class:`VolumeMount` or a mapping."""
    if not volumes:
        return None
    out: List[Dict[str, Any]] = []
    for v in volumes:
        if isinstance(v, VolumeMount):
            out.append(v.to_json())
        elif isinstance(v, Mapping):
            out.append(dict(v))
        else:
            raise TypeError(f"a volume must be a VolumeMount or a mapping, got {type(v).__name__}")
    return out


def command_param(cmd: Command) -> Union[str, List[str]]:
    if isinstance(cmd, str):
        return cmd
    if isinstance(cmd, (bytes, bytearray)):
        raise TypeError("cmd must be a str (run by /bin/sh -c) or a sequence of str (argv), not bytes")
    return [str(a) for a in cmd]


def terminal_url(base_url: str, sandbox_id: str, cols: int, rows: int) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/")
    query = urlencode({"cols": cols, "rows": rows})
    return f"{scheme}://{parts.netloc}{path}/terminal/{sandbox_id}?{query}"


def handshake_error(status: int, body: Union[bytes, bytearray], url: str) -> CapsuleError:
    """The error for a terminal upgrade the server refused with HTTP `status`."""
    body = bytes(body)
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return error_from_payload(payload["error"])
    # Other shapes, e.g. {"code": 401, "message": "..."} from an auth layer.
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, str) or not message:
        message = body[:200].decode("utf-8", "replace")
    if status == 401:
        return UnauthorizedError(
            f"the server refused the terminal at {url}: {message}",
            kind="unauthorized",
            code=-32014,
            data={"kind": "unauthorized"},
        )
    return ProtocolError(f"the server refused the terminal at {url} with HTTP {status}: {message!r}")


def resize_message(cols: int, rows: int) -> bytes:
    for name, value in (("cols", cols), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
            raise ValueError(f"{name} must be an int from 1 to 4096, got {value!r}")
    return json.dumps({"type": "resize", "cols": cols, "rows": rows}).encode("ascii")


def keyboard_text(data: Union[str, bytes]) -> str:
    """Terminal input goes in text frames, so bytes must be UTF-8."""
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8")
    raise TypeError(f"terminal input must be str or bytes, got {type(data).__name__}")

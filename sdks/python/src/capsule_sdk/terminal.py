"""Interactive terminals (blocking)."""

from __future__ import annotations

import inspect
import re
import time
from typing import Any, Callable, Dict, Iterator, Optional, Pattern, Union

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.sync.client import ClientConnection, connect

from . import _protocol as p
from .errors import CapsuleConnectionError, CapsuleError, CapsuleTimeoutError, TerminalClosedError

__all__ = ["Terminal"]

# websockets 17.1+ warns when connect() is called outside a `with` unless the
# caller opts into a long-lived connection with legacy=True; older versions
# do not know the flag.
_CONNECT_OPTIONS: Dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


def closed_error(code: Optional[int], reason: str, seen: str = "") -> TerminalClosedError:
    what = reason or (f"close code {code}" if code is not None else "the connection was lost")
    message = f"the terminal is closed ({what})"
    if seen:
        message += f"; last output: {seen[-200:]!r}"
    return TerminalClosedError(message, close_code=code, reason=reason)


class Terminal:
    """A shell in a sandbox, over a WebSocket. Open one with
    :meth:`capsule_sdk.Capsule.terminal`.

    Everything sent is keyboard input; everything received is terminal output
    (with the shell's echo, prompts and escape sequences). Use it as a context
    manager, or call :meth:`close`::

        with capsule.terminal(cols=120, rows=40) as term:
            term.send("echo hi\\n")
            term.expect("hi")
    """

    def __init__(self, connection: ClientConnection, on_close: Optional[Callable[["Terminal"], None]] = None) -> None:
        self._ws = connection
        self._buffer = ""
        self._on_close = on_close
        self.close_code: Optional[int] = None
        """The WebSocket close code, once closed (1000 when the shell exited)."""
        self.close_reason: str = ""
        """The close reason, once closed, e.g. ``"exit status 0"``."""
        self.closed = False
        """True once the terminal is closed, by either side."""

    @classmethod
    def open(
        cls,
        base_url: str,
        sandbox_id: str,
        *,
        cols: int,
        rows: int,
        headers: Dict[str, str],
        timeout: float,
        on_close: Optional[Callable[["Terminal"], None]] = None,
    ) -> "Terminal":
        p.resize_message(cols, rows)  # validates the size
        url = p.terminal_url(base_url, sandbox_id, cols, rows)
        try:
            ws = connect(url, additional_headers=headers, open_timeout=timeout, max_size=None, **_CONNECT_OPTIONS)
        except InvalidStatus as e:
            raise p.handshake_error(e.response.status_code, e.response.body or b"", url) from None
        except TimeoutError as e:
            raise CapsuleTimeoutError(f"the terminal at {url} did not open within {timeout}s") from e
        except (OSError, InvalidURI, WebSocketException) as e:
            raise CapsuleConnectionError(f"cannot reach the Capsule server at {base_url}: {e}") from e
        return cls(ws, on_close)

    def send(self, data: Union[str, bytes]) -> None:
        """Types ``data`` (a str, or UTF-8 bytes) into the terminal.
        Remember the newline: ``send("ls\\n")``."""
        text = p.keyboard_text(data)
        try:
            self._ws.send(text)
        except ConnectionClosed as e:
            raise self._closed(e) from None

    def resize(self, cols: int, rows: int) -> None:
        """Changes the terminal size; programs in it see ``SIGWINCH``."""
        message = p.resize_message(cols, rows)
        try:
            self._ws.send(message)
        except ConnectionClosed as e:
            raise self._closed(e) from None

    def recv(self, timeout: Optional[float] = None) -> str:
        """Returns the next output (any text :meth:`expect` left over first).

        Raises :class:`~capsule_sdk.CapsuleTimeoutError` when nothing arrives
        within ``timeout`` seconds (``None`` waits forever), and
        :class:`~capsule_sdk.TerminalClosedError` once the terminal is closed.
        """
        if self._buffer:
            out, self._buffer = self._buffer, ""
            return out
        return self._recv(timeout)

    def _recv(self, timeout: Optional[float]) -> str:
        if self.closed:
            raise closed_error(self.close_code, self.close_reason)
        try:
            data = self._ws.recv(timeout=timeout)
        except TimeoutError:
            raise CapsuleTimeoutError(f"no terminal output within {timeout}s") from None
        except ConnectionClosed as e:
            raise self._closed(e) from None
        return data if isinstance(data, str) else data.decode("utf-8", "replace")

    def expect(self, pattern: Union[str, Pattern[str]], timeout: float = 10.0) -> str:
        """Reads output until ``pattern`` (a substring, or a compiled regex)
        appears, and returns the output up to the end of the match. Output
        after the match stays buffered for the next ``expect``/``recv``."""
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
                self._buffer += self._recv(remaining)
            except TerminalClosedError as e:
                raise closed_error(e.close_code, e.reason, self._buffer) from None

    def wait_closed(self, timeout: Optional[float] = None) -> str:
        """Waits for the server to close the terminal (e.g. after ``exit``)
        and returns the close reason, such as ``"exit status 0"``. Output
        that arrives meanwhile is discarded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.closed:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._recv(remaining)
            except TerminalClosedError:
                break
        return self.close_reason

    def close(self) -> None:
        """Closes the connection, which ends the shell. Safe to call twice."""
        if not self.closed:
            try:
                self._ws.close()
            except Exception:  # closing must never fail
                pass
            self._mark_closed(self._ws.protocol.close_code, self._ws.protocol.close_reason or "")

    def __iter__(self) -> Iterator[str]:
        """Yields output until the terminal closes."""
        while True:
            try:
                yield self.recv()
            except TerminalClosedError:
                return

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

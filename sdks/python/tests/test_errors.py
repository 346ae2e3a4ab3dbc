"""Each error kind the server reports maps onto its exception class, with
kind, code, data and message; transport problems have their own classes."""

from __future__ import annotations

import socket
import time
from typing import Type

import pytest
from capsule_server import CapsuleServer, free_port
from conftest import MAX_REQUEST_BYTES

import capsule_sdk
from capsule_sdk import (
    AlreadyExistsError,
    Capsule,
    CapsuleClient,
    CapsuleConnectionError,
    CapsuleError,
    CapsuleTimeoutError,
    FileNotFoundInSandboxError,
    InvalidParamsError,
    IsADirectoryInSandboxError,
    NotADirectoryInSandboxError,
    PathOutsideSandboxError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    SandboxExpiredError,
    SandboxNotFoundError,
    TemplateNotFoundError,
    TemplateUnavailableError,
    UnsupportedError,
)
from capsule_sdk.errors import ERROR_CLASSES, error_from_payload


def check(err: CapsuleError, cls: Type[CapsuleError], kind: str, code: int) -> None:
    assert type(err) is cls, repr(err)
    assert isinstance(err, CapsuleError)
    assert err.kind == kind
    assert err.code == code
    assert err.data["kind"] == kind
    assert err.message and str(err) == err.message


def test_sandbox_not_found(client: CapsuleClient) -> None:
    with pytest.raises(SandboxNotFoundError) as e:
        client.get("zzzzzzzz")
    check(e.value, SandboxNotFoundError, "sandbox_not_found", -32001)
    assert e.value.data["id"] == "zzzzzzzz"
    assert "zzzzzzzz" in str(e.value)
    # The short alias is the same class.
    assert capsule_sdk.SandboxNotFound is SandboxNotFoundError


def test_operations_on_a_deleted_sandbox(client: CapsuleClient) -> None:
    capsule = client.create()
    capsule.delete()
    for call in (
        lambda: capsule.exec("true"),
        lambda: capsule.run("true"),
        lambda: capsule.read_file("x"),
        lambda: capsule.write_file("x", "y"),
        lambda: capsule.list_dir(),
        lambda: capsule.set_timeout(60_000),
        lambda: capsule.terminal(),
    ):
        with pytest.raises(SandboxNotFoundError):
            call()


def test_sandbox_expired(client: CapsuleClient) -> None:
    capsule = client.create(ttl_ms=1_000)
    time.sleep(2.5)
    with pytest.raises(SandboxExpiredError) as e:
        capsule.exec(["true"])
    check(e.value, SandboxExpiredError, "sandbox_expired", -32002)
    assert capsule.id in str(e.value)
    with pytest.raises(SandboxExpiredError):
        client.get(capsule.id)
    assert capsule.id not in {s.id for s in client.list()}


def test_invalid_params(client: CapsuleClient, capsule: Capsule) -> None:
    with pytest.raises(InvalidParamsError) as e:
        client.create(ttl_ms=5)
    check(e.value, InvalidParamsError, "invalid_params", -32602)
    assert "5" in str(e.value)
    with pytest.raises(InvalidParamsError):
        client.create(cpu=0)
    with pytest.raises(InvalidParamsError):
        client.create(memory_mb=1)
    with pytest.raises(InvalidParamsError, match="/nope"):
        capsule.exec(["true"], cwd="/nope")
    with pytest.raises(InvalidParamsError):
        capsule.exec(["true"], timeout_ms=0)
    with pytest.raises(InvalidParamsError):
        capsule.exec([])
    with pytest.raises(InvalidParamsError, match="mode"):
        capsule.write_file("f", "x", mode="999")
    with pytest.raises(InvalidParamsError):
        client.get("../../x")
    # Unknown parameters are refused rather than ignored.
    with pytest.raises(InvalidParamsError, match="tll_ms"):
        client.call("create", {"tll_ms": 5})


def test_protocol_errors(client: CapsuleClient, server: CapsuleServer) -> None:
    with pytest.raises(ProtocolError) as e:
        client.call("sandbox.v1.nope")
    check(e.value, ProtocolError, "method_not_found", -32601)
    # Something that is not a Capsule server (here: a wrong path prefix).
    with CapsuleClient(server.url + "/not-capsule") as wrong:
        with pytest.raises(ProtocolError, match="HTTP 404"):
            wrong.templates()


def test_template_errors(client: CapsuleClient) -> None:
    with pytest.raises(TemplateNotFoundError) as e:
        client.create("cobol")
    check(e.value, TemplateNotFoundError, "template_not_found", -32004)
    assert "cobol" in str(e.value)
    unavailable = [t for t in client.templates() if not t.available]
    if not unavailable:
        pytest.skip("every template is available on this host")
    with pytest.raises(TemplateUnavailableError) as e2:
        client.create(unavailable[0].name)
    check(e2.value, TemplateUnavailableError, "template_unavailable", -32005)


def test_unsupported(client: CapsuleClient) -> None:
    with pytest.raises(UnsupportedError) as e:
        client.create(network="host")
    check(e.value, UnsupportedError, "unsupported", -32016)


def test_file_errors(capsule: Capsule) -> None:
    with pytest.raises(FileNotFoundInSandboxError) as e:
        capsule.read_file("/workspace/nope.txt")
    check(e.value, FileNotFoundInSandboxError, "file_not_found", -32006)
    assert e.value.data["path"] == "/workspace/nope.txt"
    with pytest.raises(FileNotFoundInSandboxError):
        capsule.stat("nope")
    with pytest.raises(FileNotFoundInSandboxError):
        capsule.list_dir("/nope")

    with pytest.raises(PathOutsideSandboxError) as e2:
        capsule.read_file("/etc/../../../etc/shadow")
    check(e2.value, PathOutsideSandboxError, "path_outside_sandbox", -32007)

    capsule.write_file("f.txt", "x")
    with pytest.raises(NotADirectoryInSandboxError) as e3:
        capsule.list_dir("f.txt")
    check(e3.value, NotADirectoryInSandboxError, "not_a_directory", -32008)
    with pytest.raises(IsADirectoryInSandboxError) as e4:
        capsule.read_file("/workspace")
    check(e4.value, IsADirectoryInSandboxError, "is_a_directory", -32009)

    capsule.make_dir("d")
    with pytest.raises(AlreadyExistsError) as e5:
        capsule.make_dir("d")
    check(e5.value, AlreadyExistsError, "already_exists", -32010)

    with pytest.raises(PermissionDeniedError) as e6:
        capsule.write_file("/etc/motd", "x")
    check(e6.value, PermissionDeniedError, "permission_denied", -32011)


def test_payload_too_large(capsule: Capsule) -> None:
    big = b"\0" * MAX_REQUEST_BYTES  # base64 makes it 4/3 larger than the limit
    with pytest.raises(PayloadTooLargeError) as e:
        capsule.write_file("big.bin", big)
    check(e.value, PayloadTooLargeError, "payload_too_large", -32012)
    assert e.value.data["limit"] == MAX_REQUEST_BYTES
    # The client and the sandbox are still fine afterwards. (The server drops
    # the connection after a 413 without a `Connection: close` header; the
    # SDK sends large bodies on their own connection so the next call does
    # not land on the dropped one. Repeat to make a reuse likely.)
    for i in range(5):
        with pytest.raises(PayloadTooLargeError):
            capsule.write_file("big.bin", big)
        assert capsule.exec(f"echo fine {i}").stdout == f"fine {i}\n"


def test_quota_exceeded() -> None:
    with CapsuleServer(args=["--max-sandboxes", "1"]) as server, CapsuleClient(server.url) as client:
        with client.create():
            with pytest.raises(QuotaExceededError) as e:
                client.create()
            check(e.value, QuotaExceededError, "quota_exceeded", -32013)


def test_connection_refused_is_a_clear_error() -> None:
    port = free_port()  # nothing listens here
    client = CapsuleClient(f"http://127.0.0.1:{port}")
    with pytest.raises(CapsuleConnectionError) as e:
        client.templates()
    assert str(e.value).startswith(f"cannot reach the Capsule server at http://127.0.0.1:{port}")
    assert e.value.kind is None


def test_slow_server_is_a_timeout_error() -> None:
    # A socket that accepts connections but never answers.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with CapsuleClient(url, timeout=0.5) as client:
            started = time.monotonic()
            with pytest.raises(CapsuleTimeoutError) as e:
                client.list()
            assert time.monotonic() - started < 10
    assert "did not answer sandbox.v1.list within 0.5s" in str(e.value)
    assert isinstance(e.value, TimeoutError)


def test_request_timeout_shorter_than_the_command(client: CapsuleClient, capsule: Capsule) -> None:
    with pytest.raises(CapsuleTimeoutError):
        client.call("exec", {"id": capsule.id, "cmd": "sleep 5"}, timeout=0.5)


def test_unknown_kinds_and_codes_still_raise_capsule_error() -> None:
    # The error decoder is a pure function; newer servers may add kinds.
    err = error_from_payload({"code": -32099, "message": "new thing", "data": {"kind": "brand_new"}})
    assert type(err) is CapsuleError and err.kind == "brand_new" and err.code == -32099
    # Without data.kind, the code decides.
    err = error_from_payload({"code": -32001, "message": "gone"})
    assert type(err) is SandboxNotFoundError and err.kind == "sandbox_not_found"
    err = error_from_payload("garbage")
    assert type(err) is ProtocolError


def test_every_documented_kind_has_a_class() -> None:
    kinds = (
        "parse_error invalid_request method_not_found invalid_params internal sandbox_not_found "
        "sandbox_expired sandbox_not_running template_not_found template_unavailable file_not_found "
        "path_outside_sandbox not_a_directory is_a_directory already_exists permission_denied "
        "payload_too_large quota_exceeded unauthorized timeout unsupported unavailable"
    ).split()
    assert sorted(ERROR_CLASSES) == sorted(kinds)
    for kind in kinds:
        assert issubclass(ERROR_CLASSES[kind], CapsuleError)
    assert capsule_sdk.Timeout is capsule_sdk.OperationTimeoutError
    assert issubclass(capsule_sdk.OperationTimeoutError, TimeoutError)

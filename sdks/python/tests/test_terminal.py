"""The interactive terminal over a real WebSocket."""

from __future__ import annotations

import re

import pytest

from capsule_sdk import (
    Capsule,
    CapsuleClient,
    CapsuleTimeoutError,
    InvalidParamsError,
    SandboxNotFoundError,
    Terminal,
    TerminalClosedError,
)

# A line of output that is exactly "hi" (the shell echoes the typed command
# "echo hi" too, so a bare "hi" would match the echo).
HI_LINE = re.compile(r"[\r\n]hi\r\n")


def test_echo(capsule: Capsule) -> None:
    with capsule.terminal() as term:
        assert isinstance(term, Terminal)
        term.send("echo hi\n")
        out = term.expect(HI_LINE)
        assert "echo hi" in out  # the echo of what was typed came first


def test_bytes_input_and_recv(capsule: Capsule) -> None:
    with capsule.terminal() as term:
        term.send(b"echo $((6 * 7))\n")
        seen = ""
        while "42" not in seen:
            seen += term.recv(timeout=10)
        with pytest.raises(CapsuleTimeoutError, match="no terminal output"):
            # Nothing is typed, so after the prompt nothing more comes.
            for _ in range(50):
                term.recv(timeout=0.5)


def test_initial_size_and_resize(capsule: Capsule) -> None:
    with capsule.terminal(cols=100, rows=30) as term:
        term.send("stty size\n")
        term.expect(re.compile(r"\b30 100\b"))
        term.resize(120, 40)
        term.send("stty size\n")
        term.expect(re.compile(r"\b40 120\b"))
        # Programs in the terminal see the new size too.
        term.send("tput cols\n")
        term.expect(re.compile(r"[\r\n]120\r\n"))


def test_default_size_is_80x24(capsule: Capsule) -> None:
    with capsule.terminal() as term:
        term.send("stty size\n")
        term.expect(re.compile(r"\b24 80\b"))


def test_bad_sizes_are_refused(capsule: Capsule) -> None:
    with pytest.raises(ValueError):
        capsule.terminal(cols=0)
    with capsule.terminal() as term:
        with pytest.raises(ValueError):
            term.resize(80, 5000)


def test_shell_exit_closes_with_the_status(capsule: Capsule) -> None:
    term = capsule.terminal()
    term.send("exit 3\n")
    assert term.wait_closed(timeout=10) == "exit status 3"
    assert term.closed and term.close_code == 1000
    with pytest.raises(TerminalClosedError) as e:
        term.recv(timeout=1)
    assert e.value.close_code == 1000 and e.value.reason == "exit status 3"
    with pytest.raises(TerminalClosedError):
        term.send("echo too late\n")
    term.close()  # harmless when already closed


def test_iteration_ends_when_the_shell_exits(capsule: Capsule) -> None:
    with capsule.terminal() as term:
        term.send("echo $((1 + 1)); exit\n")
        output = "".join(term)
    assert re.search(r"[\r\n]2\r\n", output), output
    assert term.close_reason == "exit status 0"


def test_runs_as_the_sandbox_user_in_the_workspace(capsule: Capsule) -> None:
    capsule.write_file("marker.txt", "m")
    with capsule.terminal() as term:
        term.send("id -u; ls\n")
        term.expect(re.compile(r"[\r\n]1000\r\n"))
        term.expect("marker.txt")


def test_state_persists_within_a_session(capsule: Capsule) -> None:
    with capsule.terminal() as term:
        term.send("cd /tmp && X=remembered\n")
        term.send("echo $X-$(pwd)\n")
        term.expect("remembered-/tmp")


def test_unknown_sandbox(client: CapsuleClient) -> None:
    ghost = Capsule(
        client,
        {
            "id": "zzzzzzzz",
            "template": "base",
            "created_at": "2024-01-01T00:00:00Z",
            "expires_at": "2024-01-01T00:00:00Z",
        },
    )
    with pytest.raises(SandboxNotFoundError) as e:
        ghost.terminal()
    assert e.value.data["id"] == "zzzzzzzz"
    bad = Capsule(
        client,
        {"id": "ZZ", "template": "base", "created_at": "2024-01-01T00:00:00Z", "expires_at": "2024-01-01T00:00:00Z"},
    )
    with pytest.raises(InvalidParamsError):
        bad.terminal()


def test_delete_closes_the_capsules_terminals(client: CapsuleClient) -> None:
    capsule = client.create()
    term = capsule.terminal()
    term.send("echo $((3 * 3))\n")
    term.expect("9")
    capsule.delete()
    assert term.closed
    with pytest.raises(TerminalClosedError):
        term.expect("never", timeout=5)


def test_two_terminals_are_independent(capsule: Capsule) -> None:
    with capsule.terminal() as a, capsule.terminal() as b:
        a.send("A=one; echo a-$A\n")
        b.send("echo b-${A:-unset}\n")
        a.expect("a-one")
        b.expect("b-unset")

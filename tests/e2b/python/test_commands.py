"""Commands and terminals through the unmodified E2B Python SDK."""

from __future__ import annotations

import threading
import time

import pytest
from e2b import CommandExitException, PtySize, TimeoutException


def test_foreground_output_and_exit_code(sandbox):
    r = sandbox.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)


def test_nonzero_exit_raises_the_sdk_exception(sandbox):
    with pytest.raises(CommandExitException) as err:
        sandbox.commands.run("echo partial; echo broken >&2; exit 3")
    e = err.value
    assert e.exit_code == 3
    assert e.stdout == "partial\n"
    assert e.stderr == "broken\n"


def test_missing_program_is_exit_127(sandbox):
    with pytest.raises(CommandExitException) as err:
        sandbox.commands.run("no-such-program-here")
    assert err.value.exit_code == 127
    assert "not found" in err.value.stderr


def test_envs_cwd_and_user(sandbox):
    sandbox.files.make_dir("/home/user/work")
    r = sandbox.commands.run("echo $A-$B; pwd; whoami", envs={"A": "1", "B": "two words"}, cwd="/home/user/work")
    assert r.stdout == "1-two words\n/home/user/work\nuser\n"
    assert sandbox.commands.run("whoami; id -u", user="root").stdout == "root\n0\n"
    # The default user cannot write where only root may.
    with pytest.raises(CommandExitException):
        sandbox.commands.run("touch /etc/owned")
    sandbox.commands.run("touch /etc/owned-by-root", user="root")


def test_streaming_callbacks_get_output_as_it_comes(sandbox):
    got: list[tuple[float, str]] = []
    errs: list[str] = []
    start = time.monotonic()
    r = sandbox.commands.run(
        "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo oops >&2",
        on_stdout=lambda s: got.append((time.monotonic() - start, s)),
        on_stderr=errs.append,
    )
    assert "".join(s for _, s in got) == "line1\nline2\nline3\n"
    assert errs == ["oops\n"]
    assert r.stdout == "line1\nline2\nline3\n"
    # The first line arrived long before the command ended.
    assert got[0][0] < got[-1][0] - 0.4


def test_command_timeout_kills_it(sandbox):
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30; touch /tmp/should-not-exist", timeout=2)
    assert time.monotonic() - started < 20
    time.sleep(0.5)
    assert "sleep 30" not in sandbox.commands.run("ps -eo args").stdout
    assert not sandbox.files.exists("/tmp/should-not-exist")


def test_background_wait_list_connect_kill(sandbox):
    h = sandbox.commands.run("echo started; sleep 0.5; echo done", background=True)
    assert h.pid > 0
    result = h.wait()
    assert result.stdout == "started\ndone\n" and result.exit_code == 0

    long = sandbox.commands.run("echo up; sleep 60", background=True)
    listed = {p.pid: p for p in sandbox.commands.list()}
    assert long.pid in listed
    assert "sleep 60" in " ".join([listed[long.pid].cmd] + listed[long.pid].args)

    # Reattach from a second handle and see the process end.
    again = sandbox.commands.connect(long.pid)
    assert long.kill() is True
    with pytest.raises(CommandExitException) as err:
        again.wait()
    assert err.value.exit_code != 0
    assert long.pid not in {p.pid for p in sandbox.commands.list()}


def test_send_stdin_close_stdin_and_kill_by_pid(sandbox):
    h = sandbox.commands.run("while read line; do echo got:$line; done; echo eof", background=True, stdin=True)
    sandbox.commands.send_stdin(h.pid, "first\n")
    sandbox.commands.send_stdin(h.pid, "second\n")
    sandbox.commands.close_stdin(h.pid)
    assert h.wait().stdout == "got:first\ngot:second\neof\n"

    cat = sandbox.commands.run("cat", background=True, stdin=True)
    assert sandbox.commands.kill(cat.pid) is True
    with pytest.raises(CommandExitException):
        cat.wait()
    assert sandbox.commands.kill(cat.pid) is False


def test_kill_ends_the_whole_process_tree(sandbox):
    h = sandbox.commands.run("sh -c 'sleep 300 & sleep 300 & wait'", background=True)
    time.sleep(0.5)
    assert sandbox.commands.run("pgrep -c -x sleep").stdout.strip() == "2"
    sandbox.commands.kill(h.pid)
    with pytest.raises(CommandExitException):
        h.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sandbox.commands.run("pgrep -x sleep")
        except CommandExitException:
            break  # pgrep exits 1: none left
        time.sleep(0.1)
    else:
        pytest.fail("sleep processes survived the kill")


def test_pty_size_input_resize_and_kill(sandbox):
    data = bytearray()
    lock = threading.Lock()

    def on_data(chunk: bytes) -> None:
        with lock:
            data.extend(chunk)

    def wait_for(text: bytes, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if text in data:
                    return
            time.sleep(0.05)
        with lock:
            pytest.fail(f"{text!r} never appeared in the terminal output: {bytes(data)!r}")

    term = sandbox.pty.create(PtySize(rows=24, cols=80))
    ended: list[BaseException] = []

    def read() -> None:
        try:
            term.wait(on_pty=on_data)
        except CommandExitException as e:  # killed: the SDK reports a non-zero end
            ended.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sandbox.pty.send_stdin(term.pid, b"stty size; tty\n")
    wait_for(b"24 80")
    wait_for(b"/dev/pts/")
    sandbox.pty.resize(term.pid, PtySize(rows=40, cols=120))
    sandbox.pty.send_stdin(term.pid, b"stty size\n")
    wait_for(b"40 120")
    sandbox.pty.send_stdin(term.pid, b"echo $((6*7))\n")
    wait_for(b"42")
    assert sandbox.pty.kill(term.pid) is True
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert len(ended) == 1

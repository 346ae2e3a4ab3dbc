"""The code interpreter through the unmodified `e2b-code-interpreter` SDK."""

from __future__ import annotations

import base64
import time

import pytest
from e2b import TimeoutException


def test_state_is_kept_between_runs(interpreter):
    assert interpreter.get_info().template_id == "code-interpreter-v1"
    interpreter.run_code("import math\nx = 41\ndef double(v):\n    return v * 2")
    ex = interpreter.run_code("double(x + 1) + math.floor(0.5)")
    assert ex.error is None
    assert ex.text == "84"
    assert ex.results[0].is_main_result
    assert ex.execution_count is not None and ex.execution_count >= 2


def test_print_output_streams_to_callbacks(interpreter):
    seen: list[tuple[float, str]] = []
    errs: list[str] = []
    start = time.monotonic()
    ex = interpreter.run_code(
        "import sys, time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\nprint('warn', file=sys.stderr)\n'done'",
        on_stdout=lambda m: seen.append((time.monotonic() - start, m.line)),
        on_stderr=lambda m: errs.append(m.line),
    )
    assert "".join(line for _, line in seen) == "tick 0\ntick 1\ntick 2\n"
    assert "".join(errs) == "warn\n"
    assert ex.logs.stdout == ["tick 0\n", "tick 1\n", "tick 2\n"] or "".join(ex.logs.stdout) == "tick 0\ntick 1\ntick 2\n"
    assert ex.text == "'done'"
    assert seen[0][0] < seen[-1][0] - 0.4  # streamed, not delivered at the end


def test_exceptions_come_back_as_errors(interpreter):
    errors: list = []
    ex = interpreter.run_code("def f():\n    return 1 / 0\nf()", on_error=errors.append)
    assert ex.error is not None
    assert ex.error.name == "ZeroDivisionError"
    assert ex.error.value == "division by zero"
    assert "f()" in ex.error.traceback and "ZeroDivisionError" in ex.error.traceback
    assert errors and errors[0].name == "ZeroDivisionError"
    assert ex.text is None
    # The kernel is still usable.
    assert interpreter.run_code("2 + 2").text == "4"


def test_contexts_have_their_own_state_and_cwd(interpreter):
    interpreter.files.make_dir("/home/user/proj")
    a = interpreter.create_code_context(cwd="/home/user/proj")
    b = interpreter.create_code_context()
    assert a.cwd == "/home/user/proj" and a.language == "python"
    interpreter.run_code("secret = 'only in a'", context=a)
    assert interpreter.run_code("import os; os.getcwd()", context=a).text == "'/home/user/proj'"
    assert interpreter.run_code("secret", context=a).text == "'only in a'"
    missing = interpreter.run_code("secret", context=b)
    assert missing.error is not None and missing.error.name == "NameError"

    listed = {c.id for c in interpreter.list_code_contexts()}
    assert {a.id, b.id} <= listed

    interpreter.restart_code_context(a)
    gone = interpreter.run_code("secret", context=a)
    assert gone.error is not None and gone.error.name == "NameError"

    interpreter.remove_code_context(b)
    assert b.id not in {c.id for c in interpreter.list_code_contexts()}
    with pytest.raises(Exception):
        interpreter.run_code("1", context=b)


def test_javascript_and_bash(interpreter):
    js = interpreter.create_code_context(language="javascript")
    assert interpreter.run_code("let a = 5; a * 3", context=js).text == "15"
    ex = interpreter.run_code("console.log('from js', a); a + 1", context=js)
    assert ex.logs.stdout == ["from js 5\n"] and ex.text == "6"
    err = interpreter.run_code("null.boom", context=js)
    assert err.error is not None and err.error.name == "TypeError"
    assert interpreter.run_code("await new Promise(r => setTimeout(() => r('later'), 50))", context=js).text == "'later'"

    sh = interpreter.run_code("cd /tmp; export GREET=hi; echo $HOME", language="bash")
    assert sh.logs.stdout == ["/home/user\n"]
    again = interpreter.run_code("echo $GREET from $(pwd)", language="bash")
    assert again.logs.stdout == ["hi from /tmp\n"]
    failed = interpreter.run_code("ls /no/such/dir", language="bash")
    assert failed.error is not None and "No such file" in "".join(failed.logs.stderr)


def test_env_vars_apply_to_one_run(interpreter):
    ex = interpreter.run_code("import os; os.environ.get('RUN_ONLY')", envs={"RUN_ONLY": "yes"})
    assert ex.text == "'yes'"
    assert interpreter.run_code("import os; os.environ.get('RUN_ONLY')").text is None


def test_closing_the_connection_interrupts_the_run(interpreter):
    interpreter.run_code("kept = 'still here'")
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        interpreter.run_code("import time\ntime.sleep(5)\nopen('/tmp/finished', 'w').write('x')", timeout=1)
    assert time.monotonic() - started < 4
    # The run stopped: it never reached its last line, and the kernel kept its state.
    time.sleep(6)
    assert not interpreter.files.exists("/tmp/finished")
    ex = interpreter.run_code("kept")
    assert ex.text == "'still here'"
    assert ex.error is None


def test_rich_results(interpreter):
    ex = interpreter.run_code(
        "class Card:\n"
        "    def _repr_html_(self): return '<b>card</b>'\n"
        "    def _repr_markdown_(self): return '**card**'\n"
        "    def __repr__(self): return 'Card()'\n"
        "Card()"
    )
    main = ex.results[0]
    assert main.text == "Card()"
    assert main.html == "<b>card</b>"
    assert main.markdown == "**card**"
    assert set(main.formats()) >= {"html", "markdown"}


def test_a_figure_comes_back_as_a_png(interpreter):
    probe = interpreter.run_code("import importlib.util; importlib.util.find_spec('matplotlib') is not None")
    if probe.text != "True":
        pytest.skip("matplotlib is not installed on this host (apt install python3-matplotlib)")
    ex = interpreter.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('capsule')\nplt.show()"
    )
    assert ex.error is None, ex.error
    pngs = [r.png for r in ex.results if r.png]
    assert len(pngs) == 1
    raw = base64.b64decode(pngs[0])
    assert raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) > 1000


def test_interrupting_bash_skips_the_rest_of_the_run(interpreter):
    interpreter.run_code("KEEP=me", language="bash")
    with pytest.raises(TimeoutException):
        interpreter.run_code("sleep 5; touch /tmp/bash-finished", language="bash", timeout=1)
    time.sleep(6)
    assert not interpreter.files.exists("/tmp/bash-finished")
    assert interpreter.run_code("echo $KEEP", language="bash").logs.stdout == ["me\n"]


def test_code_that_ignores_interrupts_gets_a_fresh_kernel(interpreter):
    ctx = interpreter.create_code_context()
    interpreter.run_code("lost = 1", context=ctx)
    with pytest.raises(TimeoutException):
        interpreter.run_code(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)",
            context=ctx,
            timeout=1,
        )
    started = time.monotonic()
    ex = interpreter.run_code("'lost' in globals()", context=ctx, timeout=30)
    assert ex.text == "False"  # a new kernel, so the old state is gone
    assert time.monotonic() - started < 15
    assert "time.sleep(60)" not in interpreter.commands.run("ps -eo args").stdout

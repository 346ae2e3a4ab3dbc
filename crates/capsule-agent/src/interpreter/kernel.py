# Capsule Python kernel: notebook-style, stateful code execution.
#
# Started by the agent as `python3 -u -c "<this file>"`. Protocol:
#   fd 0  requests, one JSON object per line: {"id": N, "code": "...", "env_vars": {...}}
#   fd 1  the user's stdout, fd 2 the user's stderr (raw, shared with child processes);
#         after each execution both get the end marker "\x1ecapsule-end-<id>\x1e\n"
#   fd 3  events, one JSON object per line: ready, result, error, done
# Compatible with Python 3.8+; standard library only.

import ast, base64, builtins, importlib, io, json, linecache, os, re, shlex, signal
import subprocess, sys, threading, traceback, types

CELL = "<cell>"  # file name of user code in tracebacks
KERNEL_GLOBALS = globals()  # frames running with these globals are kernel internals

# Keep the request pipe away from user code and its children: read requests from a
# private (non-inheritable) duplicate and put /dev/null on fd 0, so `input()` or a
# `cat` started by the user sees EOF instead of eating protocol lines.
REQUESTS = os.fdopen(os.dup(0), "rb")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
EVENTS = 3
os.set_inheritable(EVENTS, False)  # child processes must not hold (or write) the event pipe
os.environ.setdefault("MPLBACKEND", "Agg")  # matplotlib: render off-screen


class UsageError(Exception):
    """A `%magic` this kernel does not support."""


class _State:
    executing = False  # SIGINT raises KeyboardInterrupt only while user code runs
    critical = 0  # >0 while an event line is being written: never tear it in half
    pending = False  # an interrupt deferred by `critical`, raised by display()
    lock = threading.Lock()  # display() may be called from the user's threads


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def emit(event):
    """Write one event line on fd 3 (never interrupted half-way)."""
    line = json.dumps(event, ensure_ascii=False, default=str) + "\n"
    _State.critical += 1
    try:
        with _State.lock:
            _write_all(EVENTS, line.encode("utf-8", "replace"))
    finally:
        _State.critical -= 1


def _on_sigint(signum, frame):
    if _State.executing:
        if _State.critical:
            _State.pending = True
        else:
            raise KeyboardInterrupt
    # idle: ignore, the kernel keeps waiting for requests


def flush_std():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


# --- rich results ---------------------------------------------------------------------

# Rich formats, each from the object's _repr_<format>_() method when it has one.
FORMATS = ("html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript")
BINARY = ("png", "jpeg", "pdf")  # sent base64-encoded


def _set_format(event, key, data):
    if isinstance(data, tuple):  # IPython allows (data, metadata)
        data = data[0] if data else None
    if data is None:
        return
    if key in BINARY:
        event[key] = base64.b64encode(data).decode() if isinstance(data, (bytes, bytearray)) else str(data)
    elif key == "json":
        try:
            json.dumps(data)
            event[key] = data
        except (TypeError, ValueError):
            pass
    else:
        event[key] = str(data)


def _call_repr(obj, name):
    try:
        return getattr(obj, name)()
    except Exception as e:  # a broken formatter must not hide the plain text
        print("capsule: %s.%s() failed: %r" % (type(obj).__name__, name, e), file=sys.stderr)


def result_event(obj, main):
    event = {"type": "result", "is_main_result": main, "text": repr(obj)}
    for key in FORMATS:
        # Look on the type: not fooled by a class (whose methods are unbound) or by
        # objects whose __getattr__ makes up any attribute.
        if callable(getattr(type(obj), "_repr_%s_" % key, None)):
            _set_format(event, key, _call_repr(obj, "_repr_%s_" % key))
    figure = sys.modules.get("matplotlib.figure")
    if "png" not in event and figure is not None and isinstance(obj, figure.Figure):
        event["png"] = _figure_png(obj)
        _shown_figures.add(id(obj))
    return event


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


_shown_figures = set()  # ids of figures already shown in this cell (no duplicates)


def display(*objs):
    """Show objects as (non-main) results right away, like IPython's display()."""
    flush_std()
    for obj in objs:
        emit(result_event(obj, False))
    if _State.pending and _State.executing:  # an interrupt arrived while writing
        _State.pending = False
        raise KeyboardInterrupt


def show_figures():
    """After a cell: emit every open matplotlib figure as a PNG result, then close them."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            if id(fig) not in _shown_figures:
                emit({"type": "result", "is_main_result": False, "text": repr(fig), "png": _figure_png(fig)})
        plt.close("all")
    except Exception as e:
        print("capsule: could not render matplotlib figures: %r" % (e,), file=sys.stderr)


# --- magics: `!shell` and `%pip` lines ------------------------------------------------


def _magic(kind, line):
    flush_std()
    if kind == "!":
        subprocess.run(line, shell=True)
    else:  # `%pip ...` (checked when the cell was transformed)
        subprocess.run([sys.executable, "-m", "pip"] + shlex.split(line)[1:])
        importlib.invalidate_caches()  # make freshly installed packages importable


builtins.__capsule_magic__ = _magic
builtins.display = display

_MAGIC_LINE = re.compile(r"^([ \t]*)([!%])(.*?)\r?\n?$")


def transform_magics(src):
    """Rewrite lines starting with `!` or `%` into calls of __capsule_magic__.

    Only lines that begin a statement qualify: a small scanner tracks open brackets,
    strings and backslash continuations so that text inside them is left alone."""
    try:
        ast.parse(src)
        return src  # plain Python: nothing to rewrite
    except SyntaxError:
        pass
    out, depth, quote = [], 0, None
    for line in src.splitlines(True):
        m = _MAGIC_LINE.match(line)
        if m and depth == 0 and quote is None and not (out and out[-1].rstrip("\r\n").endswith("\\")):
            indent, kind, rest = m.groups()
            if kind == "%":
                name = rest.split(None, 1)[0] if rest.strip() else ""
                if name != "pip":
                    raise UsageError("magic %%%s is not supported (only %%pip and !shell commands are)" % name)
            out.append("%s__capsule_magic__(%r, %r)\n" % (indent, kind, rest))
            continue
        out.append(line)
        i = 0
        while i < len(line):  # track brackets and strings for the lines that follow
            c, three = line[i], line[i:i + 3]
            if quote:
                if line.startswith(quote, i):
                    i, quote = i + len(quote) - 1, None
                elif c == "\\":
                    i += 1  # skip the escaped character (maybe the newline)
                elif c == "\n" and len(quote) == 1:
                    quote = None  # an unterminated one-line string
            elif c == "#":
                break
            elif c in "'\"":
                quote = three if three in ("'''", '"""') else c
                i += len(quote) - 1
            else:
                depth = max(0, depth + (c in "([{") - (c in ")]}"))
            i += 1
    return "".join(out)


# --- running cells --------------------------------------------------------------------

_main = types.ModuleType("__main__")  # the user's namespace, a real module so pickle works
_main.__dict__["__builtins__"] = builtins
sys.modules["__main__"] = _main
NS = _main.__dict__
_sources = {}  # id(code object) -> (code, source lines): tracebacks show the right cell


def _remember(code, lines):
    _sources[id(code)] = (code, lines)  # (keeping `code` alive keeps its id unique)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _remember(const, lines)
    return code


def run_cell(src):
    src = transform_magics(src)
    lines = io.StringIO(src, newline=None).readlines()  # split like the compiler does
    linecache.cache[CELL] = (len(src), None, lines, CELL)  # for the user's own traceback calls
    tree = ast.parse(src, CELL, "exec")
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        # Show the last expression's value, like a notebook, unless a `;` follows it.
        tail = lines[last.end_lineno - 1].encode()[last.end_col_offset:].decode()  # (byte offsets)
        last = None if tail.lstrip().startswith(";") else ast.Expression(tree.body.pop().value)
    exec(_remember(compile(tree, CELL, "exec"), lines), NS)
    value = eval(_remember(compile(last, CELL, "eval"), lines), NS) if last else None
    if value is not None:
        emit(result_event(value, True))


def _cell_line(code, lineno):
    """The source line of a cell's code (None: let linecache find a module's line)."""
    if code.co_filename != CELL:
        return None
    lines = _sources.get(id(code), (None, []))[1]
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""


def format_traceback(exc, seen=None):
    """Like traceback.format_exception, without kernel frames and with cell source lines."""
    seen = seen if seen is not None else set()
    seen.add(id(exc))
    parts = []
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        parts += format_traceback(cause, seen)
        parts.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
        parts += format_traceback(context, seen)
        parts.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    frames = list(traceback.walk_tb(exc.__traceback__))
    if frames and frames[0][0].f_globals is KERNEL_GLOBALS:
        # Raised under the kernel: start at the first cell frame. None when the cell did
        # not compile (SyntaxError from ast.parse) or a magic was rejected.
        cell = [i for i, (f, _) in enumerate(frames) if f.f_code.co_filename == CELL]
        frames = frames[cell[0]:] if cell else []
    frames = [(f, n) for f, n in frames if f.f_globals is not KERNEL_GLOBALS]  # e.g. _on_sigint
    if frames:
        summaries = [traceback.FrameSummary(f.f_code.co_filename, n, f.f_code.co_name, line=_cell_line(f.f_code, n))
                     for f, n in frames]
        parts.append("Traceback (most recent call last):\n")
        parts += traceback.StackSummary.from_list(summaries).format()
    parts += traceback.format_exception_only(type(exc), exc)
    return parts


def error_event(exc):
    try:
        value = str(exc)
    except Exception:
        value = "<exception str() failed>"
    return {"type": "error", "name": type(exc).__name__, "value": value,
            "traceback": "".join(format_traceback(exc))}


# --- the request loop -----------------------------------------------------------------

execution_count = 0


def finish(rid):
    flush_std()
    for fd in (1, 2):  # (OSError: the user closed their stdout/stderr)
        try:
            _write_all(fd, ("\x1ecapsule-end-%d\x1e\n" % rid).encode())
        except OSError:
            pass
    emit({"type": "done", "id": rid, "execution_count": execution_count})


def protocol_error(message, rid=None):
    emit({"type": "error", "name": "ProtocolError", "value": message, "traceback": "ProtocolError: " + message})
    if rid is not None:
        finish(rid)


def _set_env(env):
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def handle(raw):
    global execution_count
    try:
        req = json.loads(raw)
    except ValueError as e:
        return protocol_error("malformed request (not JSON): %s" % e)
    rid = req.get("id") if isinstance(req, dict) else None
    if not isinstance(rid, int) or isinstance(rid, bool):
        return protocol_error("request must be a JSON object with an integer \"id\"")
    code, env = req.get("code"), req.get("env_vars") or {}
    if not isinstance(code, str):
        return protocol_error("request field \"code\" must be a string", rid)
    if not isinstance(env, dict) or not all(isinstance(v, str) or v is None for v in env.values()):
        return protocol_error("request field \"env_vars\" must map names to strings", rid)
    execution_count += 1
    saved = {k: os.environ.get(k) for k in env}
    _shown_figures.clear()
    signal.signal(signal.SIGINT, _on_sigint)  # in case the user replaced it
    error = None
    try:
        _set_env(env)
        _State.pending = False
        _State.executing = True
        try:
            run_cell(code)
        finally:
            _State.executing = False
    except BaseException as e:  # including KeyboardInterrupt and SystemExit
        error = e
    _State.executing = False
    _set_env(saved)  # restore the environment
    if error is not None:
        emit(error_event(error))
        error = None  # drop the traceback (and the frames it keeps alive)
    show_figures()
    finish(rid)


def main():
    signal.signal(signal.SIGINT, _on_sigint)
    emit({"type": "ready", "language": "python"})
    for raw in iter(REQUESTS.readline, b""):
        raw = raw.decode("utf-8", "replace").strip()
        if raw:
            handle(raw)
    # EOF: leave now, without waiting for threads the user may have left running.
    flush_std()
    os._exit(0)


main()

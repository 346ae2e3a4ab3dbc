"""The seed README's Python Quick Start, run as a file.

`snippets/seed_quickstart.py` is the seed's snippet byte for byte. When port
8080 is free the test starts a server there and runs that file unchanged.
When 8080 is taken (say, by a server someone else is running) it runs a copy
in which only the URL "http://localhost:8080" is replaced by the test
server's URL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from capsule_server import CapsuleServer, port_is_free

SNIPPET = Path(__file__).parent / "snippets" / "seed_quickstart.py"
SEED_URL = "http://localhost:8080"


def seed_readme() -> Optional[Path]:
    path = Path(os.environ.get("CAPSULE_SEED_README", "/work/shared/seeds/capsule.md"))
    return path if path.is_file() else None


def test_snippet_is_the_seed_verbatim() -> None:
    readme = seed_readme()
    if readme is None:
        pytest.skip("the seed README is not on this machine (set CAPSULE_SEED_README)")
    match = re.search(r"### Using the Python SDK\n\n```python\n(.*?)```", readme.read_text(), re.S)
    assert match, "the seed README has no Python SDK snippet"
    assert SNIPPET.read_text() == match.group(1)


def test_seed_snippet_runs_and_prints_what_it_says(server: CapsuleServer, tmp_path: Path) -> None:
    text = SNIPPET.read_text()
    assert text.count(SEED_URL) == 1
    own: Optional[CapsuleServer] = None
    if port_is_free(8080):
        try:
            own = CapsuleServer(port=8080).start()
        except RuntimeError:
            own = None  # lost a race for the port; fall back below
    try:
        if own is not None:
            target, script = own, SNIPPET
        else:
            target, script = server, tmp_path / "seed_quickstart.py"
            script.write_text(text.replace(SEED_URL, server.url))
        before = set(target.sandbox_ids())
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=str(tmp_path)
        )
        assert proc.returncode == 0, proc.stderr
        # print(result.stdout) of "45\n" prints "45" and a blank line.
        assert proc.stdout == "45\n\n"
        assert proc.stderr == ""
        # The context manager deleted the sandbox.
        assert set(target.sandbox_ids()) == before
        print(f"seed snippet ran {'verbatim on port 8080' if own else 'with the URL replaced by ' + server.url}")
    finally:
        if own is not None:
            own.stop()

"""The wheel run-tests.sh built: the package, its type marker and its metadata."""

from __future__ import annotations

import os
import zipfile

import pytest


def test_wheel_contents() -> None:
    path = os.environ.get("CAPSULE_SDK_WHEEL")
    if not path:
        pytest.skip("CAPSULE_SDK_WHEEL is not set (run-tests.sh sets it after building the wheel)")
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        for module in ("__init__", "_protocol", "aio", "client", "errors", "models", "terminal"):
            assert f"capsule_sdk/{module}.py" in names
        assert "capsule_sdk/py.typed" in names
        assert not any(n.startswith("tests/") for n in names)
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(metadata_name).decode()
    assert "Name: capsule-sdk" in metadata
    assert "Version: 0.1.0" in metadata
    assert "Requires-Python: >=3.9" in metadata
    requires = sorted(
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    )
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime == ["httpx>=0.24", "websockets>=14"]

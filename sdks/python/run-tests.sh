#!/usr/bin/env bash
# Runs the Python SDK's checks: installs it (editable, with test extras) in a
# virtualenv, builds the wheel, type-checks with mypy --strict, and runs the
# pytest suite against a real Capsule server that the tests start themselves.
#
#   sdks/python/run-tests.sh [pytest args...]
#
# Environment:
#   PYTHON       interpreter that creates the virtualenv (default: python3)
#   VENV         virtualenv to create or reuse (default: sdks/python/.venv)
#   CAPSULE_BIN  the capsule binary (default: target/debug/capsule of this repo)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
venv="${VENV:-$here/.venv}"
bin="${CAPSULE_BIN:-$repo/target/debug/capsule}"

if [ ! -x "$bin" ]; then
    echo "error: no Capsule server binary at $bin; run 'cargo build -p capsule' in $repo or set CAPSULE_BIN" >&2
    exit 1
fi
export CAPSULE_BIN="$bin"

if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating the virtualenv $venv"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"

echo "==> installing capsule-sdk and the test dependencies"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$py" -m pip install --quiet --disable-pip-version-check -e "$here[test]"

wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
echo "==> building the wheel"
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" "$here"
wheel="$(ls "$wheels"/capsule_sdk-*.whl)"
echo "    $(basename "$wheel")"

echo "==> type-checking (mypy --strict)"
(cd "$here" && "$venv/bin/mypy" --strict src tests)

echo "==> running the tests against $bin"
cd "$here"
CAPSULE_SDK_WHEEL="$wheel" "$py" -m pytest tests "$@"

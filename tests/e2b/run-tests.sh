#!/usr/bin/env bash
# The E2B compatibility suite: the official E2B SDKs, unmodified and pinned,
# against a real Capsule server with real sandboxes.
#
#   tests/e2b/run-tests.sh [pytest args...]
#
# Installs the Python SDKs in a virtualenv (target/e2b-venv) and the npm
# SDKs in tests/e2b/js/node_modules, then runs both suites. Each suite
# starts its own server from $CAPSULE_BIN (default: target/debug/capsule).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CAPSULE_BIN="${CAPSULE_BIN:-$repo/target/debug/capsule}"
if [ ! -x "$CAPSULE_BIN" ]; then
  echo "error: no capsule binary at $CAPSULE_BIN; run 'cargo build -p capsule' or set CAPSULE_BIN" >&2
  exit 1
fi
venv="${E2B_VENV:-$repo/target/e2b-venv}"

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  python3 -m venv "$venv"
fi
echo "==> installing the pinned Python SDKs"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"

echo "==> E2B Python SDK suite"
(cd "$here/python" && "$venv/bin/python" -m pytest -q --timeout 300 -p no:cacheprovider "$@")

if [ -f "$here/js/package.json" ]; then
  echo "==> installing the pinned npm SDKs"
  (cd "$here/js" && npm ci --no-audit --no-fund --loglevel=error)
  echo "==> E2B JavaScript SDK suite"
  (cd "$here/js" && node --test --test-concurrency=1)
fi

#!/usr/bin/env bash
# The MCP suite: the official MCP Python SDK (streamable HTTP and stdio) and
# the MCP Inspector's CLI mode against real Capsule servers.
#
#   tests/mcp/run-tests.sh [pytest args...]
#
# Installs the pinned `mcp` package in target/mcp-venv and the Inspector in
# tests/mcp/inspector/node_modules. Servers come from $CAPSULE_BIN
# (default: target/debug/capsule).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CAPSULE_BIN="${CAPSULE_BIN:-$repo/target/debug/capsule}"
if [ ! -x "$CAPSULE_BIN" ]; then
  echo "error: no capsule binary at $CAPSULE_BIN; run 'cargo build -p capsule' or set CAPSULE_BIN" >&2
  exit 1
fi
venv="${MCP_VENV:-$repo/target/mcp-venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  python3 -m venv "$venv"
fi
echo "==> installing the pinned MCP Python SDK"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
echo "==> installing the pinned MCP Inspector"
(cd "$here/inspector" && npm ci --no-audit --no-fund --loglevel=error)
echo "==> MCP suite"
cd "$here/python"
"$venv/bin/python" -m pytest -q --timeout 300 -p no:cacheprovider "$@"

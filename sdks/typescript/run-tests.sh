#!/usr/bin/env bash
# Runs the TypeScript SDK's checks: installs the dependencies, builds dist/
# with tsc, type-checks the tests' usage file, packs the tarball with
# `npm pack`, and runs the node:test suites against a real Capsule server
# that the tests start themselves.
#
#   sdks/typescript/run-tests.sh [extra node --test args...]
#
# Environment:
#   CAPSULE_BIN  the capsule binary (default: target/debug/capsule of this repo)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${CAPSULE_BIN:-$repo/target/debug/capsule}"

if [ ! -x "$bin" ]; then
    echo "error: no Capsule server binary at $bin; run 'cargo build -p capsule' in $repo or set CAPSULE_BIN" >&2
    exit 1
fi
export CAPSULE_BIN="$bin"
cd "$here"

echo "==> installing dependencies"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi

echo "==> building"
npm run --silent build

echo "==> type-checking"
npm run --silent typecheck

packs="$(mktemp -d)"
trap 'rm -rf "$packs"' EXIT
echo "==> packing"
npm pack --silent --pack-destination "$packs" >/dev/null
tarball="$(ls "$packs"/capsule-sdk-*.tgz)"
echo "    $(basename "$tarball")"

echo "==> running the tests against $bin"
CAPSULE_SDK_TARBALL="$tarball" node --test --test-reporter=spec "$@" test/*.test.mjs

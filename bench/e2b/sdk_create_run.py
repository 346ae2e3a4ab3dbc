"""Times E2B's Python SDK against a Capsule server: `Sandbox.create()` and
the first `commands.run("echo hi")`, the figure E2B publishes (median
create-to-first-command). The server comes from E2B_API_URL/E2B_SANDBOX_URL.

Prints one JSON object: {"samples_ms": [...]}. Sandboxes are killed outside
the timed part.
"""

import json
import sys
import time

from e2b import Sandbox


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    # One untimed round: imports, connection pools and the first template use.
    Sandbox.create().kill()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        sbx = Sandbox.create()
        out = sbx.commands.run("echo hi")
        samples.append((time.perf_counter() - start) * 1000)
        if out.stdout != "hi\n":
            raise SystemExit(f"unexpected output {out.stdout!r}")
        sbx.kill()
    print(json.dumps({"samples_ms": samples}))


if __name__ == "__main__":
    main()

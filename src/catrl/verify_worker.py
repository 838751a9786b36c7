"""The child process behind verify.equivalent: reads [reference, candidate] JSON lines on stdin and
answers ["ok", bool] or ["error", message] on stdout.

It runs as `python -m catrl.verify_worker [module:function]`, a fresh interpreter rather than a
multiprocessing child, so it never re-imports the user's main script (scripts without an
`if __name__ == "__main__"` guard work) and it can be killed at any point when a check hangs.
"""

from __future__ import annotations

import importlib
import json
import sys


def _load(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main() -> None:
    fn = _load(sys.argv[1] if len(sys.argv) > 1 else "catrl.verify:symbolic_check")
    out = sys.stdout
    for line in sys.stdin:
        try:
            reference, candidate = json.loads(line)
            reply = ["ok", bool(fn(reference, candidate))]
        except Exception as e:  # noqa: BLE001 - any parse or sympy failure is a defined outcome
            reply = ["error", repr(e)[:200]]
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

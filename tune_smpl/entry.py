"""The `tune-smpl` executable's first code (and `python -m tune_smpl`'s).

It imports nothing heavy itself: the command's modules (torch, Ray, MLflow: seconds on a
2-core CPU) are imported inside `console`, so that a Ctrl-C while they import ends the
command as every other Ctrl-C does, with one line and status 130, not a KeyboardInterrupt
traceback and -2 (found by benchmarks/chaos.py: a SIGINT 2.3 s after the start). Nothing has
been written by then; `main` takes every Ctrl-C after the imports.
"""

from __future__ import annotations

import signal
import sys


def console() -> None:
    try:
        from tune_smpl.cli import console as run
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C while it exits
        print("tune-smpl: interrupted", file=sys.stderr)
        sys.exit(130)
    run()

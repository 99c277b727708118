"""The `tune-smpl` executable's first code (and `python -m tune_smpl`'s).

It imports nothing heavy itself: the command's modules (torch, Ray, MLflow: seconds on a
2-core CPU) are imported inside `console`, so that a Ctrl-C while they import ends the
command as every other Ctrl-C does, with one line and status 130, not a KeyboardInterrupt
traceback and -2 (found by benchmarks/chaos.py: a SIGINT 2.3 s after the start). While they
import, the SIGINT handler only counts the Ctrl-C (no KeyboardInterrupt inside native code),
and it is taken once they are in. Nothing has been written by then; `main` takes every
Ctrl-C after the imports.

The exit is `os._exit(130)`, not `sys.exit(130)`: after a KeyboardInterrupt caught here,
the interpreter's normal exit still ended the process by SIGINT (status -2) at some instants
(tests/tune_smpl/test_console.py: 2 of its 5 instants, 1.6 and 2.4 s, on a 2-core CPU under
load; the cause inside the partly imported modules not pinned down). Nothing of ours is
left to run or flush but the two streams.
"""

from __future__ import annotations

import os
import signal
import sys


def ctrl_c_caused(exc: BaseException | None) -> bool:
    """Whether `exc` is a Ctrl-C: a KeyboardInterrupt, or an exception raised from one.
    Python 3.11 turns a KeyboardInterrupt raised in a descriptor's `__set_name__`, while a
    class is made inside an import, into `RuntimeError: Error calling __set_name__` (its
    `__cause__` the KeyboardInterrupt): a Ctrl-C 2.4 s into `tune`, inside MLflow's import
    (tests/tune_smpl/test_console.py in a clean clone), ended by that traceback and exit 1.
    Only the `raise ... from` chain counts: an error raised while a Ctrl-C was being handled
    (its `__context__`) stays a programming error with its traceback."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__
    return False


def console() -> None:
    # While the modules import, a Ctrl-C is only counted: a KeyboardInterrupt raised inside
    # an import runs through native code (pybind11 turned one into a C++ exception nothing
    # caught: `terminate called ... KeyboardInterrupt`, exit -6, 0.8 s into `tune` in a
    # clean clone's test_console), so none is raised there; it is taken once they are in.
    asked: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
    try:
        from tune_smpl.cli import console as run
    except BaseException as e:
        if not ctrl_c_caused(e):
            raise
        asked.append(signal.SIGINT)
    if asked:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C while it exits
        print("tune-smpl: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)
    signal.signal(signal.SIGINT, previous)
    run()

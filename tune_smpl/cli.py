"""The `tune-smpl` command: train | tune | export | report | sync | ui | dashboard.

Bad input anywhere (config, space, flags, data paths) raises `ConfigError`, which ends the
command with one line on stderr naming the field, the rule and the value, and exit status 2,
before work is lost. Any other exception is a programming error: its traceback, exit 1.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys

from smpl_core.errors import ConfigError
from tune_smpl.commands import dashboard, export, report, sync, train, tune, ui
from tune_smpl.entry import ctrl_c_caused

SUBCOMMANDS = [train, tune, export, report, sync, ui, dashboard]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: one line, status 2
        self.exit(2, f"tune-smpl: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tune-smpl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args) or 0)
        if code == 130:  # interrupted: a further Ctrl-C while Python exits (seconds, with
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ray's) must not make it -2
        return code
    except ConfigError as e:
        print(f"tune-smpl: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Exception) as e:  # not SystemExit: argparse's own exits
        if not ctrl_c_caused(e):  # a programming error: its traceback
            raise
        print("tune-smpl: interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The `tune-smpl` executable (and `python -m tune_smpl`): `main`, then the exit.

    Every exit handler runs as usual (Ray's shutdown, logging's flush, pyarrow's S3
    finalizer: all registered after this one's, so run before it); then the process ends
    with its status, skipping the interpreter's teardown of torch's, Ray's and gRPC's
    modules, which took 1.8-3.3 s after every command on a 2-core CPU and does nothing a
    process that ends needs. A library caller of `main` keeps the normal exit."""
    status = {"code": 1}  # an exception that escapes main: its traceback, then 1

    def end() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status["code"])

    atexit.register(end)  # first registered, so the last to run
    try:
        status["code"] = main()
    except SystemExit as e:  # argparse's --help (0) and usage errors (2)
        status["code"] = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        raise
    sys.exit(status["code"])


if __name__ == "__main__":
    console()

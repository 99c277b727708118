"""The `tune-smpl` command: train | tune | export | report | sync | ui | dashboard.

Bad input anywhere (config, space, flags, data paths) raises `ConfigError`, which ends the
command with one line on stderr naming the field, the rule and the value, and exit status 2,
before work is lost. Any other exception is a programming error: its traceback, exit 1.
"""

from __future__ import annotations

import argparse
import signal
import sys

from smpl_core.errors import ConfigError
from tune_smpl.commands import dashboard, export, report, sync, train, tune, ui

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
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        if code == 130:  # interrupted: a further Ctrl-C while Python exits (seconds, with
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ray's) must not make it -2
        return code
    except ConfigError as e:
        print(f"tune-smpl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tune-smpl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

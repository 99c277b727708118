"""The `tune-smpl` executable's exit (tune_smpl/cli.py, `console`): every exit handler
runs, the status is the command's, and the interpreter's slow teardown is skipped."""

from __future__ import annotations

import subprocess
import sys

from tests.tune_smpl.conftest import REPO, cli_env

# A stand-in for `main` and an exit handler registered after `console`'s (as every
# library's is), which must still run, before the process ends with main's status.
PROBE = """
import atexit, sys
import tune_smpl.cli as cli
def main():
    atexit.register(lambda: print("handler ran", flush=True))
    print("partial line without newline", end="")
    {body}
cli.main = main
cli.console()
"""


def _run(body: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(body=body)], cwd=REPO,
                          env=cli_env("console"), capture_output=True, text=True, timeout=120)


def test_the_status_is_main_s_and_every_exit_handler_runs():
    for code in (0, 75):
        done = _run(f"return {code}")
        assert done.returncode == code, done
        assert done.stdout == "partial line without newlinehandler ran\n", done.stdout


def test_a_programming_error_keeps_its_traceback_and_exits_1():
    done = _run("raise RuntimeError('a bug of ours')")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "RuntimeError: a bug of ours" in done.stderr
    assert "handler ran" in done.stdout


def test_argparse_exits_keep_their_status():
    for argv, code in ((["--help"], 0), (["no-such-command"], 2)):
        done = subprocess.run([sys.executable, "-m", "tune_smpl", *argv], cwd=REPO,
                              env=cli_env("console"), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == code, done
    assert "tune-smpl: error: argument command: invalid choice" in done.stderr

"""The `tune-smpl` executable's start and exit (tune_smpl/entry.py, tune_smpl/cli.py's
`console`): a Ctrl-C during the start-up is status 130, every exit handler runs, the status
is the command's, and the interpreter's slow teardown is skipped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.tune_smpl.conftest import REPO, cli_env, cli_sets, end_group, start_cli
from tune_smpl.commands import export

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


# Seconds after the start: while torch, Ray and MLflow import (about 3-6 s here), and about
# when the command's own work begins. A seeded draw per run of the suite would hide which
# instant failed; these are fixed and spread over the window.
EARLY_S = (0.2, 0.8, 1.6, 2.4, 3.5)


@pytest.mark.parametrize("delay", EARLY_S)
def test_a_ctrl_c_during_the_start_up_exits_130_without_a_traceback(tmp_path, delay):
    """benchmarks/chaos.py found it: a SIGINT 2.3 s after the start raised KeyboardInterrupt
    inside `import torch` (exit -2, a traceback); tune_smpl/entry.py imports the command's
    modules where a Ctrl-C is taken."""
    proc = start_cli(tmp_path, "early", "--name", "early", "--num-samples", "2", *cli_sets())
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        end_group(proc, "early")
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert "interrupted" in out, out


class _SetNameInterrupted:
    """A descriptor whose `__set_name__` is where the Ctrl-C lands, as in the clean-clone
    failure (functools.cached_property inside MLflow's import)."""

    def __set_name__(self, owner, name):
        raise KeyboardInterrupt


def _make_class() -> None:
    type("Made", (), {"attr": _SetNameInterrupted()})


def test_a_ctrl_c_that_python_wrapped_is_still_a_ctrl_c(monkeypatch, capsys):
    import tune_smpl.cli as cli

    # the interpreter's own wrapping, not one built here: RuntimeError from the interrupt
    # on Python 3.11, the KeyboardInterrupt itself (with a note) on 3.12 and later
    with pytest.raises((RuntimeError, KeyboardInterrupt)) as made:
        _make_class()
    assert cli.ctrl_c_caused(made.value)
    monkeypatch.setattr(export, "run", lambda args: _make_class())  # the command's work
    assert cli.main(["export", "x"]) == 130
    assert capsys.readouterr().err == "tune-smpl: interrupted\n"


def test_an_error_while_a_ctrl_c_is_handled_keeps_its_traceback(monkeypatch):
    import tune_smpl.cli as cli

    def cleanup_fails():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("a bug in the clean-up") from None

    def chained():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            {}["missing"]  # its __context__ is the Ctrl-C, its cause nothing

    for func, exc in ((cleanup_fails, ValueError), (chained, KeyError)):
        monkeypatch.setattr(export, "run", lambda args, f=func: f())
        with pytest.raises(exc):
            cli.main(["export", "x"])

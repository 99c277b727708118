"""`tune-smpl tune`: launch (or resume) a sweep on this machine or on a Ray cluster.

The flags are generated from `TuneOptions` (tune_smpl/options.py); the sweep itself is
`tune_smpl.launch.run`, which `tune_smpl.tune(...)` runs too. Nothing else lives here."""

from __future__ import annotations

import argparse

from tune_smpl.options import add_arguments


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="run a hyperparameter sweep (Ray Tune + Optuna + ASHA)")
    add_arguments(p)  # one flag per field of TuneOptions (tune_smpl/options.py)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tune_smpl import launch

    return launch.run(args)

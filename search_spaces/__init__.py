"""Search spaces for tune-smpl: presets and YAML space files -> Optuna define-by-run.

    space = load_space("smpl", base.to_dict())          # or a path to a space file
    space, fixed = fix(space, {"lr": 0.03})              # a --set field is not searched
    make_define_by_run(space)(study.ask())                # in tune_smpl.sweep's ledger

Knows Optuna's trial API and SMPLConfig's fields; never imports Ray (docs/design.md, "Layout").
"""

from search_spaces.define_by_run import (
    describe,
    distribution,
    distributions,
    make_define_by_run,
    space_to_yaml,
)
from search_spaces.loader import PRESET_DIR, fix, load_space, presets
from search_spaces.spec import TYPES, ParamSpec

__all__ = [
    "PRESET_DIR",
    "TYPES",
    "ParamSpec",
    "describe",
    "distribution",
    "distributions",
    "fix",
    "load_space",
    "make_define_by_run",
    "presets",
    "space_to_yaml",
]

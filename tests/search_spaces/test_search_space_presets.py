"""The presets hold exactly the ranges docs/design.md documents ("The sweep")."""

import pytest

from search_spaces import ParamSpec, describe, load_space, presets, space_to_yaml
from smpl_core.config import SMPLConfig


def smpl_preset(steps: int) -> dict[str, ParamSpec]:
    return {
        "threshold": ParamSpec("float", 0.5, 0.99),
        "beta_zero": ParamSpec("float", 0.1, 20.0, log=True),
        "uda_warmup_steps": ParamSpec("int", 1, steps, log=True),
        "lr": ParamSpec("float", 1e-4, 0.3, log=True),
        "clamp_min": ParamSpec("float", 1e-12, 1e-3, log=True),
        "clamp_max": ParamSpec("float", 0.9, 1.0),
    }


def test_preset_names():
    assert presets() == ["smpl", "smpl-extended"]


@pytest.mark.parametrize("steps", [600, 2, 100_000])
def test_smpl_preset_is_the_documented_six(steps):
    base = SMPLConfig(steps=steps, eval_every=1).to_dict()
    space = load_space("smpl", base)
    assert space == smpl_preset(steps)
    assert list(space) == list(smpl_preset(steps))  # suggestion order too


def test_extended_preset_adds_six():
    space = load_space("smpl-extended", SMPLConfig().to_dict())
    assert space == {
        **smpl_preset(600),
        "temperature": ParamSpec("float", 0.25, 2.0, log=True),
        "mu": ParamSpec("categorical", choices=(1, 2, 3, 5, 7)),
        "label_smoothing": ParamSpec("float", 0.0, 0.2),
        "feedback_sign": ParamSpec("categorical", choices=("paper", "code")),
        "mpl_weight": ParamSpec("float", 0.01, 100.0, log=True),  # over four decades
        "feedback_scale": ParamSpec("categorical", choices=("raw", "per_lr", "normalised")),
    }


def test_base_may_be_partial():
    assert load_space("smpl", {"steps": 40, "eval_every": 10}) == smpl_preset(40)


@pytest.mark.parametrize("preset", ["smpl", "smpl-extended"])
def test_yaml_round_trip(preset, tmp_path):
    base = SMPLConfig(steps=321, eval_every=1).to_dict()
    space = load_space(preset, base)
    path = tmp_path / "logged.yaml"
    path.write_text(space_to_yaml(space))
    assert load_space(str(path), base) == space
    assert "extends" not in path.read_text()  # the artifact is self-contained


def test_describe_is_one_line_per_param():
    lines = describe(load_space("smpl-extended", {}))
    assert len(lines) == 12
    assert lines[0].split() == ["threshold", "U(0.5,", "0.99)"]
    assert lines[2].split() == ["uda_warmup_steps", "int", "logU(1,", "600)"]
    assert lines[3].split() == ["lr", "logU(0.0001,", "0.3)"]
    assert lines[7].split() == ["mu", "{1,", "2,", "3,", "5,", "7}"]
    assert lines[9].split() == ["feedback_sign", "{paper,", "code}"]
    assert lines[10].split() == ["mpl_weight", "logU(0.01,", "100)"]
    assert lines[11].split() == ["feedback_scale", "{raw,", "per_lr,", "normalised}"]
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # aligned

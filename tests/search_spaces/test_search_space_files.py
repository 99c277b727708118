"""Space files: every rule fails with one line naming the file, the param, the rule and
the value; good files load."""

import pytest

from search_spaces import ParamSpec, load_space
from smpl_core.config import SMPLConfig

BASE = SMPLConfig().to_dict()  # steps=600


@pytest.fixture
def write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so that messages name `space.yaml` as the user wrote it

    def _write(text: str, name: str = "space.yaml") -> str:
        (tmp_path / name).write_text(text)
        return name

    return _write


INVALID = [
    # shape of one param
    ("lr: {type: float, low: 0.5, high: 0.1, log: true}",
     "space.yaml: `lr`: `low` must be < high=0.1, but got low=0.5."),
    ("lr: {type: float, low: 0.1, high: 0.1}",
     "space.yaml: `lr`: `low` must be < high=0.1, but got low=0.1."),
    ("beta_zero: {type: float, low: 0, high: 1, log: true}",
     "space.yaml: `beta_zero`: `low` must be > 0 for a log scale (log: true), but got low=0.0."),
    ("lrr: {type: float, low: 0.1, high: 0.3}",
     "space.yaml: `lrr` is not a config key; did you mean `lr`?"),
    ("lr: {type: float, low: 0.1, hihg: 0.3}",
     "space.yaml: `lr`: `hihg` is not a param key; did you mean `high`?"),
    ("lr: {type: double, low: 0.1, high: 0.3}",
     "space.yaml: `lr`: `type` must be one of float | int | categorical, but got type='double'."),
    ("lr: {low: 0.1, high: 0.3}",
     "space.yaml: `lr`: `type` must be one of float | int | categorical, but got type=None."),
    ("lr: {type: float, low: 0.1, high: 0.3, log: maybe}",
     "space.yaml: `lr`: `log` must be true or false, but got log='maybe'."),
    ("lr: {type: float, low: 0.1}",
     "space.yaml: `lr`: `high` must be given for type float, but got no `high`."),
    ("lr: {type: float, low: small, high: 0.3}",
     "space.yaml: `lr`: `low` must be a finite number for type float, but got low='small'."),
    ("lr: {type: float, low: 0.1, high: 0.3, choices: [0.1]}",
     "space.yaml: `lr`: `choices` must be absent for type float (it samples from `low` to "
     "`high`), but got choices=[0.1]."),
    ("uda_warmup_steps: {type: int, low: 1.5, high: 10}",
     "space.yaml: `uda_warmup_steps`: `low` must be an integer for type int, but got low=1.5."),
    ("feedback_sign: {type: categorical}",
     "space.yaml: `feedback_sign`: `choices` must be a non-empty list for type categorical, "
     "but got choices=None."),
    ("feedback_sign: {type: categorical, choices: []}",
     "space.yaml: `feedback_sign`: `choices` must be a non-empty list for type categorical, "
     "but got choices=[]."),
    ("feedback_sign: {type: categorical, choices: paper}",
     "space.yaml: `feedback_sign`: `choices` must be a non-empty list for type categorical, "
     "but got choices='paper'."),
    ("feedback_sign: {type: categorical, choices: [paper, code], low: 0}",
     "space.yaml: `feedback_sign`: `low` must be absent for type categorical (it samples from "
     "`choices`), but got low=0."),
    ("mu: {type: categorical, choices: [1, 2, 1]}",
     "space.yaml: `mu`: `choices` must be distinct values, but got choices=[1, 2, 1]."),
    ("lr: 0.1",
     "space.yaml: `lr` must be a mapping of type, low, high, log, choices, but got lr=0.1."),
    ("steps: {type: int, low: 10, high: 100}",
     "space.yaml: `steps` cannot be searched (ASHA's budget and the `high: steps` bounds "
     "derive from it); set it with --set steps=..."),
    # values SMPLConfig rejects
    ("threshold: {type: float, low: 0.5, high: 1.5}",
     "space.yaml: `threshold`: high=1.5 is not a valid value: `threshold` must be in (0, 1], "
     "but got threshold=1.5."),
    ("clamp_max: {type: float, low: 0.9, high: 1.1}",
     "space.yaml: `clamp_max`: high=1.1 is not a valid value: `clamp_max` must be at most 1, "
     "but got clamp_max=1.1."),
    ("clamp_min: {type: float, low: 0.0, high: 0.001}",
     "space.yaml: `clamp_min`: low=0.0 is not a valid value: `clamp_min` must be > 0, "
     "but got clamp_min=0.0."),
    ("lr: {type: float, low: -0.1, high: 0.3}",
     "space.yaml: `lr`: low=-0.1 is not a valid value: `lr` must be > 0, but got lr=-0.1."),
    ("uda_warmup_steps: {type: int, low: 0, high: 100}",
     "space.yaml: `uda_warmup_steps`: low=0 is not a valid value: `uda_warmup_steps` must be "
     ">= 1, but got uda_warmup_steps=0."),
    ("feedback_sign: {type: categorical, choices: [paper, cod]}",
     "space.yaml: `feedback_sign`: choice='cod' is not a valid value: `feedback_sign` must be "
     "one of paper | code, but got feedback_sign='cod'."),
    ("mu: {type: float, low: 1, high: 7}",
     "space.yaml: `mu`: low=1.0 is not a valid value: `mu` must be an integer, but got mu=1.0."),
    ("clamp_min: {type: float, low: 1.0e-6, high: 1.5}",  # clamp_max stays at its 1.0
     "space.yaml: `clamp_min`: `high` must be < the config's clamp_max=1.0 (clamp ranges must "
     "not overlap: clamp_min < clamp_max for every sample), but got high=1.5."),
    # couplings
    ("uda_warmup_steps: {type: int, low: 1, high: 5000, log: true}",
     "space.yaml: `uda_warmup_steps`: `high` must be <= steps=600 (write `high: steps` to "
     "follow the budget), but got high=5000."),
    ("uda_warmup_steps: {type: categorical, choices: [10, 1000]}",
     "space.yaml: `uda_warmup_steps`: `choices` must be <= steps=600 (write `high: steps` to "
     "follow the budget), but got choices=[10, 1000]."),
    # the clamp rule: one error for every overlap, whichever field crosses
    ("clamp_min: {type: float, low: 1.0e-6, high: 0.95, log: true}\n"
     "clamp_max: {type: float, low: 0.9, high: 1.0}",
     "space.yaml: `clamp_min`: `high` must be < clamp_max's lowest value 0.9 (clamp ranges "
     "must not overlap: clamp_min < clamp_max for every sample), but got high=0.95."),
    ("clamp_min: {type: float, low: 1.0e-6, high: 0.9, log: true}\n"  # touching is overlap
     "clamp_max: {type: float, low: 0.9, high: 1.0}",
     "space.yaml: `clamp_min`: `high` must be < clamp_max's lowest value 0.9 (clamp ranges "
     "must not overlap: clamp_min < clamp_max for every sample), but got high=0.9."),
    ("clamp_min: {type: categorical, choices: [1.0e-8, 0.95]}\n"
     "clamp_max: {type: float, low: 0.9, high: 1.0}",
     "space.yaml: `clamp_min`: `choices` must be < clamp_max's lowest value 0.9 (clamp ranges "
     "must not overlap: clamp_min < clamp_max for every sample), but got "
     "choices=[1e-08, 0.95]."),
    ("clamp_min: {type: float, low: 1.0e-8, high: 0.001}\n"
     "clamp_max: {type: float, low: 0.0, high: 1.0}",
     "space.yaml: `clamp_min`: `high` must be < clamp_max's lowest value 0.0 (clamp ranges "
     "must not overlap: clamp_min < clamp_max for every sample), but got high=0.001."),
    ("clamp_max: {type: float, low: 1.0e-9, high: 1.0}",  # clamp_min stays at its 1e-8
     "space.yaml: `clamp_max`: `low` must be > the config's clamp_min=1e-08 (clamp ranges "
     "must not overlap: clamp_min < clamp_max for every sample), but got low=1e-09."),
    # the file as a whole
    ("extends: smpl-basic\nlr: {type: float, low: 0.1, high: 0.3}",
     "space.yaml: `extends` must be a preset (smpl, smpl-extended), but got "
     "extends='smpl-basic'."),
    ("", "space.yaml must hold a non-empty mapping of config fields to search specs, but holds "
         "nothing."),
    ("- lr\n- mu\n", "space.yaml must hold a non-empty mapping of config fields to search "
                     "specs, but holds a list."),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[m[12:60] for _, m in INVALID])
def test_invalid_space_names_file_param_rule_value(write, text, message):
    path = write(text)
    with pytest.raises(ValueError) as info:
        load_space(path, BASE)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_malformed_yaml_names_file_and_line(write):
    path = write("threshold: {type: float, low: 0.5, high: 0.99}\nlr: {type: float, low: 0.1\n")
    with pytest.raises(ValueError, match=r"^malformed YAML in space\.yaml:3: ") as info:
        load_space(path, BASE)
    assert "\n" not in str(info.value)


def test_duplicate_param_is_malformed(write):
    path = write("lr: {type: float, low: 0.1, high: 0.3}\n"
                 "mu: {type: categorical, choices: [1, 2]}\n"
                 "lr: {type: float, low: 0.01, high: 0.3}\n")
    with pytest.raises(ValueError) as info:
        load_space(path, BASE)
    assert str(info.value) == ("malformed YAML in space.yaml:3: `lr` is given twice "
                               "(first on line 1)")


@pytest.mark.parametrize(("arg", "message"), [
    ("nope.yaml", "`--space` must be a preset (smpl, smpl-extended) or an existing YAML "
                  "file, but got --space='nope.yaml' (no such file)."),
    ("sub/space", "`--space` must be a preset (smpl, smpl-extended) or an existing YAML "
                  "file, but got --space='sub/space' (no such file)."),
    ("smpl-extnded", "`--space` must be a preset (smpl, smpl-extended) or a YAML file, but "
                     "got --space='smpl-extnded'; did you mean `smpl-extended`?"),
    ("zzz", "`--space` must be a preset (smpl, smpl-extended) or a YAML file, but got "
            "--space='zzz'."),
])
def test_missing_file_or_preset(tmp_path, monkeypatch, arg, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        load_space(arg, BASE)
    assert str(info.value) == message


def test_directory_is_not_a_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spaces").mkdir()
    with pytest.raises(ValueError, match=r"but got --space='spaces' \(a directory\)\.$"):
        load_space("spaces", BASE)


def test_steps_too_small_for_the_preset_says_where_high_came_from():
    base = SMPLConfig(steps=1, eval_every=1).to_dict()
    with pytest.raises(ValueError) as info:
        load_space("smpl", base)
    assert str(info.value) == ("presets/smpl.yaml: `uda_warmup_steps`: `low` must be < high=1, "
                               "but got low=1 (`high: steps` is the config's steps=1).")


def test_good_file_loads(write):
    path = write(
        "# yaml 1.1 reads 1e-4 as a string: accepted as the number\n"
        "lr: {type: float, low: 1e-4, high: 0.3, log: true}\n"
        "uda_warmup_steps: {type: int, low: 10, high: steps}\n"
        "momentum: {type: float, low: 0.8, high: 0.99}\n"
        "nesterov: {type: categorical, choices: [true, false]}\n"
        "clamp_min: {type: float, low: 1.0e-6, high: 0.95, log: true}\n"
        "clamp_max: {type: float, low: 0.96, high: 1.0}\n")
    space = load_space(path, {**BASE, "steps": 200, "eval_every": 50})
    assert space == {
        "lr": ParamSpec("float", 1e-4, 0.3, log=True),
        "uda_warmup_steps": ParamSpec("int", 10, 200),
        "momentum": ParamSpec("float", 0.8, 0.99),
        "nesterov": ParamSpec("categorical", choices=(True, False)),
        "clamp_min": ParamSpec("float", 1e-6, 0.95, log=True),
        "clamp_max": ParamSpec("float", 0.96, 1.0),
    }
    assert isinstance(space["lr"].low, float)


def test_extends_a_preset_and_overrides_a_param(write):
    path = write("extends: smpl\n"
                 "lr: {type: float, low: 0.01, high: 0.1, log: true}\n"
                 "temperature: {type: float, low: 0.5, high: 1.0}\n")
    space = load_space(path, BASE)
    assert list(space) == ["threshold", "beta_zero", "uda_warmup_steps", "lr", "clamp_min",
                           "clamp_max", "temperature"]
    assert space["lr"] == ParamSpec("float", 0.01, 0.1, log=True)
    assert space["threshold"] == ParamSpec("float", 0.5, 0.99)


def test_paramspec_in_code_obeys_the_same_rules():
    with pytest.raises(ValueError, match=r"^`low` must be < high=1, but got low=3\.$"):
        ParamSpec("int", 3, 1)
    assert ParamSpec("float", 1, 2).low == 1.0
    assert ParamSpec("categorical", choices=["a", "b"]).choices == ("a", "b")


def test_extends_loop_is_an_error(tmp_path, monkeypatch):
    import search_spaces.loader as loader

    monkeypatch.setattr(loader, "PRESET_DIR", tmp_path)
    (tmp_path / "a.yaml").write_text("extends: b\nlr: {type: float, low: 0.1, high: 0.3}\n")
    (tmp_path / "b.yaml").write_text("extends: a\nmu: {type: categorical, choices: [1, 2]}\n")
    with pytest.raises(ValueError) as info:
        load_space("a", BASE)
    assert str(info.value) == ("presets/b.yaml: `extends` must not loop back to a, but got "
                               "extends='a' (chain: a -> b).")

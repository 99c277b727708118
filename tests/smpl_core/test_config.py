"""SMPLConfig: every bad input is a ValueError/TypeError naming the field, the rule and the
value (docs/design.md, "House style"); YAML round trips."""

from __future__ import annotations

import re

import pytest
import yaml

from smpl_core.config import SMPLConfig, load_yaml, parse_set


def _raises(exc, **kw):
    with pytest.raises(exc) as info:
        SMPLConfig(**kw)
    return str(info.value)


@pytest.mark.parametrize("changes, field, rule", [
    ({"threshold": 1.5}, "threshold", "in (0, 1]"),
    ({"threshold": 0.0}, "threshold", "in (0, 1]"),
    ({"threshold": -0.2}, "threshold", "in (0, 1]"),
    ({"clamp_min": 0.0}, "clamp_min", "> 0"),
    ({"clamp_min": -1e-8}, "clamp_min", "> 0"),
    ({"clamp_min": 0.5, "clamp_max": 0.5}, "clamp_min", "< clamp_max"),
    ({"clamp_min": 0.9, "clamp_max": 0.5}, "clamp_min", "< clamp_max"),
    ({"clamp_max": 1.01}, "clamp_max", "at most 1"),
    ({"lr": 0.0}, "lr", "> 0"),
    ({"lr": -0.1}, "lr", "> 0"),
    ({"lr": float("nan")}, "lr", "finite"),
    ({"uda_warmup_steps": 0}, "uda_warmup_steps", ">= 1"),
    ({"method": "fixmatch"}, "method", "one of"),
    ({"dataset": "mnist"}, "dataset", "one of"),
    ({"second_pass": "twice"}, "second_pass", "one of"),
    ({"feedback_sign": "neg"}, "feedback_sign", "one of"),
    ({"eval_every": 0}, "eval_every", ">= 1"),
    ({"method": "fixmatch"}, "method", "smpl | uda | supervised | mpl"),
    ({"mpl_weight": -1.0}, "mpl_weight", ">= 0"),
    ({"mpl_weight": float("inf")}, "mpl_weight", "finite"),
    ({"ema_decay": 1.0}, "ema_decay", "in [0, 1)"),
    ({"ema_decay": -0.1}, "ema_decay", "in [0, 1)"),
    ({"eval_bn": "batch"}, "eval_bn", "precise | running"),
    ({"eval_bn_batches": 0}, "eval_bn_batches", ">= 1"),
    ({"momentum": 1.0}, "momentum", "in [0, 1)"),
    ({"temperature": 0.0}, "temperature", "> 0"),
    ({"beta_zero": -1.0}, "beta_zero", ">= 0"),
    ({"device": "tpu"}, "device", "cuda"),
    ({"feedback_scale": "bogus"}, "feedback_scale", "raw | per_lr | normalised"),
    ({"feedback_scale": "normalized"}, "feedback_scale", "one of"),
    ({"feedback_control": "random"}, "feedback_control", "none | shuffled | constant"),
    ({"feedback_clip": -0.1}, "feedback_clip", ">= 0"),
    ({"feedback_clip": float("nan")}, "feedback_clip", "finite"),
])
def test_bad_values_name_field_rule_and_value(changes, field, rule):
    msg = _raises(ValueError, **changes)
    assert msg.startswith(f"`{field}` must be")
    assert rule in msg
    assert f"{field}={changes[field]!r}" in msg


@pytest.mark.parametrize("field, value, kind", [
    ("lr", "abc", "a number"),
    ("lr", True, "a number"),
    ("steps", 2.5, "an integer"),
    ("steps", "10", "an integer"),
    ("nesterov", 1, "true or false"),
    ("method", 3, "a string"),
])
def test_wrong_types_are_type_errors(field, value, kind):
    msg = _raises(TypeError, **{field: value})
    assert msg == f"`{field}` must be {kind}, but got {field}={value!r}."


def test_exact_message_shape():
    assert _raises(ValueError, threshold=1.5) == (
        "`threshold` must be in (0, 1], but got threshold=1.5.")


def test_unknown_key_suggests_closest():
    with pytest.raises(ValueError, match=r"`treshold`.*did you mean `threshold`"):
        SMPLConfig.from_dict({"treshold": 0.9})
    with pytest.raises(ValueError, match=r"`beta_zer0`.*did you mean `beta_zero`"):
        SMPLConfig.from_dict({"beta_zer0": 1.0})
    with pytest.raises(ValueError, match="valid keys: method"):
        SMPLConfig.from_dict({"zzzzqqqq": 1})


def test_valid_edges_are_accepted():
    c = SMPLConfig(threshold=1.0, clamp_max=1.0, clamp_min=1e-12, uda_warmup_steps=1,
                   lr="1e-3", steps=5, eval_every=5)
    assert c.lr == 1e-3 and isinstance(c.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert isinstance(SMPLConfig(lr=1).lr, float)


def test_yaml_round_trip(tmp_path):
    cfg = SMPLConfig(method="mpl", dataset="moons", threshold=0.77, clamp_min=1e-11,
                     clamp_max=0.93, lr=3.3e-4, beta_zero=12.5, uda_warmup_steps=17,
                     feedback_sign="code", second_pass="recompute", nesterov=False)
    text = cfg.to_yaml(header="best trial\nval_accuracy 0.9")
    assert text.startswith("# best trial\n# val_accuracy 0.9\n")
    path = tmp_path / "best.yaml"
    path.write_text(text)
    back = SMPLConfig.from_dict(load_yaml(path))
    assert back == cfg
    assert SMPLConfig.from_dict(yaml.safe_load(SMPLConfig().to_yaml())) == SMPLConfig()
    assert cfg.replace(lr=0.1) == SMPLConfig(**{**cfg.to_dict(), "lr": 0.1})


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: smpl\nlr: 0.1\n  steps: 3\nthreshold: 0.9\n")
    with pytest.raises(ValueError) as info:
        load_yaml(path)
    msg = str(info.value)
    assert re.search(re.escape(str(path)) + r":3\b", msg), msg
    assert "malformed YAML" in msg


def test_load_yaml_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ValueError, match="missing.yaml"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}


def test_parse_set():
    assert parse_set(["lr=0.5", "dataset=moons", "nesterov=false", "steps=3"]) == {
        "lr": 0.5, "dataset": "moons", "nesterov": False, "steps": 3}
    with pytest.raises(ValueError, match="key=value"):
        parse_set(["lr"])


def test_new_fields_accept_their_edges():
    c = SMPLConfig(method="uda", mpl_weight=0.0, ema_decay=0.0, eval_bn="running",
                   eval_bn_batches=1, steps=50, eval_every=100)  # eval_every > steps: one
    assert (c.mpl_weight, c.eval_every) == (0.0, 100)
    assert SMPLConfig(ema_decay=0.999, mpl_weight=4).mpl_weight == 4.0


def test_feedback_fields_defaults_and_edges():
    c = SMPLConfig()
    assert (c.feedback_scale, c.feedback_clip, c.feedback_control) == ("raw", 0.0, "none")
    c = SMPLConfig(feedback_scale="normalised", feedback_control="constant", feedback_clip=0)
    assert c.feedback_clip == 0.0 and isinstance(c.feedback_clip, float)
    assert SMPLConfig(feedback_scale="per_lr", feedback_clip="1e3").feedback_clip == 1000.0
    with pytest.raises(TypeError, match="`feedback_clip` must be a number"):
        SMPLConfig(feedback_clip="off")


def test_cli_bad_feedback_scale_is_one_line_and_exit_2(tmp_path):
    """`tune-smpl train --set feedback_scale=bogus`: status 2, one line naming the field."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "tune-smpl"
    done = subprocess.run([str(exe), "train", "--set", "feedback_scale=bogus"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "`feedback_scale` must be one of raw | per_lr | normalised" in lines[0]
    assert "feedback_scale='bogus'" in lines[0]


def test_author_config_file_is_megaboosts_settings():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "smpl-author.yaml"
    c = SMPLConfig.from_dict(load_yaml(path))
    assert (c.temperature, c.threshold, c.beta_zero, c.label_smoothing) == (1.25, 0.6, 8.0, 0.15)
    assert (c.feedback_sign, c.feedback_baseline, c.ema_decay) == ("code", True, 0.995)
    assert c.method == "smpl" and c.mpl_weight == 1.0

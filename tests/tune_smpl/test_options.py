"""The settings of `tune`: one TuneOptions for the command line and for `tune_smpl.tune`.

The flags are generated from the dataclass; these tests tie the two (every field is a flag
with its default, every flag a field), check the keywords' types, that `prepare` leaves
its options alone and returns a plan, and that a bad value gives the library the very
line the command prints. None of them starts Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import tune_smpl
from smpl_core.errors import ConfigError, ConfigTypeError
from tune_smpl.cli import build_parser, main
from tune_smpl.options import TuneOptions, add_arguments, defaults, flag
from tune_smpl.plan import SweepPlan, prepare
from tune_smpl.sweep.run import new_record

# The flags of `tune-smpl tune` (README, docs/design.md): the contract of both ways in.
FLAGS = ("config", "set", "dataset", "space", "num_samples", "sampler", "max_concurrent",
         "gpus_per_trial", "cpus_per_trial", "memory_per_trial", "max_failures", "num_cpus",
         "num_gpus", "time_budget", "finalists", "finalist_seeds", "warm_start",
         "warm_start_storage", "warm_start_top", "grace_period", "reduction_factor", "name",
         "storage_path", "shared_storage", "address", "resume", "seed", "tracking_uri")


def _tune_parser() -> argparse.ArgumentParser:
    sub = build_parser()._subparsers._group_actions[0]  # the subcommands' action
    return sub.choices["tune"]


def test_every_field_is_a_flag_with_its_default_and_help():
    assert tuple(f.name for f in dataclasses.fields(TuneOptions)) == FLAGS
    actions = {a.dest: a for a in _tune_parser()._actions if a.dest != "help"}
    assert sorted(actions) == sorted(FLAGS)
    for name, value in defaults().items():
        a = actions[name]
        assert a.option_strings == [flag(name)], name
        assert a.default == value, (name, a.default, value)
        assert a.help, name
    # a parsed command line with no flags is the options with no keywords
    assert TuneOptions.of(_tune_parser().parse_args([])) == TuneOptions()


def test_a_command_line_and_the_keywords_give_the_same_options():
    argv = ["--config", "c.yaml", "--set", "steps=40", "--set", "lr=0.1", "--dataset", "moons",
            "--space", "smpl-extended", "--num-samples", "5", "--sampler", "random",
            "--max-concurrent", "2", "--gpus-per-trial", "0.5", "--cpus-per-trial", "2",
            "--memory-per-trial", "1.5", "--max-failures", "0", "--num-cpus", "3",
            "--num-gpus", "1", "--time-budget", "60", "--finalists", "2", "--finalist-seeds",
            "3", "--warm-start", "a", "--warm-start", "b", "--warm-start-storage", "s3://x",
            "--warm-start-top", "4", "--grace-period", "1", "--reduction-factor", "3",
            "--name", "n", "--storage-path", "/r", "--shared-storage", "--address", "auto",
            "--resume", "--seed", "7", "--tracking-uri", "sqlite:///m.db"]
    parsed = TuneOptions.of(_tune_parser().parse_args(argv))
    keywords = TuneOptions(
        config="c.yaml", set=["steps=40", "lr=0.1"], dataset="moons", space="smpl-extended",
        num_samples=5, sampler="random", max_concurrent=2, gpus_per_trial=0.5,
        cpus_per_trial=2, memory_per_trial=1.5, max_failures=0, num_cpus=3, num_gpus=1,
        time_budget=60, finalists=2, finalist_seeds=3, warm_start=["a", "b"],
        warm_start_storage="s3://x", warm_start_top=4, grace_period=1, reduction_factor=3,
        name="n", storage_path=Path("/r"), shared_storage=True, address="auto", resume=True,
        seed=7, tracking_uri="sqlite:///m.db")
    assert parsed == keywords
    assert keywords.cpus_per_trial == 2.0 and isinstance(keywords.cpus_per_trial, float)
    assert keywords.storage_path == "/r" and keywords.set == ("steps=40", "lr=0.1")


def test_options_are_frozen():
    opts = TuneOptions(name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, message", [
    ({"num_samples": "3"}, "`--num-samples` must be an integer, but got --num-samples='3'."),
    ({"num_samples": 2.0}, "`--num-samples` must be an integer, but got --num-samples=2.0."),
    ({"gpus_per_trial": True}, "`--gpus-per-trial` must be a number, but got "
                               "--gpus-per-trial=True."),
    ({"shared_storage": "yes"}, "`--shared-storage` must be True or False, but got "
                                "--shared-storage='yes'."),
    ({"set": "steps=40"}, None),  # one text is one item: fine
    ({"set": 40}, "`--set` must be a list of KEY=VALUE strings or a dict, but got --set=40."),
    ({"warm_start": ["a", 1]}, "`--warm-start` must be a list of strings, but got "
                               "--warm-start=['a', 1]."),
    ({"space": 3}, "`--space` must be a string, but got --space=3."),
])
def test_a_keyword_of_the_wrong_type_is_a_config_type_error(kwargs, message):
    if message is None:
        TuneOptions(**kwargs)
        return
    with pytest.raises(ConfigTypeError) as e:
        tune_smpl.tune(**kwargs)
    assert str(e.value) == message


def test_an_unknown_keyword_is_a_type_error_like_any_function():
    with pytest.raises(TypeError, match=r"tune\(\) got an unexpected keyword argument "
                                        r"'num_sample' \(did you mean 'num_samples'\?\)"):
        tune_smpl.tune(num_sample=3)
    with pytest.raises(TypeError):
        tune_smpl.open_sweep("x", "runs", storage_path="runs")


def test_set_takes_texts_or_a_dict_of_values():
    texts = TuneOptions(dataset="moons", set=["steps=40", "lr=0.001", "feedback_sign=code"])
    values = TuneOptions(dataset="moons", set={"steps": 40, "lr": 1e-3,
                                               "feedback_sign": "code"})
    assert texts.fixed_fields() == values.fixed_fields() == {
        "dataset": "moons", "steps": 40, "lr": 1e-3, "feedback_sign": "code"}
    # a dict's value is taken as it is; a text is read as YAML
    assert TuneOptions(set={"data_dir": "123"}).fixed_fields() == {"data_dir": "123"}
    assert TuneOptions(set=["data_dir=123"]).fixed_fields() == {"data_dir": 123}
    # --set dataset wins over --dataset, as `--set` comes after it
    assert TuneOptions(dataset="moons", set={"dataset": "digits"}).fixed_fields() == {
        "dataset": "digits"}


def test_prepare_returns_a_plan_and_leaves_its_options_alone(tmp_path):
    runs = tmp_path / "runs"
    opts = TuneOptions(dataset="moons", set={"steps": 40, "lr": 0.01}, num_samples=3,
                       storage_path=str(runs), name="p")
    before = dataclasses.replace(opts)
    plan = prepare(opts)
    assert isinstance(plan, SweepPlan) and not plan.resumed and plan.prior is None
    assert opts == before
    assert plan.settings.name == "p" and plan.settings.storage_path == str(runs)
    assert plan.settings.fixed == ["lr"] and "lr" not in plan.space
    assert plan.base.dataset == "moons" and plan.base.steps == 40 and plan.base.lr == 0.01
    assert plan.tracking_uri is None  # the default store is chosen where it is checked

    # resumed: settings, base, space and MLflow store from the record; options untouched
    new_record(plan.settings, plan.base, plan.space, "sqlite:///recorded.db")
    again = TuneOptions(name="p", storage_path=str(runs), resume=True, num_samples=99)
    resumed = prepare(again)
    assert resumed.resumed and resumed.record.name == "p"
    assert again.tracking_uri is None and again.num_samples == 99
    assert resumed.tracking_uri == "sqlite:///recorded.db"
    assert resumed.settings == plan.settings and resumed.base == plan.base
    assert sorted(resumed.space) == sorted(plan.space)
    given = prepare(dataclasses.replace(again, tracking_uri="sqlite:///other.db"))
    assert given.tracking_uri == "sqlite:///other.db"


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(["tune", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tune-smpl: error: "), err
    return err[0].removeprefix("tune-smpl: error: ")


@pytest.mark.parametrize("argv, kwargs", [
    (["--num-samples", "0"], {"num_samples": 0}),
    (["--sampler", "cmaes"], {"sampler": "cmaes"}),
    (["--set", "threshold=1.5"], {"set": {"threshold": 1.5}}),
    (["--set", "nope=1"], {"set": ["nope=1"]}),
    (["--finalists", "9", "--num-samples", "3"], {"finalists": 9, "num_samples": 3}),
    (["--warm-start-top", "2"], {"warm_start_top": 2}),
    (["--memory-per-trial", "0"], {"memory_per_trial": 0}),
    (["--space", "nope"], {"space": "nope"}),
    (["--name", "bad name"], {"name": "bad name"}),
    (["--resume", "--name", "nope"], {"resume": True, "name": "nope"}),
    (["--resume"], {"resume": True}),
    (["--resume", "--name", "x", "--warm-start", "a"],
     {"resume": True, "name": "x", "warm_start": "a"}),
])
def test_bad_values_raise_the_line_the_command_prints(tmp_path, capsys, argv, kwargs):
    runs = str(tmp_path / "runs")
    argv = ["--storage-path", runs, *argv]
    kwargs = {"storage_path": runs, **kwargs}
    if "--name" not in argv:
        argv, kwargs = [*argv, "--name", "bad"], {**kwargs, "name": "bad"}
    line = _cli_error(capsys, argv)
    with pytest.raises(ConfigError) as e:
        tune_smpl.tune(**kwargs)
    assert str(e.value) == line
    assert not (tmp_path / "runs" / "bad").exists()


def test_the_command_line_does_not_import_pandas_and_the_library_does():
    code = ("import sys, tune_smpl.cli; assert 'pandas' not in sys.modules, 'cli'; "
            "import tune_smpl; assert 'pandas' not in sys.modules, 'package'; "
            "tune_smpl.Sweep; assert 'pandas' in sys.modules; "
            "assert set(tune_smpl.__all__) <= set(dir(tune_smpl)); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError):
        tune_smpl.no_such_name  # noqa: B018


def test_add_arguments_gives_any_parser_the_flags():
    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args(["--num-samples", "4", "--set", "a=1"])
    assert TuneOptions.of(ns) == TuneOptions(num_samples=4, set=["a=1"])

"""A damaged file in a sweep's record (a trial.json cut short by a failed upload or a full
disk, a sweep.json with a JSON error from a hand edit, a field missing or of the wrong type):
`export` and `report` go on without a damaged trial and say so; `--resume` refuses with one
line naming the file; a damaged sweep.json stops all three with one line naming it.

The sweep is a record written as a finished sweep writes it (run.new_record, then one
TrialRecord per trial from an Optuna study asking the smpl space), once per module, and
copied per test: no Ray, no training."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from search_spaces import load_space, make_define_by_run
from smpl_core.config import SMPLConfig
from tune_smpl.cli import main
from tune_smpl.sweep.record import DamagedRecord, TrialRecord, open_sweep
from tune_smpl.sweep.run import new_record
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.study import distributions_json

NAME, N = "dmg", 8
STEPS = (10, 20, 30, 40)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The storage folder of a finished 8-trial sweep's record."""
    root = tmp_path_factory.mktemp("finished") / "runs"
    base = SMPLConfig(steps=40, eval_every=10, batch_size=16, mu=2, val_size=100)
    space = load_space("smpl", base.to_dict())
    settings = SweepSettings(name=NAME, storage_path=str(root), num_samples=N,
                             max_concurrent=2, sampler="random")
    record = new_record(settings, base, space, f"sqlite:///{root.parent}/mlflow.db")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                direction="maximize")
    fn, rng = make_define_by_run(space), random.Random(0)
    for n in range(N):
        trial = study.ask()
        fn(trial)
        steps = STEPS if n % 3 else STEPS[:2]
        reports = [{"step": s, "val_accuracy": round(rng.uniform(0.3, 0.9), 4),
                    "val_loss": rng.uniform(0.5, 2.0), "time_this_iter_s": 1.0,
                    "checkpoint_dir_name": None} for s in steps]
        record.save_trial(TrialRecord(
            key=f"{n:04d}", number=n, params=trial.params,
            distributions=distributions_json(trial),
            config={**base.to_dict(), **trial.params}, started=True,
            outcome="completed" if n % 3 else "early_stopped", reports=reports,
            created_at=1000.0 + n, ended_at=1010.0 + n))
    meta = record.meta()
    record.save_meta({**meta, "status": "finished", "runs": 1, "wall_s": 30.0})
    return root


@pytest.fixture
def sweep(finished, tmp_path, monkeypatch) -> Path:
    """A copy of the finished sweep's storage folder, for one test to damage."""
    monkeypatch.setattr("mlflow_tracking.TrialRuns", lambda *a, **k: None)  # no store
    root = tmp_path / "runs"
    shutil.copytree(finished, root)
    return root


def _trial_file(root: Path, key: str) -> Path:
    return root / NAME / f"trial_{key}" / "trial.json"


def _cut_short(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[:len(text) // 2])  # a failed upload, a full disk


def _best(root: Path, without: str | None = None) -> tuple[str, float]:
    rec = {t.key: t for t in open_sweep(str(root), NAME).scan()[0] if t.key != without}
    return max(((k, max(r["val_accuracy"] for r in t.reports)) for k, t in rec.items()),
               key=lambda kv: kv[1])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_fixture_is_a_sweep_every_command_reads(sweep, capsys):
    assert len(open_sweep(str(sweep), NAME).trials()) == N
    assert main(["export", NAME, "--storage-path", str(sweep)]) == 0
    out, err = capsys.readouterr()
    key, value = _best(sweep)
    assert f"trial_id: {key}" in out and "damaged" not in out + err


def test_export_goes_on_without_a_trial_cut_short_and_says_so(sweep, capsys):
    # Cut short the best trial's file: the export is the best of the seven others.
    best_key, _ = _best(sweep)
    path = _trial_file(sweep, best_key)
    _cut_short(path)
    key, value = _best(sweep, without=best_key)
    out_file = sweep.parent / "best.yaml"
    assert main(["export", NAME, "--storage-path", str(sweep), "-o", str(out_file)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warning = [line for line in err if "damaged" in line]
    assert len(warning) == 1, err
    assert warning[0].startswith("tune-smpl: warning: skipped 1 damaged trial record: ")
    assert str(path) in warning[0] and "it is cut short after" in warning[0]
    assert "not valid JSON: " in warning[0] and " line " in warning[0] and " column " in \
        warning[0]
    text = out_file.read_text()
    assert f"trial_id: {key}" in text and f"best val_accuracy: {value:.6g}" in text
    comment = [line for line in text.splitlines() if "damaged" in line]
    assert len(comment) == 1 and comment[0].startswith("# ") and str(path) in comment[0]
    SMPLConfig.from_dict(yaml.safe_load(text))  # still a config `train --config` takes
    # JSON: the same, as a field.
    assert main(["export", NAME, "--storage-path", str(sweep), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["_export"]["trial_id"] == key
    (skipped,) = got["_export"]["skipped_damaged"]
    assert skipped["file"] == str(path) and "not valid JSON" in skipped["problem"]


def test_resume_refuses_a_trial_cut_short_with_one_line(sweep, capsys):
    path = _trial_file(sweep, "0003")
    _cut_short(path)
    assert main(["tune", "--name", NAME, "--storage-path", str(sweep), "--resume"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("tune-smpl: error: ") and str(path) in line
    assert "it is cut short" in line and "restore it from a backup: `--resume` needs" in line
    assert json.loads((sweep / NAME / "sweep.json").read_text())["runs"] == 1  # untouched


def test_report_goes_on_without_a_trial_cut_short_and_says_so(sweep, capsys):
    path = _trial_file(sweep, "0002")
    _cut_short(path)
    out = sweep.parent / "report"
    assert main(["report", NAME, "--storage-path", str(sweep), "-o", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert f"sweep {NAME}: {N - 1} trials" in printed
    warning = [line for line in err.splitlines() if "damaged" in line]
    assert len(warning) == 1 and warning[0].startswith(
        "tune-smpl: warning: skipped 1 damaged trial record: ") and str(path) in warning[0]
    page = (out / "report.html").read_text()
    assert "id='damaged'" in page and str(path) in page and "not valid JSON" in page
    assert "trial 0002 (" not in page  # left out of the figures
    note = (out / "description.md").read_text()
    assert "Left out: skipped 1 damaged trial record" in note and str(path) in note


@pytest.mark.parametrize("damage", ["json error", "missing field", "not an object"])
def test_a_damaged_sweep_json_stops_every_command_with_one_line(sweep, capsys, damage):
    path = sweep / NAME / "sweep.json"
    meta = json.loads(path.read_text())
    if damage == "json error":  # a hand edit that left out a comma
        text = path.read_text().replace('"runs": 1,', '"runs": 1', 1)
        assert text != path.read_text()
        path.write_text(text)
        needle = "Expecting ',' delimiter: line "
    elif damage == "missing field":
        del meta["settings"]
        path.write_text(json.dumps(meta))
        needle = "no field `settings`"
    else:
        path.write_text("[1, 2]")
        needle = "no JSON object"
    out = sweep.parent / "report"
    for argv in (["export", NAME, "--storage-path", str(sweep)],
                 ["report", NAME, "--storage-path", str(sweep), "-o", str(out)],
                 ["tune", "--name", NAME, "--storage-path", str(sweep), "--resume"]):
        assert main(argv) == 2, argv
        line = _one_line(capsys.readouterr().err)
        assert line.startswith("tune-smpl: error: ") and str(path) in line, (argv, line)
        assert needle in line and "restore it from a backup" in line, (argv, line)
    assert not (out / "report.html").exists()


def test_a_trial_missing_a_required_field(sweep, capsys):
    path = _trial_file(sweep, "0005")
    d = json.loads(path.read_text())
    del d["params"]
    path.write_text(json.dumps(d))
    assert main(["export", NAME, "--storage-path", str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1 damaged trial record" in err and "no field `params`" in err
    assert "trial_id: 0005" not in out
    assert main(["tune", "--name", NAME, "--storage-path", str(sweep), "--resume"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and "no field `params` (an object)" in line


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(number="5"), 'field `number` must be an integer, but is "5"'),
    (lambda d: d.update(number=True), "field `number` must be an integer, but is true"),
    (lambda d: d.update(reports={"step": 10}), "field `reports` must be a list"),
    (lambda d: d.update(reports=[1, 2]), "a list of objects, but one is not"),
    (lambda d: d.update(outcome="done"), "field `outcome` must be one of completed"),
    (lambda d: d.update(ended_at="noon"), "field `ended_at` must be a number or null"),
    (lambda d: d.update(key="0006"), "its `key` '0006' is not its folder's (trial_0005)"),
])
def test_wrong_types_and_values_are_damage(sweep, edit, needle):
    path = _trial_file(sweep, "0005")
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    record = open_sweep(str(sweep), NAME)
    trials, damaged = record.scan()
    assert len(trials) == N - 1 and [e.uri for e in damaged] == [str(path)]
    assert needle in damaged[0].problem, damaged[0].problem
    with pytest.raises(DamagedRecord) as e:
        record.trials()
    assert str(e.value) == str(damaged[0]) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, needle", [
    (b"", "it is empty"),
    (b"\x00" * 64, "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    (b"\xff\xfe{", "not UTF-8 text"),
])
def test_empty_and_binary_files_are_damage(sweep, content, needle):
    _trial_file(sweep, "0001").write_bytes(content)
    (_trial_file(sweep, "0004")).write_text("{")
    trials, damaged = open_sweep(str(sweep), NAME).scan()
    assert [t.key for t in trials] == ["0000", "0002", "0003", "0005", "0006", "0007"]
    assert needle in damaged[0].problem and "cut short" in damaged[1].problem
    with pytest.raises(DamagedRecord, match="trial_0001"):  # the first, by folder
        open_sweep(str(sweep), NAME).trials()


def test_an_export_of_only_damaged_trials_names_them(sweep, capsys):
    for d in (sweep / NAME).glob("trial_*"):
        _cut_short(d / "trial.json")
    assert main(["export", NAME, "--storage-path", str(sweep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"skipped {N} damaged trial records" in err[0]
    assert err[1].startswith("tune-smpl: error: ") and f"({N} damaged trial record(s) skipped)" \
        in err[1]


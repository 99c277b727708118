"""End-to-end sweeps on the CPU: ASHA, the Optuna study, the best result, packing."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import small_sets
from tune_smpl.cli import main


def _tune(tmp_path: Path, name: str, *extra: str) -> int:
    return main(["tune", "--name", name, "--storage-path", str(tmp_path / "runs"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *extra])


def _progress(trial_dir: Path) -> list[dict]:
    return json.loads((trial_dir / "trial.json").read_text())["reports"]


def _trial_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.startswith("trial_"))


def test_sweep_prunes_and_reports_the_best(ray_local, tmp_path, capsys):
    rc = _tune(tmp_path, "e2e", "--num-samples", "8", "--grace-period", "1",
               "--reduction-factor", "2", "--gpus-per-trial", "0", *small_sets())
    out = capsys.readouterr().out
    assert rc == 0, out
    sweep = tmp_path / "runs" / "e2e"
    assert main(["export", "e2e", "--storage-path", str(tmp_path / "runs")]) == 0
    rec = views.check_finished(sweep, f"sqlite:///{tmp_path}/mlflow.db", trials=8, summary=out,
                               export=capsys.readouterr().out)
    assert {t["outcome"] for t in rec.values()} == {"completed", "early_stopped"}
    trials = {d.name: _progress(d) for d in _trial_dirs(sweep)}
    assert len(trials) == 8
    lengths = [len(rows) for rows in trials.values()]
    assert min(lengths) < 4 and max(lengths) == 4, lengths  # ASHA stopped some early

    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{sweep}/optuna.db")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 1
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1
    assert len(states) == 8
    for t in study.trials:  # every trial keeps the values it reported, pruned ones too
        assert t.intermediate_values
        if t.state == optuna.trial.TrialState.PRUNED:
            assert len(t.intermediate_values) < 4
            # Optuna's convention for PRUNED: the value is the last intermediate one.
            last = t.intermediate_values[max(t.intermediate_values)]
            assert t.value in (None, last)

    best = max(r["val_accuracy"] for rows in trials.values() for r in rows)
    assert f"best val_accuracy {best:.4f}" in out
    # without a finalist stage the summary and the report say how far to trust it
    assert "one noisy estimate: the highest best report of 8 trial(s)" in out
    html = (sweep / "report" / "report.html").read_text()
    assert "id='no-finalists'" in html and "biased up" in html
    # The one rule (the highest report, issue 28's study): the report names the best that
    # the summary, the parent run and the export named (check_finished, against best_of)
    key, value = views.best_of(rec)
    assert f"Best val_accuracy <b>{value:.4f}</b>: trial {key} (" in html
    assert "tune-smpl export e2e" in out


def _max_overlap(sweep: Path) -> int:
    spans = []
    for d in _trial_dirs(sweep):
        rows = _progress(d)
        spans.append((rows[0]["started_at"], rows[-1]["reported_at"]))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                    key=lambda x: (x[0], x[1]))
    now = best = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


@pytest.mark.parametrize("share,expected", [(0.25, 4), (0.5, 2)])
def test_fractional_gpus_pack_trials(ray_local, tmp_path, share, expected):
    # Logical GPU on a CPU machine: half a CPU each so CPUs never limit the packing.
    rc = _tune(tmp_path, f"pack{share}", "--num-samples", "4", "--gpus-per-trial", str(share),
               "--cpus-per-trial", "0.5", "--grace-period", "4",
               *small_sets("steps=80", "eval_every=20"))
    assert rc == 0
    assert _max_overlap(tmp_path / "runs" / f"pack{share}") == expected


def test_bad_sweep_input_exits_2_before_trials(ray_local, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.5, high: 0.1}\n")
    cases = [
        (["--space", str(space)], "low"),
        (["--gpus-per-trial", "2"], "--gpus-per-trial"),
        (["--set", "threshold=1.5"], "threshold"),
        (["--resume", "--name", "nope"], "nope"),
    ]
    for extra, needle in cases:
        args = ["tune", "--storage-path", str(tmp_path / "runs"), *extra]
        if "--name" not in extra:
            args += ["--name", "bad"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "runs" / "bad").exists()

"""benchmarks/tuning_value.py: the CI-sized `--quick` study runs real sweeps (one with a
finalist stage) seeded by their split, retrains each picked config once, and reports paired
differences; the picks, the cache and the report's arithmetic are checked on data made here."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import pytest
from scipy import stats

from tests.benchmark_scripts import load
from tests.tune_smpl.conftest import REPO, cli_env
from tune_smpl.sweep.record import TrialRecord


def _bench():
    return load('tuning_value')


# --- the picks --------------------------------------------------------------------------
def _trial(number, vals, outcome="completed"):
    reports = [{"step": 100 * (i + 1), "val_accuracy": v} for i, v in enumerate(vals)]
    return TrialRecord(key=f"{number:04d}", number=number, params={}, distributions={},
                       config={}, outcome=outcome, reports=reports)


def test_the_rules_rank_by_final_and_by_smoothed_reports():
    b = _bench()
    from tune_smpl.sweep.outcome import best

    trials = [_trial(0, [0.5, 0.99, 0.75]),  # the highest report; final 0.75, last two 0.87
              _trial(1, [0.5, 0.875, 0.875]),  # the best last two: 0.875
              _trial(2, [0.625, 0.9375], "early_stopped"),  # the best final (its last)
              _trial(3, [1.0], "diverged"),  # never a candidate
              _trial(4, [0.5, 0.875, 0.875])]  # ties trial 1 on both: the earlier wins
    assert best(trials).key == "0000"
    for order in (trials, list(reversed(trials))):
        assert [(t.key, v) for t, v in (b.pick_by(order, b.final_value),
                                        b.pick_by(order, b.smooth_value))] == [
            ("0002", 0.9375), ("0001", 0.875)]
    assert b.smooth_value(trials[0]) == pytest.approx(0.87)
    assert b.smooth_value(_trial(5, [0.8])) == 0.8  # one report: that one
    assert b.pick_by([trials[3]], b.final_value)[0] is None
    assert b.pick_by([_trial(6, [], "completed")], b.smooth_value)[0] is None


def test_a_sweep_seeds_its_sampler_and_its_data_with_the_split(tmp_path):
    b = _bench()
    args = b.parse_args(["--splits", "3"])
    argv = b.sweep_argv(args, tmp_path, "c-s2", 2, 8, 2)
    assert argv[argv.index("--seed") + 1] == "2"
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets[-1] == "seed=2" and "num_labeled=50" in sets
    names = [n for n, _ in b.units(args)]
    assert names == ["default", "c-s0", "d-s0", "c-s1", "d-s1", "c-s2", "d-s2"]
    assert dict(b.units(args))["d-s1"] == {"split": 1, "trials": 12, "finalists": 0}


def test_a_config_is_retrained_once_and_the_cache_survives_a_rerun(tmp_path, monkeypatch):
    b = _bench()
    calls = []
    monkeypatch.setattr(b, "retrain", lambda args, path: calls.append(path) or
                        {"test": [0.9], "val": [0.9], "steps": 600})
    args = b.parse_args(["--out", str(tmp_path / "r.jsonl")])
    same1, same2, other = (tmp_path / n for n in ("x.yaml", "y.yaml", "z.yaml"))
    same1.write_text("# trial 0001\nlr: 0.1\nseed: 3\n")
    same2.write_text("# another header\nlr: 0.1\nseed: 7\n")  # seed: set by the retraining
    other.write_text("lr: 0.2\nseed: 3\n")
    study = b.Study(args)
    keys = [study.retrain(p) for p in (same1, same2, other, None, None)]
    assert keys[0] == keys[1] != keys[2] and keys[3] == keys[4] == "default"
    assert calls == [same1, other, None]
    again = b.Study(args)  # a rerun reads what the file holds
    assert again.retrain(same2) == keys[0] and len(calls) == 3
    rows = [json.loads(ln) for ln in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [keys[0], keys[2], "default"]


# --- the report -------------------------------------------------------------------------
TESTS = {  # split -> arm -> (test accuracy, promised); arms of equal accuracy share a key
    0: {"b": (0.93, 0.96), "b_final": (0.92, 0.93), "b_smooth": (0.93, 0.95),
        "c": (0.94, 0.945), "d": (0.91, 0.97)},
    1: {"b": (0.89, 0.97), "b_final": (0.91, 0.92), "b_smooth": (0.91, 0.915),
        "c": (0.92, 0.93), "d": (0.95, 0.96)},
    2: {"b": (0.95, 0.955), "b_final": (0.95, 0.94), "b_smooth": (0.94, 0.95),
        "c": (0.93, 0.925), "d": (0.90, 0.98)},
}
DEFAULT = [0.89, 0.91]  # two hold-out seeds: 0.90


def _rows():
    rows = [{"name": "retrain", "key": "default", "test": DEFAULT}]
    for split, arms in TESTS.items():
        keys = {}
        for arm, (acc, _) in arms.items():
            key = f"s{split}-{acc}"  # the same accuracy in a split: the same config
            if key not in keys.values():
                rows.append({"name": "retrain", "key": key, "test": [acc - 0.01, acc + 0.01]})
            keys[arm] = key
        pick = {a: {"trial": keys[a], "promised": p, "key": keys[a]}
                for a, (_, p) in arms.items()}
        rows.append({"name": f"d-s{split}", "split": split, "search_steps": 900,
                     "finalist_steps": 0, "arms": {"d": pick["d"]}})
        rows.append({"name": f"c-s{split}", "split": split, "search_steps": 500,
                     "finalist_steps": 240, "arms": {a: pick[a] for a in arms if a != "d"}})
    rows.append({"name": "default", "key": "default"})
    return rows + _unpaired(rows[-2])


def _unpaired(c_row):
    """Split 3 has its c sweep only; split 4 has a pick not yet retrained."""
    return [{**c_row, "name": "c-s3", "split": 3}, {**c_row, "name": "c-s4", "split": 4},
            {"name": "d-s4", "split": 4, "search_steps": 900, "finalist_steps": 0,
             "arms": {"d": {"trial": "x", "promised": 0.9, "key": "missing"}}}]


def _expect_ci(diffs):
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def test_the_report_pairs_the_arms_by_split_and_computes_each_column():
    b = _bench()
    text = b.report(_rows())
    assert text.startswith("3 paired data splits (0, 1, 2);")
    steps = {"b": 500, "b_final": 500, "b_smooth": 500, "c": 740, "d": 900}
    for arm in ("b", "b_final", "b_smooth", "c", "d"):
        acc = [100 * TESTS[s][arm][0] for s in TESTS]
        vs_a = [a - 90 for a in acc]
        vs_b = [a - 100 * TESTS[s]["b"][0] for a, s in zip(acc, TESTS)]
        opt = [100 * TESTS[s][arm][1] - a for a, s in zip(acc, TESTS)]
        worst = min(TESTS, key=lambda s: TESTS[s][arm][0])
        cells = [f"{arm}: {b.NAMES[arm]}",
                 f"{statistics.fmean(acc):.2f} +- {statistics.stdev(acc):.2f}",
                 _expect_ci(vs_a), "-" if arm == "b" else _expect_ci(vs_b),
                 f"{sum(v < 0 for v in vs_a)} of 3",
                 f"{100 * TESTS[worst][arm][0] - 90:+.2f} (split {worst})",
                 f"{sum(opt) / 3:+.2f}", f"{max(opt):+.2f}", str(steps[arm])]
        assert "| " + " | ".join(cells) + " |" in text, arm
    assert "| a: default config | 90.00 +- 0.00 | - | - | - | - | - | - | 0 |" in text
    # b: +3, -1, +5 points: mean +2.33, its CI reaches below 0; optimism +3, +8, +0.5
    low = _expect_ci([3, -1, 5]).split("[")[1].split(",")[0]
    assert (f"- b: NOT met: gain +2.33 (CI low {low}) >= +2, > 0; NOT met: worst split -1.00 "
            ">= -0.5; NOT met: optimism mean +3.83 <= +1, worst +8.00 <= +2") in text
    # c: +4, +2, +3: the gain is met; worst +2; optimism +0.5, +1, -0.5
    assert "- c: met: gain +3.00" in text and "met: optimism mean +0.33 <= +1, worst +1.00" in text
    # b_smooth: optimism +2, +0.5, +1: the mean is over 1 point, the worst within 2
    line = next(ln for ln in text.splitlines() if ln.startswith("- b_smooth:"))
    assert line.endswith("; NOT met: optimism mean +1.17 <= +1, worst +2.00 <= +2")
    assert "Same trial as b: b_final 1 of 3, b_smooth 1 of 3, c 0 of 3" in text


def test_the_report_waits_for_a_complete_split():
    b = _bench()
    rows = _rows()
    c2 = next(r for r in rows if r["name"] == "c-s2")
    assert b.report(_unpaired(c2) + rows[:1]).startswith("no split has")
    assert b.report([r for r in rows if r.get("key") != "default"]).startswith("no split has")


@pytest.mark.slow
def test_quick_study_appends_each_unit_and_resumes(tmp_path):
    """A subprocess: the benchmark starts its own Ray, which a test module's Ray would block.
    A second run finds every unit in the results file and trains nothing."""
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, str(REPO / "benchmarks" / "tuning_value.py"), "--quick", "--out",
           str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env("tv"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    units = [r["name"] for r in rows if r["name"] != "retrain"]
    assert units == ["default", "c-s0", "d-s0"]
    retrained = [r["key"] for r in rows if r["name"] == "retrain"]
    assert len(retrained) == len(set(retrained)) and retrained[0] == "default"
    c, d = (next(r for r in rows if r["name"] == n) for n in ("c-s0", "d-s0"))
    assert set(c["arms"]) == {"b", "b_final", "b_smooth", "c"} and set(d["arms"]) == {"d"}
    picks = [p for r in (c, d) for p in r["arms"].values()]
    # every pick's retraining is in the file before its unit, and each config once
    assert {p["key"] for p in picks} | {"default"} == set(retrained)
    for r in (c, d):
        assert r["split"] == r["sampler_seed"] == r["data_seed"] == 0
        assert all(retrained.index(p["key"]) < rows.index(r) for p in r["arms"].values())
    assert c["finalist_steps"] == 20 and c["finalists"][0]["runs"] == 1  # 1 finalist x 1 seed
    by_key = {r["key"]: r for r in rows if r["name"] == "retrain"}
    assert all(0 <= a <= 1 for k in retrained for a in by_key[k]["test"])
    assert "| b_final: ranked by final report |" in proc.stdout
    assert (tmp_path / "r.png").stat().st_size > 10_000
    again = subprocess.run(cmd, cwd=tmp_path, env=cli_env("tv"), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and len(out.read_text().splitlines()) == len(rows)
    assert "done (" not in again.stderr

"""benchmarks/meta_term.py: the CI-sized `--quick` study runs every arm paired over seeds,
records its calibration, prints the table with paired 95% CIs, and a rerun with the same
results file trains nothing (it skips what is there)."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load


def _bench():
    return load('meta_term')


def test_quick_study_is_paired_resumable_and_prints_the_table(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "runs.jsonl"
    results = bench.main(["--quick", "--datasets", "moons", "--out", str(out)])
    text = capsys.readouterr().out
    arms = results["moons"]["arms"]
    assert list(arms) == ["mpl_weight=0", "raw", "raw shuffled", "raw constant", "per_lr",
                          "per_lr shuffled", "per_lr constant", "normalised",
                          "normalised shuffled", "normalised constant"]
    assert results["moons"]["seeds"] == 2
    # Paired: each arm's difference is taken seed by seed against mpl_weight=0.
    diffs = [a - b for a, b in zip(arms["per_lr"]["runs"], arms["mpl_weight=0"]["runs"])]
    assert arms["per_lr"]["minus_zero"][0] == pytest.approx(sum(diffs) / 2)
    assert arms["mpl_weight=0"]["ratio"] == 0 and arms["normalised"]["ratio"] > 0
    # A scale's controls run at the weight calibrated for it.
    cal = results["moons"]["calibration"]
    for scale in ("raw", "per_lr", "normalised"):
        for arm in (scale, f"{scale} shuffled", f"{scale} constant"):
            assert arms[arm]["mpl_weight"] == cal[scale]["mpl_weight"]
    assert "| arm | test acc | minus mpl_weight=0 [95% CI] | train/mpl_grad_ratio |" in text
    assert "moons: calibration per_lr: w=" in text and "moons: variants adding" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("run") == 10 * 2 and kinds.count("chosen") == 3
    assert kinds.count("calibration") == 3  # quick: one round, one seed per scale
    again = bench.main(["--quick", "--datasets", "moons", "--out", str(out)])
    assert len(out.read_text().splitlines()) == len(rows)  # nothing trained again
    assert again["moons"]["arms"]["raw"]["runs"] == arms["raw"]["runs"]
    from_file = bench.main(["--from", str(out), "--datasets", "moons"])
    assert from_file["moons"]["seeds"] == 2
    # A tenth of each calibrated weight: nine more arms, the others not trained again.
    more = bench.main(["--quick", "--datasets", "moons", "--out", str(out),
                       "--fractions", "1,0.1"])
    assert len(out.read_text().splitlines()) == len(rows) + 9 * 2
    tenth = more["moons"]["arms"]["normalised x0.1 constant"]
    assert tenth["mpl_weight"] == pytest.approx(cal["normalised"]["mpl_weight"] / 10, rel=1e-2)
    assert "normalised x0.1 minus shuffled" in more["moons"]["contrasts"]


def test_winners_needs_the_meta_term_up_one_point_and_both_controls_not():
    bench = _bench()
    arm = lambda d: {"minus_zero": d}  # noqa: E731
    up, flat = (0.02, 0.005, 0.035), (0.002, -0.01, 0.014)
    s = {"arms": {"raw": arm(up), "raw shuffled": arm(flat), "raw constant": arm(flat),
                  "per_lr": arm(up), "per_lr shuffled": arm(up), "per_lr constant": arm(flat),
                  "normalised": arm((0.02, -0.001, 0.04)),
                  "normalised shuffled": arm(flat), "normalised constant": arm(flat)}}
    assert bench.winners(s) == ["raw"]

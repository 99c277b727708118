"""benchmarks/accuracy.py: the CI-sized `--quick` ablation runs and prints the table with
paired 95% confidence intervals; the interval is the paired t interval."""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmark_scripts import load


def _bench():
    return load('accuracy')


def test_paired_ci_is_the_paired_t_interval():
    diffs = [0.02, -0.01, 0.03, 0.00, 0.015, 0.025, -0.005, 0.01, 0.02, 0.005]
    m, lo, hi = _bench().paired_ci(diffs)
    mean = sum(diffs) / 10
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 9)
    half = 2.2621571628 * sd / math.sqrt(10)  # t_{0.975, 9}
    assert (m, lo, hi) == pytest.approx((mean, mean - half, mean + half), rel=1e-9)


def test_quick_ablation_prints_paired_table(tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    results = _bench().main(["--quick", "--out", str(out)])
    text = capsys.readouterr().out
    assert set(results) == {"digits/default", "digits/author", "moons/default", "moons/author"}
    rows = results["digits/author"]["rows"]
    assert list(rows) == ["supervised", "uda", "smpl mpl_weight=0", "smpl", "mpl"]
    # Paired: each row's difference is taken seed by seed against uda.
    diffs = [a - b for a, b in zip(rows["smpl"]["runs"], rows["uda"]["runs"])]
    assert rows["smpl"]["diff_vs_uda"][0] == pytest.approx(sum(diffs) / len(diffs))
    assert "minus uda, 95% CI (paired t)" in text and "| smpl mpl_weight=0 |" in text
    assert "meta term (smpl minus smpl mpl_weight=0, paired)" in text
    assert rows["smpl"]["train/mpl_grad_ratio"] > 0
    assert rows["smpl mpl_weight=0"]["train/mpl_grad_ratio"] == 0
    assert len(out.read_text().splitlines()) == 4 * 5 * 2  # every run saved
    assert json.loads(text.strip().splitlines()[-1]).keys() == results.keys()
    again = _bench().main(["--from", str(out)])  # the tables from the saved runs
    assert again["digits/author"]["rows"]["smpl"]["mean"] == rows["smpl"]["mean"]

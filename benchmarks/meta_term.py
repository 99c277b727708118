"""Meta-term study: does a scaled feedback make SMPL's meta term matter, against controls?

    python benchmarks/meta_term.py [--datasets moons,digits] [--seeds 10]
                                   [--out benchmarks/meta_term_results.jsonl] [--quick]
    python benchmarks/meta_term.py --from benchmarks/meta_term_results.jsonl   # tables only
    python benchmarks/meta_term.py --importance /tmp/meta-sweep/NAME            # fANOVA

Data and budget are the ablation's (benchmarks/accuracy.py; benchmarks/README.md, "Accuracy"):
digits with 50 labels, 200 steps, batch 16, mu 7; two moons with 6 labels, 400 steps,
batch 8, mu 7; the default config otherwise. Reports come every 20 (digits) or 40 (moons)
steps instead of 100, so `train/mpl_grad_ratio` is measured 10 times a run; evaluating and
measuring change no training (tests/smpl_core), so the test accuracies are those of the
ablation's settings.

A run's gradient ratio is the median of its reports' `train/mpl_grad_ratio` (the mean is
ruled by single steps where grad L_uda nearly vanishes: ratios of 1e11 were measured).

1. Calibration, per dataset and `feedback_scale` (raw, per_lr, normalised), on seeds 100
   and 101 (not the study's): `mpl_weight` starts from a guess and is rescaled by
   TARGET / measured ratio (geometric mean of the two seeds' run ratios) until the ratio
   lies in ACCEPT (inside [0.1, 1], around TARGET = 0.3), at most ROUNDS times. A round
   where a run diverged, or where the meta term's gradient vanished (ratio exactly 0 with
   mpl_weight > 0: the meta term drove the predictions to saturation, the model collapsed
   to one class) divides the weight by 10 instead. The weight kept is the round closest to
   TARGET among the others. Every calibration run is recorded.
2. The arms, seeds 0-9, paired (each seed fixes the labelled split and the
   initialisation): `mpl_weight=0` (SMPL's first update, no meta term), and per scale at
   its calibrated weight: the meta term (`feedback_control: none`), `shuffled` (f of a
   random earlier step) and `constant` (f = its running mean).

Every finished run is one JSON line appended to `--out`; a rerun skips what is there (the
calibration replays from its recorded runs). Tables: test accuracy (mean +- std), minus
`mpl_weight=0` with a 95% paired-t CI, the measured gradient ratio and the weight; then,
per scale, the meta term minus each control, and the verdict. An arm's ratio is the median
over its seeds of the runs' ratios.
`--quick` (2 seeds, 10 steps, one calibration round) checks the script, not the science.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from accuracy import DATASETS, paired_ci  # benchmarks/accuracy.py, beside this script

from smpl_core.config import SMPLConfig
from smpl_core.loop import fit, test_accuracy

ROOT = Path(__file__).resolve().parents[1]

SCALES = ("raw", "per_lr", "normalised")
CONTROLS = ("none", "shuffled", "constant")
ZERO = "mpl_weight=0"
REPORTS = {"digits": 20, "moons": 40}  # eval_every: 10 ratio measurements a run
# First guesses of mpl_weight for a ratio of ~0.3, from the ablation's h statistics
# (benchmarks/README.md: ratio 5.7e-3 on digits, 9.4e-5 on moons at weight 1 with the raw
# h; h / lr_k is ~ 1 / lr_k ~ 20-40x the raw h; normalised f ~ 1, ~ 100x the raw h).
GUESS = {("digits", "raw"): 50.0, ("digits", "per_lr"): 2.0, ("digits", "normalised"): 0.5,
         ("moons", "raw"): 3000.0, ("moons", "per_lr"): 100.0, ("moons", "normalised"): 20.0}
TARGET, LOW, HIGH, ROUNDS = 0.3, 0.1, 1.0, 6
ACCEPT = (0.12, 0.8)
CAL_SEEDS = (100, 101)
QUICK = {"steps": 10, "batch_size": 8, "mu": 2, "val_size": 50}
QUICK_REPORTS = 5
# Where present, arms at a fraction of the calibrated weight too (`--fractions 1,0.1`: the
# meta term, and its controls, at a tenth of the size): tables list them in this order.
FRACTIONS = (1.0, 0.1)


def variant(scale: str, fraction: float = 1.0) -> str:
    """A scale at its calibrated weight ("raw") or at a fraction of it ("raw x0.1")."""
    return scale if fraction == 1 else f"{scale} x{fraction:g}"


def arm_name(scale: str | None, control: str | None, fraction: float = 1.0) -> str:
    if scale is None:
        return ZERO
    v = variant(scale, fraction)
    return v if control == "none" else f"{v} {control}"


def arms(fractions=FRACTIONS) -> list[tuple[str, str | None, str | None, float]]:
    out = [(ZERO, None, None, 0.0)]
    for f in fractions:
        for s in SCALES:
            out += [(arm_name(s, c, f), s, c, f) for c in CONTROLS]
    return out


def variants(fractions=FRACTIONS) -> list[str]:
    return [variant(s, f) for f in fractions for s in SCALES]


class Store:
    """The results file: one JSON line per finished run, looked up by key."""

    def __init__(self, path: Path | None):
        self.path, self.rows = path, []
        if path is not None and path.exists():
            self.rows = [json.loads(line) for line in path.read_text().splitlines() if line]

    @staticmethod
    def key(r: dict) -> tuple:
        return (r["kind"], r["dataset"], r["arm"], r["seed"], round(r["mpl_weight"], 12),
                r.get("round"), r.get("quick", False))

    def get(self, **k) -> dict | None:
        want = self.key(k)
        for r in self.rows:
            if self.key(r) == want:
                return r
        return None

    def add(self, r: dict) -> None:
        self.rows.append(r)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(r) + "\n")


def config(ds: str, scale: str | None, control: str | None, weight: float, seed: int,
           quick: bool) -> SMPLConfig:
    base = {**DATASETS[ds], "eval_every": QUICK_REPORTS if quick else REPORTS[ds],
            **(QUICK if quick else {}), "device": "cpu", "method": "smpl", "seed": seed}
    if scale is None:
        return SMPLConfig.from_dict({**base, "mpl_weight": 0.0})
    return SMPLConfig.from_dict({**base, "mpl_weight": weight, "feedback_scale": scale,
                                 "feedback_control": control})


def run_one(cfg: SMPLConfig) -> dict:
    t0 = time.perf_counter()
    res = fit(cfg)
    hist = [m for m in res.history if "train/mpl_grad_ratio" in m]
    ratios = [m["train/mpl_grad_ratio"] for m in hist]
    return {"test_accuracy": test_accuracy(res), "seconds": time.perf_counter() - t0,
            "diverged": bool(res.metrics.get("diverged", False)),
            "val_accuracy": res.metrics.get("val_accuracy"),
            "ratio": statistics.median(ratios) if ratios else 0.0, "ratios": ratios,
            "ratio_mean": statistics.fmean(ratios) if ratios else 0.0,
            "feedback_abs": (statistics.fmean(m["train/feedback_abs"] for m in hist)
                             if hist else 0.0)}


def record(store: Store, kind: str, ds: str, arm: str, scale, control, weight: float,
           seed: int, quick: bool, rnd: int | None = None) -> dict:
    key = dict(kind=kind, dataset=ds, arm=arm, seed=seed, mpl_weight=weight, round=rnd,
               quick=quick)
    hit = store.get(**key)
    if hit is not None:
        return hit
    r = {**key, "scale": scale, "control": control,
         **run_one(config(ds, scale, control, weight, seed, quick))}
    store.add(r)
    print(f"{kind} {ds} {arm:<22} w={weight:<10.4g} seed {seed}: test "
          f"{r['test_accuracy']:.4f} ratio {r['ratio']:.3g} ({r['seconds']:.1f} s)",
          file=sys.stderr, flush=True)
    return r


def calibrate(store: Store, ds: str, scale: str, quick: bool) -> dict:
    """The weight whose mean gradient ratio lies in [LOW, HIGH], near TARGET."""
    w, rounds = GUESS[(ds, scale)], []
    seeds = CAL_SEEDS[:1] if quick else CAL_SEEDS
    for rnd in range(1 if quick else ROUNDS):
        runs = [record(store, "calibration", ds, scale, scale, "none", w, s, quick, rnd)
                for s in seeds]
        ratios = [r["ratio"] for r in runs]
        diverged = any(r["diverged"] for r in runs) or min(ratios) <= 0
        ratio = math.inf if diverged else math.exp(statistics.fmean(map(math.log, ratios)))
        rounds.append({"round": rnd, "mpl_weight": w, "ratio": ratio, "diverged": diverged,
                       "test_accuracy": statistics.fmean(r["test_accuracy"] for r in runs)})
        if ACCEPT[0] <= ratio <= ACCEPT[1]:
            break
        w = float(f"{w / 10 if diverged else w * TARGET / ratio:.3g}")
    fine = [r for r in rounds if not r["diverged"]]
    ok = [r for r in fine if LOW <= r["ratio"] <= HIGH]
    pick = ok or fine
    best = (min(pick, key=lambda r: abs(math.log(max(r["ratio"], 1e-300) / TARGET)))
            if pick else min(rounds, key=lambda r: r["mpl_weight"]))
    return {"mpl_weight": best["mpl_weight"], "ratio": best["ratio"], "rounds": rounds,
            "in_range": bool(ok)}


def summarise(ds: str, rows: list[dict], weights: dict) -> dict:
    """Per arm: test accuracy over the paired seeds of its fraction's group (mpl_weight=0 and
    every arm of that fraction that ran: a group is complete seed by seed), minus
    mpl_weight=0 and, per variant, minus each control, with 95% paired-t CIs."""
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        if r["kind"] == "run" and r["dataset"] == ds:
            by.setdefault(r["arm"], {})[r["seed"]] = r
    if ZERO not in by:
        return {"seeds": 0, "arms": {}, "contrasts": {}, "calibration": weights}
    groups = {}  # fraction -> its arms present and their paired seeds
    for name, _, _, frac in arms():
        if name in by and name != ZERO:
            groups.setdefault(frac, []).append(name)
    seeds_of = {f: sorted(set(by[ZERO]).intersection(*(set(by[a]) for a in names)))
                for f, names in groups.items()}
    main_seeds = seeds_of.get(1.0) or sorted(by[ZERO])
    out, contrasts = {}, {}

    def stats(a, seeds):
        rs = [by[a][k] for k in seeds]
        accs = [r["test_accuracy"] for r in rs]
        s = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs), "runs": accs,
             "seeds": len(seeds), "ratio": statistics.median(r["ratio"] for r in rs),
             "mpl_weight": rs[0]["mpl_weight"], "diverged": sum(r["diverged"] for r in rs),
             "seconds": statistics.fmean(r["seconds"] for r in rs)}
        if a != ZERO and len(seeds) >= 2:
            s["minus_zero"] = paired_ci([x - by[ZERO][k]["test_accuracy"]
                                         for x, k in zip(accs, seeds)])
        return s

    if main_seeds:
        out[ZERO] = stats(ZERO, main_seeds)
    for f, names in groups.items():
        seeds = seeds_of[f]
        if not seeds:
            continue
        for a in names:
            out[a] = stats(a, seeds)
        if len(seeds) < 2:
            continue
        for s in SCALES:
            v = variant(s, f)
            for c in ("shuffled", "constant"):
                if v in names and f"{v} {c}" in names:
                    contrasts[f"{v} minus {c}"] = paired_ci(
                        [by[v][k]["test_accuracy"] - by[f"{v} {c}"][k]["test_accuracy"]
                         for k in seeds])
    return {"seeds": len(main_seeds), "arms": out, "contrasts": contrasts,
            "calibration": weights}


def winners(summary: dict) -> list[str]:
    """Variants whose meta term adds >= +1 point over mpl_weight=0 with its CI above 0,
    while neither control does."""
    out = []
    arms_ = summary["arms"]
    for v in variants():
        d = arms_.get(v, {}).get("minus_zero")
        if d is None or not (d[0] >= 0.01 and d[1] > 0):
            continue
        ctrl = [arms_.get(f"{v} {c}", {}).get("minus_zero") for c in ("shuffled", "constant")]
        if all(c is not None and not (c[0] >= 0.01 and c[1] > 0) for c in ctrl):
            out.append(v)
    return out


def _ci(d) -> str:
    return f"{100 * d[0]:+.2f} [{100 * d[1]:+.2f}, {100 * d[2]:+.2f}]"


def print_tables(ds: str, summary: dict) -> None:
    print(f"\n{ds}, {summary['seeds']} paired seeds (test accuracy, %)")
    print("| arm | test acc | minus mpl_weight=0 [95% CI] | train/mpl_grad_ratio | "
          "mpl_weight | s per run |")
    print("|---|---|---|---|---|---|")
    for a, s in summary["arms"].items():
        d = s.get("minus_zero")
        div = f" ({s['diverged']} diverged)" if s["diverged"] else ""
        if s["seeds"] != summary["seeds"]:
            div += f" ({s['seeds']} seeds)"
        print(f"| {a} | {100 * s['mean']:.2f} +- {100 * s['std']:.2f}{div} | "
              f"{_ci(d) if d else '-'} | {s['ratio']:.3g} | {s['mpl_weight']:.4g} | "
              f"{s['seconds']:.1f} |")
    for name, d in summary.get("contrasts", {}).items():
        print(f"{ds}: {name}: {_ci(d)} points")
    cal = summary.get("calibration") or {}
    for scale, c in cal.items():
        steps = ", ".join(f"w={r['mpl_weight']:.4g} -> " + (
            "diverged/collapsed" if r.get("diverged") else f"{r['ratio']:.3g}")
            for r in c["rounds"])
        print(f"{ds}: calibration {scale}: {steps}; chosen w={c['mpl_weight']:.4g}"
              f"{'' if c['in_range'] else ' (ratio outside [0.1, 1])'}")
    w = winners(summary)
    print(f"{ds}: variants adding >= +1 point over mpl_weight=0 with CI above 0, controls not: "
          f"{', '.join(w) if w else 'none'}")


def calibrations_from(rows: list[dict], ds: str) -> dict:
    """The chosen weights, as recorded by the study (kind 'chosen')."""
    return {r["arm"]: r["calibration"] for r in rows
            if r["kind"] == "chosen" and r["dataset"] == ds}


def report(rows: list[dict], datasets: list[str]) -> dict:
    results = {}
    for ds in datasets:
        results[ds] = summarise(ds, rows, calibrations_from(rows, ds))
        print_tables(ds, results[ds])
    print(json.dumps(results))
    return results


def importance(sweep_dir: str) -> dict:
    """fANOVA importance of every searched parameter from the sweep's Optuna study."""
    import optuna

    db = Path(sweep_dir) / "optuna.db"
    url = f"sqlite:///{db}"
    names = optuna.study.get_all_study_names(storage=url)
    study = optuna.load_study(study_name=names[0], storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    out = {"trials": len(done), "best_value": study.best_value,
           "best_params": study.best_params, "importance": {}}
    for seed in range(3):  # fANOVA's forest is random: three seeds, to see its spread
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
        for k, v in imp.items():
            out["importance"].setdefault(k, []).append(v)
    print(f"\n{len(done)} complete trials; best value {study.best_value:.4f}")
    print("| parameter | fANOVA importance (seeds 0, 1, 2) |")
    print("|---|---|")
    for k, v in sorted(out["importance"].items(), key=lambda kv: -statistics.fmean(kv[1])):
        print(f"| {k} | {', '.join(f'{x:.3f}' for x in v)} |")
    by_scale = {}
    for t in done:
        by_scale.setdefault(t.params.get("feedback_scale"), []).append(t.value)
    for s, vals in by_scale.items():
        print(f"feedback_scale={s}: {len(vals)} trials, val_accuracy mean "
              f"{statistics.fmean(vals):.4f}, best {max(vals):.4f}")
    out["by_scale"] = by_scale
    print(json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="moons,digits")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", help="results file (JSON lines); a rerun skips what it holds")
    ap.add_argument("--quick", action="store_true", help="CI-sized: 2 seeds, 10 steps")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--fractions", default="1",
                    help="run each scale (and its controls) at these fractions of its "
                         "calibrated weight, e.g. 1,0.1")
    ap.add_argument("--from", dest="from_file", metavar="JSONL",
                    help="print the tables of a results file, train nothing")
    ap.add_argument("--importance", metavar="SWEEP_DIR",
                    help="fANOVA importance from a sweep folder's optuna.db, train nothing")
    args = ap.parse_args(argv)
    datasets = args.datasets.split(",")
    if args.importance:
        return importance(args.importance)
    if args.from_file:
        return report(Store(Path(args.from_file)).rows, datasets)
    torch.set_num_threads(args.threads)
    store = Store(Path(args.out) if args.out else None)
    seeds = range(2 if args.quick else args.seeds)
    fracs = tuple(float(f) for f in args.fractions.split(","))
    weights = {}
    for ds in datasets:  # calibration first: cheap, and it fixes every arm's weight
        for scale in SCALES:
            weights[(ds, scale)] = cal = calibrate(store, ds, scale, args.quick)
            chosen = dict(kind="chosen", dataset=ds, arm=scale, seed=-1,
                          mpl_weight=cal["mpl_weight"], quick=args.quick)
            if store.get(**chosen, round=None) is None:
                store.add({**chosen, "round": None, "calibration": cal})
    for ds in datasets:
        for seed in seeds:  # seed by seed: a partial study is paired over every arm
            for arm, scale, control, frac in arms(fracs):
                w = 0.0 if scale is None else float(
                    f"{frac * weights[(ds, scale)]['mpl_weight']:.3g}")
                record(store, "run", ds, arm, scale, control, w, seed, args.quick)
    rows = [r for r in store.rows if r.get("quick", False) == args.quick]
    return report(rows, datasets)


if __name__ == "__main__":
    main()

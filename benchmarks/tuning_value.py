"""What tuning buys: the default config against a sweep's export, with and without finalists,
and against a sweep given the finalists' compute as more search trials.

    python benchmarks/tuning_value.py [--seeds 5] [--trials 8] [--finalists 2]
                                      [--finalist-seeds 2] [--holdout-seeds 3]
                                      [--out benchmarks/tuning_value_results.jsonl] [--quick]
    python benchmarks/tuning_value.py --report benchmarks/tuning_value_results.jsonl

Every sweep is a real `tune-smpl tune` (in this process, on one Ray started here) with the
`make tune` settings: digits with 50 labels, the default config, the `smpl` space, TPE and
ASHA, no time budget (compute is counted as steps trained, which no machine load changes).
Sweep seed k seeds the sampler; the data seed stays the config's, so the arms of one seed
are paired. Arms:

  a  the default config (no sweep)
  b  the export of a sweep of `--trials` trials without finalists
  c  the export of the same sweep with its finalist stage (`--finalists K --finalist-seeds
     S`); b is that sweep's search best (what it exports without the stage), so c - b is
     the stage's own effect on the same search
  d  the export of a sweep of `--trials` + K*S trials: the finalists' compute spent on
     search instead

Every exported config and the default are retrained with `tune-smpl train --eval-test` on
the same `--holdout-seeds` seeds (500, 501, ...: used by no sweep and no finalist run);
the test split is never seen by a sweep. One JSON line per finished unit (the default's
retraining, a c sweep, a d sweep) is appended to `--out`; a rerun skips what is there. The
report: test accuracy per arm, paired differences b-a, c-a, c-b, c-d with 95% paired-t
intervals over sweep seeds, the optimism (promised validation score minus delivered test
accuracy) of b and c, and the steps each arm trained; a figure beside the results file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOLDOUT_SEED = 500  # retraining seeds 500, 501, ...: no sweep or finalist run uses them
QUICK = ["steps=20", "eval_every=10", "batch_size=8", "mu=2", "val_size=50"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="sweep seeds 0..N-1 (default 5)")
    p.add_argument("--trials", type=int, default=8, help="search trials (default 8)")
    p.add_argument("--finalists", type=int, default=2)
    p.add_argument("--finalist-seeds", type=int, default=2)
    p.add_argument("--holdout-seeds", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of every config (the sweeps' base and the default)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "tuning_value_results.jsonl"))
    p.add_argument("--report", metavar="JSONL", help="only print the table of a results file")
    p.add_argument("--quick", action="store_true", help="CI-sized: checks the script only")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.finalists, args.finalist_seeds = 1, 2, 1, 1
        args.holdout_seeds, args.set = 1, QUICK + args.set
    return args


def cli(argv: list[str]) -> tuple[int, str]:
    """`tune-smpl ARGV` in this process; (exit code, stdout)."""
    from tune_smpl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def _sets(args) -> list[str]:
    return [a for s in ["dataset=digits", "num_labeled=50", *args.set] for a in ("--set", s)]


def retrain(args, config: Path | None) -> dict:
    """Test accuracy of `config` (None: the default) on the hold-out seeds."""
    argv = ["train", "--eval-test", "--seeds", str(args.holdout_seeds), "--json",
            *_sets(args), "--set", f"seed={HOLDOUT_SEED}"]
    if config is not None:
        argv[1:1] = ["--config", str(config)]
    code, out = cli(argv)
    summary = json.loads(out.strip().splitlines()[-1])
    runs = summary["runs"]
    return {"test": [r["test_accuracy"] for r in runs], "val": [r["val_accuracy"] for r in runs],
            "steps": sum(int(r["final"].get("step", 0)) for r in runs)}


def sweep(args, storage: Path, name: str, seed: int, trials: int, finalists: int) -> dict:
    """One sweep; what it searched, what it exports, the steps it trained."""
    from smpl_core.config import SMPLConfig
    from tune_smpl.sweep import finalists as F
    from tune_smpl.sweep import outcome as O
    from tune_smpl.sweep.record import open_sweep

    shutil.rmtree(storage / name, ignore_errors=True)  # a half-run sweep of a stopped study
    argv = ["tune", "--name", name, "--storage-path", str(storage), "--tracking-uri",
            f"sqlite:///{storage}/mlflow.db", "--num-samples", str(trials), "--seed",
            str(seed), "--gpus-per-trial", "0", "--finalists", str(finalists),
            "--finalist-seeds", str(args.finalist_seeds), *_sets(args)]
    t0 = time.time()
    code, out = cli(argv)
    if code != 0:
        raise RuntimeError(f"sweep {name} exited {code}:\n{out[-3000:]}")
    record = open_sweep(str(storage), name)
    meta, search, runs = record.meta(), record.trials(), record.finalists()
    steps = int(meta["base"]["steps"])
    top = O.best(search)
    row = {"name": name, "seed": seed, "wall_s": round(time.time() - t0, 1),
           "search_steps": sum(int(t.last.get("step", 0) or 0) for t in search),
           "finalist_steps": sum(int(t.last.get("step", 0) or 0) for t in runs),
           "search_best": top.key, "search_promised": O.score(top.reports)[0]}
    pick = F.pick(search, runs, meta.get("finalists"), steps)
    if pick.measure == F.MEASURE:
        row.update(winner=pick.trial.key, winner_promised=pick.value,
                   winner_search_score=O.score(pick.trial.reports)[0],
                   finalists=[f.as_dict() for f in pick.ranked])
    # What `tune-smpl export` writes (the sweep's pick), and the search's best: the export
    # of the same sweep without its finalist stage.
    exported = storage / f"{name}-export.yaml"
    code, out = cli(["export", name, "--storage-path", str(storage), "-o", str(exported)])
    if code != 0:
        raise RuntimeError(f"export of {name} exited {code}:\n{out[-2000:]}")
    row["export"] = retrain(args, exported)
    if pick.measure == F.MEASURE and pick.trial.key != top.key:
        searched = storage / f"{name}-search.yaml"
        searched.write_text(SMPLConfig.from_dict(top.config).to_yaml(header=f"{name} {top.key}"))
        row["search"] = retrain(args, searched)
    else:  # the finalists kept the search's best (or there were none): the same file
        row["search"] = row["export"]
    return row


# --- the study --------------------------------------------------------------------------
def units(args) -> list[tuple[str, dict]]:
    k, s = args.finalists, args.finalist_seeds
    out = [("default", {})]
    for seed in range(args.seeds):
        out += [(f"c-s{seed}", {"seed": seed, "trials": args.trials, "finalists": k}),
                (f"d-s{seed}", {"seed": seed, "trials": args.trials + k * s, "finalists": 0})]
    return out


def run_study(args) -> list[dict]:
    from tune_smpl.sweep.cluster import connect

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = _read(out)
    done = {r["name"] for r in rows}
    storage = Path(tempfile.mkdtemp(prefix="tuning_value_"))
    os.environ.setdefault("TUNE_SMPL_RAY_TMP", os.path.join(tempfile.gettempdir(),
                                                            f"ray_tv_{os.getpid()}"))
    started = False
    try:
        for name, spec in units(args):
            if name in done:
                continue
            if name == "default":
                row = {"name": name, **retrain(args, None)}
            else:
                if not started:  # one Ray for every sweep
                    connect(None, num_cpus=2, num_gpus=0)
                    started = True
                row = sweep(args, storage, name, spec["seed"], spec["trials"],
                            spec["finalists"])
            row.update(when=time.strftime("%Y-%m-%d %H:%M"), quick=args.quick,
                       settings={"trials": args.trials, "finalists": args.finalists,
                                 "finalist_seeds": args.finalist_seeds,
                                 "holdout_seeds": args.holdout_seeds, "set": args.set})
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            rows.append(row)
            print(f"{name}: done ({row.get('wall_s', '-')} s)", file=sys.stderr, flush=True)
    finally:
        if started:
            import ray

            ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    return rows


def _read(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []


# --- the report -------------------------------------------------------------------------
def paired_ci(diffs: list[float]) -> tuple[float, float, float]:
    from tune_smpl.sweep.finalists import mean_ci

    mean, _, lo, hi = mean_ci(diffs)
    return mean, lo, hi


def arms(rows: list[dict]) -> dict:
    """Per sweep seed that has both sweeps: each arm's mean test accuracy over the hold-out
    seeds, its promise and its steps trained (the default's is the same for every seed)."""
    default = next((r for r in rows if r["name"] == "default"), None)
    c = {r["seed"]: r for r in rows if r["name"].startswith("c-")}
    d = {r["seed"]: r for r in rows if r["name"].startswith("d-")}
    out = {}
    for seed in sorted(set(c) & set(d)):
        rc, rd = c[seed], d[seed]
        out[seed] = {
            "a": (statistics.fmean(default["test"]), None, 0) if default else None,
            "b": (statistics.fmean(rc["search"]["test"]), rc["search_promised"],
                  rc["search_steps"]),
            "c": (statistics.fmean(rc["export"]["test"]), rc.get("winner_promised",
                                                         rc["search_promised"]),
                  rc["search_steps"] + rc["finalist_steps"]),
            "d": (statistics.fmean(rd["export"]["test"]), rd["search_promised"],
                  rd["search_steps"]),
            "same_pick": rc.get("winner", rc["search_best"]) == rc["search_best"]}
    return out


def report(rows: list[dict], figure: Path | None = None) -> str:
    per = arms(rows)
    seeds = [s for s in per if per[s]["a"] is not None]
    if not seeds:
        return "no sweep seed has both its sweeps and the default's retraining yet\n"
    names = {"a": "default config", "b": "sweep, no finalists", "c": "sweep + finalists",
             "d": "sweep, finalists' compute as search trials"}
    lines = [f"{len(seeds)} paired sweep seeds ({', '.join(map(str, seeds))}); test accuracy "
             "= mean over the hold-out seeds", "",
             "| arm | test acc (mean +- sd over sweeps) | promised val acc | steps trained |",
             "|---|---|---|---|"]
    for arm in "abcd":
        accs = [per[s][arm][0] for s in seeds]
        prom = [per[s][arm][1] for s in seeds if per[s][arm][1] is not None]
        steps = [per[s][arm][2] for s in seeds]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {arm}: {names[arm]} | {100 * statistics.fmean(accs):.2f} +- "
                     f"{100 * sd:.2f} | "
                     + (f"{100 * statistics.fmean(prom):.2f}" if prom else "-")
                     + f" | {statistics.fmean(steps):.0f} |")
    lines += ["", "| paired difference (points) | mean [95% CI] |", "|---|---|"]
    for x, y in (("b", "a"), ("c", "a"), ("c", "b"), ("c", "d")):
        diffs = [100 * (per[s][x][0] - per[s][y][0]) for s in seeds]
        lines.append(f"| {x} - {y} | " + (
            "{:+.2f} [{:+.2f}, {:+.2f}]".format(*paired_ci(diffs)) if len(diffs) > 1
            else f"{diffs[0]:+.2f} (one seed)") + " |")
    lines += ["", "| optimism: promised val minus delivered test (points) | mean [95% CI] |",
              "|---|---|"]
    for arm in "bc":
        opt = [100 * (per[s][arm][1] - per[s][arm][0]) for s in seeds]
        lines.append(f"| {arm}: {names[arm]} | " + (
            "{:+.2f} [{:+.2f}, {:+.2f}]".format(*paired_ci(opt)) if len(opt) > 1
            else f"{opt[0]:+.2f} (one seed)") + " |")
    same = sum(per[s]["same_pick"] for s in seeds)
    lines += ["", f"The finalists kept the search's best in {same} of {len(seeds)} sweeps."]
    if figure is not None:
        _figure(per, seeds, names, figure)
        lines.append(f"Figure: {figure.name}")
    return "\n".join(lines) + "\n"


def _figure(per: dict, seeds: list, names: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    ax, bx = fig.subplots(1, 2)
    for s in seeds:
        ax.plot(range(4), [100 * per[s][a][0] for a in "abcd"], "-o", color="#999", ms=3,
                lw=0.8)
    means = [100 * statistics.fmean(per[s][a][0] for s in seeds) for a in "abcd"]
    ax.plot(range(4), means, "-D", color="#1f77b4", lw=2, label="mean over sweeps")
    ax.set_xticks(range(4), list("abcd"))
    ax.set(ylabel="test accuracy (%)", title="each sweep seed (grey) and the mean")
    ax.legend(fontsize=7)
    for i, arm in enumerate("bc"):
        prom = [100 * per[s][arm][1] for s in seeds]
        got = [100 * per[s][arm][0] for s in seeds]
        bx.scatter([i - 0.1] * len(prom), prom, marker="D", facecolors="none",
                   edgecolors="#d62728", label="promised val" if i == 0 else None)
        bx.scatter([i + 0.1] * len(got), got, color="#1f77b4",
                   label="delivered test" if i == 0 else None)
    bx.set_xticks([0, 1], ["b: no finalists", "c: finalists"])
    bx.set(ylabel="accuracy (%)", title="what the sweep promised, what retraining gave")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        rows = _read(Path(args.report))
        print(report(rows, Path(args.report).with_suffix(".png")), end="")
        return 0
    rows = run_study(args)
    out = Path(args.out)
    print(report(rows, out.with_suffix(".png")), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

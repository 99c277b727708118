"""Chaos benchmark (issue 25): a real sweep, one fault at a seeded random instant, then the
invariants.

    python benchmarks/chaos.py [--rounds 140] [--faults sigint,kill_driver,...] [--seed 0]
                               [--quick] [--baselines 3] [--out FILE] [--report FILE]

Each round runs a short sweep as a user runs it (`tune-smpl tune` in a subprocess: moons,
2 trial slots) and injects one fault: `sigint` (SIGINT to the driver), `sigint2` (a second
one 0.1-2 s later), `kill_driver` (SIGKILL of the driver's process group), `kill_worker`
(SIGKILL of a running trial's worker process, its pid from the trial's reports),
`kill_node` (SIGKILL of the worker node's process group of a two-node `ray start` cluster
on 127.0.0.1: under a running trial, or in half the rounds just after a trial ended there,
as the next one starts), `tracking_down` (the `mlflow server` the sweep logs to killed for a while,
then restarted on the same port and store), `storage_down` (the record on a local moto S3
behind a TCP proxy that stops forwarding for a while). Then `--resume` where the sweep
stopped (the command again where it stopped before its record existed; `tune-smpl sync`
where MLflow was away at the end), and the invariants (chaos_invariants.py) are checked.
Baseline rounds (no fault) per setup give the sweep's wall time without the fault.

The round seed decides the fault kind (balanced blocks over `--faults`), the instant and
the outage. One JSON line per round goes to `--out` (default
benchmarks/chaos_results.jsonl); a rerun skips the rounds that are there. `--report FILE`
prints the table of a results file: faults injected and invariant violations per kind,
and the stall (the round's command wall time against the baselines' median).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import statistics
import sys
import time
from pathlib import Path

FAULTS = ("sigint", "sigint2", "kill_driver", "kill_worker", "kill_node", "tracking_down",
          "storage_down")
SETUP = {"sigint": "local", "sigint2": "local", "kill_driver": "local",
         "kill_worker": "local", "kill_node": "cluster", "tracking_down": "http",
         "storage_down": "s3"}
# The sweep and the fault windows (seconds): --quick for a test, short outages.
MODES = {
    False: {"trials": 6, "sets": ["steps=900", "eval_every=100"], "span_start": 45.0,
            "reports": 24, "outage": (5.0, 120.0), "timeout": 900.0},
    True: {"trials": 4, "sets": ["steps=200", "eval_every=50"], "span_start": 30.0,
           "reports": 8, "outage": (2.0, 8.0), "timeout": 400.0},
}
DEFAULT_OUT = Path(__file__).with_name("chaos_results.jsonl")


def plan(seed: int, rounds: int, faults: list[str], quick: bool) -> list[dict]:
    """The rounds of `seed`: the kind from a seeded permutation of `faults` per block of
    len(faults) rounds (every kind as often as the others), the rest from the round seed."""
    m, out = MODES[quick], []
    for i in range(rounds):
        block = random.Random(f"chaos-{seed}-block-{i // len(faults)}").sample(faults,
                                                                             len(faults))
        kind, rseed = block[i % len(faults)], seed * 1_000_003 + i
        rng = random.Random(rseed)
        # The instant: seconds after the command started (its start-up, Ray's, the record
        # claimed), or just after the R-th report of the sweep (R = 0: its first trial
        # record), which lands in the same part of the sweep however loaded the machine is.
        anchor = rng.choice(["start", "report"])
        if kind in ("kill_worker", "kill_node", "tracking_down", "storage_down"):
            anchor = "report"  # a fault of what a running sweep writes or runs on
        out.append({"round": i, "seed": rseed, "kind": kind, "anchor": anchor,
                    "offset_s": round(rng.uniform(0, m["span_start"]), 2),
                    # a kill needs a trial with two reports to go: early in the sweep
                    "reports": rng.randint(0, m["reports"] // (2 if kind.startswith("kill_")
                                                               else 1)),
                    "jitter_s": round(rng.uniform(0, 1.0), 2),
                    "gap_s": round(rng.uniform(0.1, 2.0), 2),
                    "outage_s": round(rng.uniform(*m["outage"]), 1),
                    "mode": rng.choice(["refuse", "blackhole"]), "pick": rng.random(),
                    # kill_node: half of the rounds as a trial starts on the node (just
                    # after one ended there), before it reported (drawn last: the rest of
                    # a round's spec is as it was before this was added)
                    "at_start": kind == "kill_node" and rng.random() < 0.5})
    return out


def baselines(seed: int, count: int, setups: list[str]) -> list[dict]:
    return [{"round": j, "seed": seed * 1_000_003 + 900_000 + j, "kind": "none",
             "setup": s, "anchor": None} for s in setups for j in range(count)]


def key(line: dict) -> tuple:
    return (line["quick"], line["seed"], line["kind"], line.get("setup"))


# --- the report ----------------------------------------------------------------------
def base_medians(lines: list[dict]) -> dict[tuple, float]:
    """(setup, quick) -> the median command wall time of its no-fault rounds."""
    walls: dict[tuple, list[float]] = {}
    for ln in lines:
        if ln["kind"] == "none":
            walls.setdefault((ln["setup"], ln["quick"]), []).append(ln["sweep_s"])
    return {k: statistics.median(v) for k, v in walls.items()}


def summarize(lines: list[dict]) -> list[dict]:
    """One row per kind: rounds, faults injected, rounds with a violation, violations by
    invariant, median round time, and the stall of the injected rounds against the
    baselines' median (seconds and ratio)."""
    base, rows = base_medians(lines), []
    kinds = [k for k in ("none", *FAULTS) if any(ln["kind"] == k for ln in lines)]
    for kind in kinds:
        mine = [ln for ln in lines if ln["kind"] == kind]
        hit = [ln for ln in mine if ln["injected"]]
        by: dict[str, int] = {}
        for ln in mine:
            for v in ln["violations"]:
                by[v["invariant"]] = by.get(v["invariant"], 0) + 1
        stalls = [(ln["sweep_s"] - base[(ln["setup"], ln["quick"])],
                   ln["sweep_s"] / base[(ln["setup"], ln["quick"])])
                  for ln in hit if (ln["setup"], ln["quick"]) in base]
        rows.append({"kind": kind, "rounds": len(mine), "injected": len(hit),
                     "bad_rounds": sum(bool(ln["violations"]) for ln in mine),
                     "violations": sum(by.values()), "by_invariant": by,
                     "round_s": statistics.median(ln["round_s"] for ln in mine),
                     "stall_s": statistics.median(s for s, _ in stalls) if stalls else None,
                     "stall_ratio": statistics.median(r for _, r in stalls) if stalls else None,
                     "stall_max_s": max(s for s, _ in stalls) if stalls else None})
    return rows


def table(lines: list[dict]) -> str:
    out = ["| fault | rounds | injected | rounds with a violation | violations (by invariant)"
           " | median round s | stall median s (ratio) | stall max s |",
           "|---|---|---|---|---|---|---|---|"]
    for r in summarize(lines):
        by = ", ".join(f"{k} {n}" for k, n in sorted(r["by_invariant"].items()))
        stall = ("-" if r["stall_s"] is None else
                 f"{r['stall_s']:+.1f} ({r['stall_ratio']:.2f}x)")
        mx = "-" if r["stall_max_s"] is None else f"{r['stall_max_s']:+.1f}"
        out.append(f"| {r['kind']} | {r['rounds']} | {r['injected']} | {r['bad_rounds']} | "
                   f"{r['violations']}{f' ({by})' if by else ''} | {r['round_s']:.0f} | "
                   f"{stall} | {mx} |")
    return "\n".join(out)


def violations_text(lines: list[dict]) -> str:
    return "\n".join(f"- {ln['kind']} seed {ln['seed']} ({ln.get('fault_at') or 'no fault'}):"
                     f" {v['invariant']}: {v['detail']}"
                     for ln in lines for v in ln["violations"])


def read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


# --- the run -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=140, help="fault rounds (default 140)")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--seed", type=int, default=None,
                   help="the run's seed (default 0); with --report, only that seed's rounds")
    p.add_argument("--quick", action="store_true", help="a small sweep and short outages")
    p.add_argument("--baselines", type=int, default=None,
                   help="no-fault rounds per setup (default 3, --quick 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--work", type=Path, default=None, help="round folders (default: a temp "
                   "dir, each round's folder deleted after its checks)")
    p.add_argument("--keep", action="store_true", help="keep each round's folder")
    p.add_argument("--report", type=Path, metavar="FILE", help="print FILE's table and exit")
    args = p.parse_args(argv)
    if args.report:
        lines = [ln for ln in read_lines(args.report)
                 if args.seed is None or ln["seed"] // 1_000_003 == args.seed]
        print(table(lines))
        print(violations_text(lines))
        return 0
    faults = [f for f in args.faults.split(",") if f]
    bad = sorted(set(faults) - set(FAULTS))
    if bad or not faults:
        p.error(f"--faults must name some of {', '.join(FAULTS)}, but got {args.faults!r}")
    seed = 0 if args.seed is None else args.seed
    n_base = args.baselines if args.baselines is not None else (1 if args.quick else 3)
    rounds = plan(seed, args.rounds, faults, args.quick)
    setups = sorted({SETUP[f] for f in faults})
    todo = baselines(seed, n_base, setups) + rounds
    done = {key(ln) for ln in read_lines(args.out)}
    todo = [r for r in todo if key({**r, "quick": args.quick,
                                    "setup": r.get("setup") or SETUP[r["kind"]]}) not in done]
    print(f"chaos: {len(todo)} round(s) to run, "
          f"{len(rounds) + n_base * len(setups) - len(todo)} already in {args.out}",
          flush=True)
    if todo:
        from chaos_rounds import Runner  # heavy imports only when rounds run

        # A `kill` of the benchmark ends it as Ctrl-C does: the Runner's servers and its
        # Ray cluster (process groups of their own) are stopped, not left running.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        with Runner(args.work, args.quick, args.keep) as runner:
            for spec in todo:
                line = runner.run(spec)
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(line, sort_keys=True) + "\n")
                print(f"round {line['kind']} ({line['setup']}) seed {line['seed']}: injected "
                      f"{line['injected']} ({line.get('fault_at')}), {line['round_s']:.0f} s, "
                      f"{len(line['violations'])} violation(s)"
                      + "".join(f"\n  {v['invariant']}: {v['detail']}"
                                for v in line["violations"]), flush=True)
    lines = [ln for ln in read_lines(args.out) if ln["quick"] == args.quick]
    print(table(lines))
    print(f"machine: {platform.node()} {platform.machine()}, {_cpus()} CPUs; "
          f"{time.strftime('%Y-%m-%d')}")
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())


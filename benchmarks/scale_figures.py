"""The figures of benchmarks/scale.py from what a run leaves behind: each trial's (start,
end) from the record, the driver's timed steps (events) and its CPU and memory samples.
Pure functions of those, so that the arithmetic is tested on hand-made runs.

An event is `[label, on_main_thread, t0, t1, cpu_s]`: wall clock (time.time()) at the
step's start and end and the CPU seconds of the thread that ran it (time.thread_time()).
A sample is `[t, process_cpu_s, main_thread_cpu_s, rss_kb]`, taken every SAMPLE_S.
"""

from __future__ import annotations

import statistics

# The driver's steps a window splits its CPU into: (key, label). Keys are what a results
# line holds, labels what the table prints.
PARTS = (
    ("ask", "study: ask (the new trial; TPE proposes at its first suggest)"),
    ("tell", "study: tell"),
    ("proposer", "study: who proposes (the trials listed)"),
    # Optuna samples a trial's relative params (multivariate TPE's proposal) at its first
    # suggest, inside the ledger's define-by-run, not in ask: that is most of this part.
    ("study_other", "study: TPE's proposal, params, user attrs, intermediate values"),
    ("record_put", "record: trial.json as text (driver)"),
    ("record_write", "record: file writes (writer thread)"),
    ("mlflow_put", "MLflow: queued (driver)"),
    ("mlflow_write", "MLflow: writes (writer thread)"),
    ("progress", "progress line"),
    ("ray", "Ray: the rest of the driver's main thread"),
    ("other_threads", "other threads of the driver (Ray's, gRPC, the study's SQLite file)"),
)


def spans_of(trials) -> list[tuple[float, float]]:
    """Each trial's own run, as benchmarks/overhead.py takes it: the trainable's start
    (before its data and model are set up) to its last report. Trials without a report
    (none here unless one failed at once) have no span."""
    out = []
    for t in trials:
        rows = [r for r in t.reports if "reported_at" in r and "started_at" in r]
        if rows:
            out.append((float(rows[0]["started_at"]), float(rows[-1]["reported_at"])))
    return out


def sweep_figures(t0: float, t1: float, spans: list[tuple[float, float]],
                  slots: int) -> dict:
    """A sweep's figures from its process start and exit and its trials' spans on `slots`
    slots: the ideal is the trials' own seconds over the slots (no start-up, no end, no
    gap); a gap is a start minus the end that freed its slot (the k-th start on a full
    machine waits for the (k - slots)-th end)."""
    starts = sorted(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    busy = sum(e - s for s, e in spans)
    gaps = [starts[k] - ends[k - slots] for k in range(slots, len(starts))] or [0.0]
    ideal = busy / slots
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    return {"wall_s": t1 - t0, "ideal_s": ideal, "wall_over_ideal": (t1 - t0) / ideal,
            "trials": len(spans), "trial_s": busy / len(spans),
            "startup_s": starts[0] - t0, "end_s": t1 - ends[-1],
            "slot_use": busy / (slots * (ends[-1] - starts[0])),
            "gap_median_s": statistics.median(gaps), "gap_max_s": gaps[worst],
            # where the largest gap fell: its start, s after the first trial's start
            "gap_max_at_s": starts[worst + slots] - starts[0] if len(starts) > slots else 0.0}


def window(starts: list[float], k: int, slots: int, half: int
           ) -> tuple[float, float, int, int] | None:
    """The window "around trial k" of a run whose trials started at `starts` (sorted):
    from the start of trial lo to the start of trial hi (1-based numbers, returned with
    the times), 2 x `half` trials centred on k where the run has them, else the last 2 x
    `half` up to k (around the last trial, as wide as the others: a cost that comes every
    few seconds, as Ray's experiment state, weighs alike in each). It begins after the
    first `slots` starts, which all come at once (no trial has ended yet), so at 16 slots
    "around trial 10" is trials 17-27. None where the run has no such trials."""
    i = k - 1
    if i >= len(starts):
        return None
    hi = min(len(starts) - 1, max(slots, i - half) + 2 * half)
    lo = max(slots, hi - 2 * half)
    if hi <= lo:
        return None
    return starts[lo], starts[hi], lo + 1, hi + 1


def _at(samples: list, t: float, col: int) -> float:
    """Sample column `col` at time t, linear between the samples around it."""
    if not samples:
        return 0.0
    if t <= samples[0][0]:
        return samples[0][col]
    for a, b in zip(samples, samples[1:]):
        if a[0] <= t <= b[0]:
            f = (t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 0.0
            return a[col] + f * (b[col] - a[col])
    return samples[-1][col]


def driver_split(events: list, samples: list, lo: float, hi: float, trials: int) -> dict:
    """The driver's CPU seconds per trial in [lo, hi), split by its steps (PARTS). A step
    counts where it started; nested steps are taken out of the step around them (a
    ledger step holds the study's calls and the record's and MLflow's queueing). "ray" is
    the main thread's CPU outside our steps (Ray Tune's loop: its events, its trial
    bookkeeping, its experiment state); "other_threads" the process's CPU on neither the
    main thread nor our two writer threads."""
    def cpu(label: str, main: bool | None = None) -> float:
        return sum(e[4] for e in events
                   if e[0] == label and lo <= e[2] < hi and (main is None or e[1] == main))

    def wall(label: str) -> float:
        return sum(min(e[3], hi) - e[2] for e in events if e[0] == label and lo <= e[2] < hi)

    process = _at(samples, hi, 1) - _at(samples, lo, 1)
    main = _at(samples, hi, 2) - _at(samples, lo, 2)
    ledger, ask, tell, proposer = (cpu(x) for x in ("ledger", "ask", "tell", "proposer"))
    record_put, mlflow_put = cpu("record put", True), cpu("mlflow put", True)
    progress, notices = cpu("progress line"), cpu("notices")
    record_write, mlflow_write = cpu("record write", False), cpu("mlflow write", False)
    parts = {"ask": ask, "tell": tell, "proposer": proposer,
             "study_other": ledger - ask - tell - proposer - record_put - mlflow_put,
             "record_put": record_put, "record_write": record_write,
             "mlflow_put": mlflow_put, "mlflow_write": mlflow_write, "progress": progress,
             "ray": main - ledger - progress - notices,
             "other_threads": process - main - record_write - mlflow_write}
    rss = [s[3] for s in samples if lo <= s[0] <= hi] or [_at(samples, (lo + hi) / 2, 3)]
    return {"trials": trials, "cpu_s": process / trials,
            "parts": {k: v / trials for k, v in parts.items()},
            "ledger_wall_s": wall("ledger") / trials, "slot_s": (hi - lo) / trials,
            "rss_mb": max(rss) / 1024}


def end_split(events: list, last_report: float) -> dict:
    """What a sweep's end is made of, from its last trial's last report: `fit_s`, until
    Ray's `Tuner.fit` returned; then per timed step that started after that report, its
    count, wall and CPU seconds (nested steps count in the step around them too)."""
    fits = [e[3] for e in events if e[0] == "Tuner.fit"]
    steps: dict[str, dict] = {}
    for label, _main, t0, t1, cpu in events:
        if t0 >= last_report and label != "Tuner.fit":
            a = steps.setdefault(label, {"n": 0, "s": 0.0, "cpu_s": 0.0})
            a["n"] += 1
            a["s"] += t1 - t0
            a["cpu_s"] += cpu
    return {"fit_s": max(fits) - last_report if fits else None, "steps": steps}


def checkpoints(sizes: list[int], n: int) -> list[int]:
    """The trials a sweep of n is looked at around: the sizes up to n."""
    return [k for k in sorted(sizes) if k <= n]


def driver_windows(events: list, samples: list, starts: list[float], sizes: list[int],
                   slots: int, half: int) -> dict[str, dict]:
    """{str(k): driver_split around trial k, with its trials' numbers} per checkpoint."""
    out = {}
    for k in checkpoints(sizes, len(starts)):
        w = window(starts, k, slots, half)
        if w is None:
            continue
        lo, hi, first, last = w
        out[str(k)] = {**driver_split(events, samples, lo, hi, last - first),
                       "first": first, "last": last}
    return out


def gaps_around(spans: list[tuple[float, float]], sizes: list[int], slots: int,
                half: int) -> dict[str, float]:
    """{str(k): the median gap of the starts in the window around trial k}."""
    starts = sorted(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    out = {}
    for k in checkpoints(sizes, len(starts)):
        w = window(starts, k, slots, half)
        if w is not None:
            _, _, first, last = w
            out[str(k)] = statistics.median(starts[j] - ends[j - slots]
                                            for j in range(first - 1, last - 1))
    return out


def plain_windows(asks: list, sizes: list[int], half: int) -> dict[str, dict]:
    """The plain loop's driver per trial around trial k: its ask and tell (wall s) and its
    process CPU (from one reading at each ask). `asks`: per trial in order of asking,
    [ask_s, tell_s, process_cpu_s at the ask]."""
    out = {}
    for k in checkpoints(sizes, len(asks)):
        lo, hi = max(0, k - 1 - half), min(len(asks) - 1, k - 1 + half)
        if hi <= lo:
            continue
        rows = asks[lo:hi + 1]
        out[str(k)] = {"ask_s": statistics.median(r[0] for r in rows),
                       "tell_s": statistics.median(r[1] for r in rows),
                       "cpu_s": (asks[hi][2] - asks[lo][2]) / (hi - lo)}
    return out


def first_start_after(trials, t0: float, keys: set[str] | None = None) -> float | None:
    """Seconds from t0 to the first trial start after it (of the trials `keys`, if given):
    the first trial a resumed command runs."""
    starts = [float(r["started_at"]) for t in trials if keys is None or t.key in keys
              for r in t.reports if float(r.get("started_at", 0)) >= t0]
    return min(starts) - t0 if starts else None


def step_totals(events: list, labels: tuple[str, ...]) -> dict[str, dict]:
    """{label: {"s": wall seconds in all, "n": calls}}: a command's fixed steps."""
    return {x: {"s": sum(e[3] - e[2] for e in events if e[0] == x),
                "n": sum(e[0] == x for e in events)} for x in labels}

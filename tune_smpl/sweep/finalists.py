"""The finalist stage of a sweep: the K best search trials retrained on S fresh seeds.

A search trial's score is one noisy estimate: its best report on `val_size` held-out
examples, and the sweep's best is the maximum over trials and reports (the winner's curse).
With `--finalists K --finalist-seeds S`, when the search ends the K best search trials'
configs run again in full (`steps`, no ASHA) on S seeds the search did not use (`seed` sets
the labelled split and the initialisation). Each finalist run is scored by the measure that
retraining an exported config delivers, decided here once: `Measure.FINAL`, its final evaluation
at `steps` (the `val_accuracy` that `tune-smpl train --config` of the export prints). The
sweep's best is then the finalist with the highest mean over its seeds.

The stage is planned once, when it starts, and kept in `sweep.json` (`finalists`, a
`FinalistStage`), so a
resumed sweep runs exactly the missing runs of the same plan. Finalist runs are not trials
of the Optuna study: the study is the search.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from tune_smpl.sweep.outcome import METRIC, SCORED, Outcome, best, rank, score
from tune_smpl.sweep.record import TrialRecord

SEED_START = 1000  # fresh seeds are drawn from base seed + SEED_START upwards


class Measure(StrEnum):
    """What the sweep's best value is (a `StrEnum`: the export, the parent run's tag and
    the views show the string itself)."""

    FINAL = "final val_accuracy at steps"  # a finalist's mean over its fresh seeds
    SEARCH = "best val_accuracy report of a search trial"  # one noisy estimate


class StageStatus(StrEnum):
    """The finalist stage's status in sweep.json (`finalists.status`)."""

    PLANNED = "planned"
    INTERRUPTED = "interrupted"
    CUT_BY_BUDGET = "cut_by_budget"  # the time budget cut a run short
    DONE = "done"


@dataclass
class FinalistStage:
    """The stage's plan as sweep.json keeps it (`finalists`): the K best search trials
    (`of`, by the sweep's ranking) x S fresh seeds (`seed_values`), and its status.
    `to_dict`/`from_dict` are that JSON object, key for key."""

    k: int
    seeds: int
    of: list[str]
    seed_values: list[int]
    status: StageStatus = StageStatus.PLANNED

    def to_dict(self) -> dict:
        return {"k": self.k, "seeds": self.seeds, "of": list(self.of),
                "seed_values": list(self.seed_values), "status": str(self.status)}

    @classmethod
    def from_dict(cls, d: dict) -> FinalistStage:
        return cls(int(d["k"]), int(d["seeds"]), list(d["of"]),
                   [int(s) for s in d["seed_values"]],
                   StageStatus(d.get("status", StageStatus.PLANNED)))

    @classmethod
    def of_meta(cls, meta: dict) -> FinalistStage | None:
        """The stage of a sweep.json, None for a sweep without one (yet)."""
        d = meta.get("finalists")
        return None if d is None else cls.from_dict(d)

    def runs(self) -> list[tuple[str, int]]:
        """(search trial key, seed) of every run of the stage, in the order they run: seed
        by seed, so a stage cut short has every finalist on its first seeds."""
        return [(of, s) for s in self.seed_values for of in self.of]


def run_key(of: str, seed: int) -> str:
    """The record key of the finalist run of search trial `of` on `seed`."""
    return f"{of}_s{seed}"


def plan(trials: Sequence[TrialRecord], k: int, seeds: int, base_seed: int) -> FinalistStage:
    """The stage: which search trials (the K best by the sweep's ranking, `outcome.rank`)
    and which seeds (S values no search trial ran with)."""
    used = {int(t.config.get("seed", base_seed)) for t in trials}
    fresh: list[int] = []
    s = base_seed + SEED_START
    while len(fresh) < seeds:
        if s not in used:
            fresh.append(s)
        s += 1
    chosen = [t.key for t in rank(trials)[:k]]
    return FinalistStage(k, seeds, chosen, fresh)


def final_value(run: TrialRecord, steps: int) -> float | None:
    """`Measure.FINAL` of a finalist run: its last report's val_accuracy, if it reached `steps`
    (completed); None for a run that was cut, diverged or failed."""
    last = run.last
    v = last.get(METRIC)
    if (run.outcome != Outcome.COMPLETED or last.get("step") != steps
            or not isinstance(v, (int, float))):
        return None
    return float(v) if math.isfinite(v) else None


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample sd, low, high): the Student-t interval of the mean; with one value the
    interval is that value (nothing to say about its spread)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, 0.0, mean, mean
    sd = statistics.stdev(values)
    from scipy import stats as scipy_stats  # 0.7 s to import: only when a CI is drawn

    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


@dataclass
class Finalist:
    """One finalist: the search trial `key`, its search score (`promised`), and what its
    runs delivered (`values`: seed -> Measure.FINAL; a run without one is left out)."""

    key: str
    promised: float
    values: dict[int, float] = field(default_factory=dict)
    planned: int = 0  # runs planned for it

    @property
    def n(self) -> int:
        return len(self.values)

    def summary(self) -> tuple[float, float, float, float]:
        """(mean, sd, low, high) over its values; all nan without one."""
        if not self.values:
            return math.nan, math.nan, math.nan, math.nan
        return mean_ci(list(self.values.values()))

    @property
    def mean(self) -> float:
        return self.summary()[0]

    def as_dict(self) -> dict:
        """The statistics as the parent run, the export and the report show them."""
        out: dict = {"trial_id": self.key, "promised": self.promised, "runs": self.n,
                     "planned": self.planned,
                     "values": {str(k): v for k, v in self.values.items()}}
        if self.values:
            mean, sd, lo, hi = self.summary()
            out.update(mean=mean, sd=sd, ci_low=lo, ci_high=hi,
                       optimism=self.promised - mean)
        return out


@dataclass(frozen=True)
class FinalistRow:
    """One finalist as every view's finalist table shows it (the summary, the report's
    markdown and HTML): its cells, formatted once; "-" where it measured nothing."""

    key: str
    promised: str  # its search score, 4 decimals
    mean: str  # delivered mean of Measure.FINAL over its seeds
    sd: str
    ci: str  # the 95% interval of the mean, "[low, high]"
    seeds: str  # "n of planned": the runs that measured, of those planned
    optimism: str  # promised minus delivered, signed
    runs: int  # the runs that measured
    measured: bool  # at least one run measured

    @classmethod
    def of(cls, f: Finalist) -> FinalistRow:
        if not f.values:
            return cls(f.key, f"{f.promised:.4f}", "-", "-", "-", f"0 of {f.planned}", "-", 0,
                       False)
        mean, sd, lo, hi = f.summary()
        return cls(f.key, f"{f.promised:.4f}", f"{mean:.4f}", f"{sd:.4f}",
                   f"[{lo:.4f}, {hi:.4f}]", f"{f.n} of {f.planned}",
                   f"{f.promised - mean:+.4f}", f.n, True)


def table(ranked: Iterable[Finalist]) -> list[FinalistRow]:
    """The finalist table, best mean first (the order of `finalists`)."""
    return [FinalistRow.of(f) for f in ranked]


def finalists(stage: FinalistStage, trials: Iterable[TrialRecord],
              runs: Iterable[TrialRecord], steps: int) -> list[Finalist]:
    """The stage's finalists, best mean first (those without a finished run last, in the
    search's order)."""
    by_key = {t.key: t for t in trials}
    out = {k: Finalist(k, score(by_key[k].reports)[0], planned=len(stage.seed_values))
           for k in stage.of if k in by_key}
    for r in runs:
        f = out.get(r.finalist_of) if r.finalist_of is not None else None
        v = final_value(r, steps)
        if f is not None and v is not None:
            f.values[int(r.config["seed"])] = v
    order = {k: i for i, k in enumerate(stage.of)}
    return sorted(out.values(), key=lambda f: (not f.values, -f.mean if f.values else 0,
                                               order[f.key]))


def separation(winner: Finalist, runner_up: Finalist) -> dict | None:
    """Winner minus runner-up, paired by seed (the same labelled split and initialisation),
    with its 95% interval; `separated` when the interval lies above 0. None without two
    common seeds."""
    common = sorted(set(winner.values) & set(runner_up.values))
    if len(common) < 2:
        return None
    diffs = [winner.values[s] - runner_up.values[s] for s in common]
    mean, _, lo, hi = mean_ci(diffs)
    return {"runner_up": runner_up.key, "diff": mean, "ci_low": lo, "ci_high": hi,
            "seeds": len(common), "separated": lo > 0}


def verdict(ranked: list[Finalist]) -> dict:
    """What the stage says of its winner: its statistics and its separation from the
    runner-up (the parent run, the summary, the export and the report all show this)."""
    if not ranked or not ranked[0].values:
        return {}
    out: dict = {"winner": ranked[0].as_dict(), "measure": Measure.FINAL}
    if len(ranked) > 1 and ranked[1].values:
        out["separation"] = separation(ranked[0], ranked[1])
    return out


@dataclass
class Pick:
    """The sweep's best as every view shows it (the summary, the parent run, `export`,
    the report): one decision, made by `pick`."""

    trial: TrialRecord | None  # the search trial whose config is exported (None: no best)
    value: float  # its measure: the winner's mean over its seeds, or its search score
    measure: Measure
    note: str  # how much of that value to trust, in one line
    ranked: list[Finalist] = field(default_factory=list)
    verdict: dict = field(default_factory=dict)
    model_run: TrialRecord | None = None  # the finalist run whose model stands for the winner

    def figures(self) -> dict[str, float]:
        """The winner's statistics as the parent run's metrics."""
        w = self.verdict.get("winner")
        if not w:
            return {}
        out = {f"finalist_{k}": float(w[k]) for k in
               ("mean", "sd", "ci_low", "ci_high", "promised", "optimism")}
        out["finalist_seeds"] = float(w["runs"])  # the winner's runs that measured
        sep = self.verdict.get("separation")
        if sep:
            out.update(finalist_margin=sep["diff"], finalist_margin_ci_low=sep["ci_low"],
                       finalist_margin_ci_high=sep["ci_high"],
                       finalist_separated=float(sep["separated"]))
        return out


def pick(trials: Iterable[TrialRecord], runs: Sequence[TrialRecord],
         stage: FinalistStage | None, steps: int) -> Pick:
    """With a finalist stage that measured something, the finalist with the best mean
    `Measure.FINAL`; else the search's best (`outcome.best`), one noisy estimate."""
    trials = list(trials)
    ranked = finalists(stage, trials, runs, steps) if stage else []
    if stage is not None and ranked and ranked[0].values:
        win, by_key = ranked[0], {t.key: t for t in trials}
        firsts = sorted((r for r in runs if r.finalist_of == win.key
                         and final_value(r, steps) is not None),
                        key=lambda r: stage.seed_values.index(int(r.config["seed"])))
        mean, _, lo, hi = win.summary()
        sep = separation(win, ranked[1]) if len(ranked) > 1 and ranked[1].values else None
        note = (f"mean of {Measure.FINAL} over {win.n} fresh seed(s), 95% interval "
                f"[{lo:.4f}, {hi:.4f}]; its search score was {win.promised:.4f}")
        if sep is not None:
            note += (f"; {'separated' if sep['separated'] else 'not separated'} from the "
                     f"runner-up {sep['runner_up']} ({sep['diff']:+.4f} "
                     f"[{sep['ci_low']:+.4f}, {sep['ci_high']:+.4f}], paired by seed)")
        return Pick(by_key[win.key], mean, Measure.FINAL, note, ranked, verdict(ranked), firsts[0])
    top = best(trials)
    if top is None:
        return Pick(None, math.nan, Measure.SEARCH, "no trial gave a measurement", ranked)
    scored = sum(1 for t in trials if t.outcome in SCORED)
    note = (f"one noisy estimate: the highest best report of {scored} trial(s), each on "
            f"{top.config.get('val_size', '?')} validation examples")
    if scored > 1:  # the winner's curse (benchmarks/README.md, across data splits)
        note += ", so biased up: retraining it tends to deliver less"
    note += ("; the finalist stage gave no final measurement" if stage else
             "; `--finalists K` retrains the K best on fresh seeds and promises their mean")
    return Pick(top, score(top.reports)[0], Measure.SEARCH, note, ranked)

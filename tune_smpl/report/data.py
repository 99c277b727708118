"""What a sweep's report shows, read from its record: outcomes, best, importance, series.

Every figure of the report is drawn from one `SweepView`, built here from the record
alone (no Ray, no running study), so the report works after the cluster is gone.

A trial's value, as the sweep ranks trials (`tune_smpl.sweep.outcome.score`): its best
`val_accuracy` over its reports. A trial that ASHA stopped (or the budget cut) counts with
the value it reached before it was stopped, so the history, the importance and the slices
use every trial that gave a measurement, not only the few that ran to the end.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import optuna
import yaml
from optuna.distributions import json_to_distribution
from optuna.trial import TrialState, create_trial

from tune_smpl.sweep.finalists import FinalistStage, Pick
from tune_smpl.sweep.outcome import METRIC, SCORED, Outcome, counts, rank, score
from tune_smpl.sweep.record import FINALIST, SweepRecord, TrialRecord
from tune_smpl.sweep.result import SweepResult
from tune_smpl.sweep.study import build_study

# The feedback diagnostics smpl_core reports (smpl_core/metrics.py), with their labels.
DIAGNOSTICS = {"train/feedback_abs": "|h| (mean over the window)",
               "train/feedback_pos_frac": "fraction of steps with h > 0",
               "train/mpl_grad_ratio": "||grad L_mpl|| / ||grad L_uda||"}
EVALUATOR = "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"
TOP_DIAGNOSED = 3  # the best trials whose diagnostics are drawn
# Learning curves: up to CURVES_ALL trials every curve is drawn; beyond, the best CURVES_TOP
# and a band of all of them (issue 26: a line per trial made a 1,000-trial report.html
# heavy and its figure unreadable).
CURVES_ALL, CURVES_TOP = 60, 20
BAND = (0.1, 0.9)  # the band's quantiles, per step
FEW_TRIALS = 10  # below this many measured trials, fANOVA's forest fits little


@dataclass
class SweepView:
    name: str
    uri: str  # the sweep folder (local path or URI)
    meta: dict
    trials: list[TrialRecord]
    knobs: list[str]  # the searched knobs, in the space's order
    log_knobs: set[str]
    study: optuna.Study  # the record's study: COMPLETE / PRUNED / FAIL as the sweep decided
    values: dict[str, float]  # key -> the trial's value, for trials that gave one
    ranked: list[TrialRecord]  # scored trials, best first
    counts: dict[Outcome, int]
    pick: Pick  # the sweep's best, as the sweep decided it (SweepResult.pick)
    importance: dict[str, float] | None = None
    importance_note: str = ""
    t0: float = 0.0  # when the sweep's first trial was created (epoch seconds)
    damaged: list = field(default_factory=list)  # DamagedRecords left out (record.scan)
    finalist_runs: list[TrialRecord] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def best(self) -> TrialRecord | None:
        return self.pick.trial

    @property
    def best_value(self) -> float:
        """The best's value by its measure (`pick.measure`)."""
        return self.pick.value if self.pick.trial else math.nan

    @property
    def stage(self) -> FinalistStage | None:
        return FinalistStage.of_meta(self.meta)

    def value_study(self) -> optuna.Study:
        """Every trial with a measurement as COMPLETE with its value (see the module's
        note); failed trials as FAIL. What Optuna's history, importance and slices read."""
        if "value_study" in self.extra:  # built once: every figure reads the same trials
            return self.extra["value_study"]
        study = optuna.create_study(study_name=self.name, direction="maximize")
        _name_metric(study)
        for t in self.trials:
            if not t.finished:
                continue
            dists = {k: json_to_distribution(v) for k, v in t.distributions.items()}
            value = self.values.get(t.key)
            state = TrialState.COMPLETE if value is not None else TrialState.FAIL
            study.add_trial(create_trial(
                state=state, value=value, params=t.params, distributions=dists,
                user_attrs={"key": t.key, "outcome": t.outcome}))
        self.extra["value_study"] = study
        return study

    def knob_study(self) -> optuna.Study:
        """The first measured trials of value_study that carry every knob's distribution,
        all that the importance plot reads from its study when it is handed the
        importances: Optuna's plot takes `study.trials` (a deep copy of every trial) once
        per knob for its hover text, 0.6 s at 1,000 trials."""
        study = optuna.create_study(study_name=self.name, direction="maximize")
        _name_metric(study)
        seen: set[str] = set()
        for t in self.value_study().get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if set(t.distributions) - seen:
                study.add_trial(t)
                seen |= set(t.distributions)
        return study

    def diagnosed(self) -> list[TrialRecord]:
        """The best trials that report the feedback diagnostics (smpl runs do)."""
        return [t for t in self.ranked
                if any(k in r for r in t.reports for k in DIAGNOSTICS)][:TOP_DIAGNOSED]

    def curves(self) -> tuple[list[tuple[TrialRecord, list[tuple[int, float]]]], list[tuple]]:
        """The learning curves drawn, as (trial, [(step, val_accuracy)]): every trial's
        up to CURVES_ALL curves, else the best CURVES_TOP's; and then the band of every
        curve, per step: (step, BAND[0] quantile, median, BAND[1] quantile, curves) (empty
        when every curve is drawn)."""
        every = [(t, pts) for t in self.trials if (pts := curve(t))]
        if len(every) <= CURVES_ALL:
            return every, []
        drawn = [(t, pts) for t in self.ranked if (pts := curve(t))][:CURVES_TOP]
        by_step: dict[int, list[float]] = {}
        for _, pts in every:
            for step, v in pts:
                by_step.setdefault(step, []).append(v)
        band = []
        for step, vs in sorted(by_step.items()):
            vs.sort()
            band.append((step, _quantile(vs, BAND[0]), _quantile(vs, 0.5),
                         _quantile(vs, BAND[1]), len(vs)))
        return drawn, band

    def elapsed(self, t: TrialRecord) -> float | None:
        return None if t.ended_at is None else max(0.0, t.ended_at - self.t0)


def curve(t: TrialRecord) -> list[tuple[int, float]]:
    """A trial's learning curve: (step, val_accuracy) of each report that has both."""
    return [(int(r["step"]), float(r[METRIC])) for r in t.reports
            if isinstance(r.get(METRIC), (int, float)) and not isinstance(r.get(METRIC), bool)
            and "step" in r]


def band_count(band: list[tuple]) -> int:
    """The trials a band is made of: those with a value at its most reported step."""
    return max(b[4] for b in band)


def curves_title(drawn: list, band: list[tuple]) -> str:
    """The learning curves' title: what is drawn of how many."""
    if not band:
        return "Learning curves (dashed, ending in x: stopped)"
    return (f"Learning curves of the best {len(drawn)} trials (dashed, ending in x: stopped), "
            f"over the middle {BAND[1] - BAND[0]:.0%} and the median of all")


def _quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of sorted values, linear between the two around it."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def _name_metric(study: optuna.Study) -> None:
    with warnings.catch_warnings():  # experimental in Optuna 3.2+
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])


def searched_knobs(record: SweepRecord, trials: list[TrialRecord]) -> tuple[list[str],
                                                                            set[str]]:
    """The space's knobs in its own order (the space file), and which are log-scaled."""
    try:
        space = yaml.safe_load(record.space_yaml()) or {}
    except (OSError, yaml.YAMLError):
        space = {}
    knobs = list(space)
    for t in trials:  # a record without its space file still names its params
        knobs += [k for k in t.distributions if k not in knobs]
    logs = {k for k, spec in space.items() if isinstance(spec, dict) and spec.get("log")}
    return knobs, logs


def load_view(record: SweepRecord, result: SweepResult | None = None) -> SweepView:
    """The report's view of a sweep: with `result` (what the command's run of it returned),
    its trials and its pick; else the record as it stands, read here (a damaged trial
    record is left out, and said so)."""
    meta = record.meta()  # a damaged sweep.json stops the report
    damaged: list = []
    if result is None:
        trials, damaged = record.scan()
        runs, damaged_runs = record.scan(FINALIST)
        damaged += damaged_runs
        result = SweepResult.of_record(record, trials, runs, meta)
    trials, runs = result.trials, result.finalist_runs
    knobs, logs = searched_knobs(record, trials)
    values = {}
    for t in trials:
        v = score(t.reports)[0]
        if t.outcome in SCORED and not math.isnan(v):
            values[t.key] = v
    view = SweepView(name=record.name, uri=record.uri, meta=meta, trials=trials,
                     knobs=knobs, log_knobs=logs, study=build_study(trials, record.name),
                     values=values, ranked=rank(trials), counts=counts(trials),
                     t0=min((t.created_at for t in trials), default=0.0),
                     damaged=damaged, finalist_runs=runs, pick=result.pick)
    view.importance, view.importance_note = importance(view)
    return view


def importance(view: SweepView) -> tuple[dict[str, float] | None, str]:
    """Each searched knob's share of the variance of `val_accuracy` (fANOVA), or None and
    why not. Knobs Optuna could not rate (one value only) get 0."""
    distinct = {round(v, 12) for v in view.values.values()}
    if len(view.values) < 2:
        return None, (f"needs at least 2 trials with a measurement; this sweep has "
                      f"{len(view.values)}.")
    if len(distinct) < 2:
        return None, "every measured trial has the same value: no knob explains a difference."
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = optuna.importance.get_param_importances(view.value_study(),
                                                          evaluator=evaluator)
    except (RuntimeError, ValueError) as e:  # e.g. params that differ between trials
        return None, f"Optuna could not compute it: {e}"
    out = {k: float(got.get(k, 0.0)) for k in view.knobs}
    caution = (" With this few trials, read it as a hint." if len(view.values) < FEW_TRIALS
               else "")
    return dict(sorted(out.items(), key=lambda kv: -kv[1])), (
        f"{EVALUATOR} over the {len(view.values)} trials with a measurement.{caution}")

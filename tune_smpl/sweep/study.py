"""The Optuna side of a sweep: the sampler the project chooses, and the study as a view
of the record.

The study is rebuilt from the sweep's record whenever a command opens a sweep (resume,
report, dashboard), with public Optuna calls only: finished trials with `add_trial`,
unfinished ones with `enqueue_trial`, so that they are asked again, with the same params
and the same trial number, before any new trial.

A warm-started sweep's study (`tune_smpl.sweep.prior`) holds its P prior trials first
(numbers 0..P-1, user attr `prior`), so the sweep's own trial n is study trial P + n.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState, create_trial

from smpl_core.errors import ConfigError
from tune_smpl.sweep.outcome import METRIC, OPTUNA_STATE, score
from tune_smpl.sweep.record import TrialRecord
from tune_smpl.sweep.storage import SweepStorage

SAMPLERS = ("tpe", "random", "gp")
STUDY_FILE = "optuna.db"
PRIOR = "prior"  # user attr of a prior trial; `proposed_by` of a trial enqueued from one


def study_file(storage: SweepStorage, name: str) -> Path:
    """The SQLite study optuna-dashboard opens: in the sweep folder on a local storage, else
    on this machine under ./runs/<name>/ (a copy goes to the storage at the end)."""
    if storage.local:
        return Path(storage.path(name, STUDY_FILE))
    return Path("runs").resolve() / name / STUDY_FILE


def startup_trials(num_samples: int, max_concurrent: int) -> int:
    """Random start-up trials before the model proposes. A trial asked when `n` trials have
    finished is proposed by the model once n >= this; with `c` trials in flight that is
    trial n + c onwards, so N//2 - c + 1 lets the model propose half of N (4 of the default
    8 on 2 slots). Optuna's own default is 10, i.e. random search below 10 trials."""
    return max(2, min(10, num_samples // 2 - max(1, max_concurrent) + 1))


def make_sampler(kind: str, seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
    if kind != "tpe":
        raise ConfigError(f"`--sampler` must be one of {' | '.join(SAMPLERS)}, but got "
                          f"--sampler={kind!r}.")
    # multivariate: the knobs interact (threshold with beta_zero, lr with warm-up);
    # constant_liar: trials in flight count as bad guesses, so parallel trials spread out.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup,
                                      multivariate=True, constant_liar=True)


def sampler_settings(kind: str, seed: int, n_startup: int, prior: int = 0) -> dict:
    """The sampler as the record and the parent run keep it; with a warm start, `prior`:
    the prior trials the model counts towards its start-up (`counted`)."""
    out = {"sampler": kind, "sampler_seed": seed}
    if kind != "random":
        out["sampler_startup_trials"] = n_startup
        if prior:
            out["sampler_startup_prior"] = prior
    if kind == "tpe":
        out.update(sampler_multivariate=True, sampler_constant_liar=True)
    return out


# The finished trials each model counts towards its start-up (Optuna 4-5): TPE counts
# pruned trials (ASHA's early stops), GP fits on COMPLETE trials only, so under ASHA a GP
# sweep stays random for longer and ignores every stopped trial.
_COUNTED = {"tpe": (TrialState.COMPLETE, TrialState.PRUNED), "gp": (TrialState.COMPLETE,)}


def counted(kind: str, states: list[str]) -> int:
    """How many trials of these Optuna states (names) the model counts as finished."""
    return sum(TrialState[s] in _COUNTED.get(kind, ()) for s in states)


def asha_caution(kind: str, grace_period: int, reports: int) -> str | None:
    """A line for a sampler that learns nothing from the trials ASHA stops (GP: COMPLETE
    only) when ASHA can stop trials (grace period below a full trial's reports); None
    otherwise. benchmarks/README.md ("Samplers where configs differ"): GP under ASHA stayed
    random search on 6 of 8 sweeps of 16 trials."""
    if TrialState.PRUNED in _COUNTED.get(kind, (TrialState.PRUNED,)) or grace_period >= reports:
        return None
    return (f"note: {kind} learns from completed trials only, and ASHA (grace period "
            f"{grace_period} of {reports} reports) stops trials before they complete, so it "
            f"may stay random search; --grace-period {reports} turns ASHA off")


def proposer(study: optuna.Study, kind: str, n_startup: int) -> str:
    """Who proposes the next asked trial: `random` while fewer than `n_startup` trials have
    finished (as the sampler itself counts them), else the model."""
    if kind == "random":
        return "random"
    done = study.get_trials(deepcopy=False, states=_COUNTED[kind])
    return kind if len(done) >= n_startup else "random"


def distributions_json(trial: optuna.trial.BaseTrial) -> dict[str, str]:
    return {k: distribution_to_json(d) for k, d in trial.distributions.items()}


def frozen(t: TrialRecord) -> optuna.trial.FrozenTrial:
    """A finished trial record as Optuna's FrozenTrial (state from its outcome)."""
    if t.outcome is None:
        raise ValueError(f"trial {t.key} has not ended: it has no Optuna state")
    state = TrialState[OPTUNA_STATE[t.outcome]]
    steps = {int(r["step"]): float(r[METRIC]) for r in t.reports
             if isinstance(r.get(METRIC), (int, float)) and "step" in r}
    value = None
    if state == TrialState.COMPLETE:
        value = score(t.reports)[0]
    elif state == TrialState.PRUNED and steps:
        value = steps[max(steps)]  # as study.tell(PRUNED) takes it: the last value
    attrs = {"key": t.key, "outcome": t.outcome, "proposed_by": t.proposed_by}
    if t.error:
        attrs["error"] = t.error[-1000:]
    return create_trial(state=state, value=value, params=t.params,
                        distributions={k: json_to_distribution(v)
                                       for k, v in t.distributions.items()},
                        user_attrs=attrs, intermediate_values=steps)


def build_study(trials: list[TrialRecord], name: str,
                storage: str | optuna.storages.BaseStorage | None = None,
                sampler: optuna.samplers.BaseSampler | None = None,
                prior=None) -> optuna.Study:
    """The study of a record: `storage` an SQLite URL (replaced), a storage (a sweep's
    `study_mirror.StudyMirror`, new) or None (in memory).
    `prior` (a `prior.Prior`): its trials first, then the record's, then the prior's best
    that no trial of the record has run yet (the first trials of a sweep are those)."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        db = Path(storage[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                direction="maximize")
    with warnings.catch_warnings():  # experimental in Optuna 3.2+, stable in practice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])
    for ft in prior.frozen() if prior is not None else []:
        study.add_trial(ft)
    for t in sorted(trials, key=lambda t: t.number):
        if t.finished:
            study.add_trial(frozen(t))
        else:  # asked again, first: same params, same number (the record's key)
            study.enqueue_trial(t.params, user_attrs={"key": t.key,
                                                      "proposed_by": t.proposed_by},
                                skip_if_exists=False)
    for params in prior.enqueued[len(trials):] if prior is not None else []:
        # skip_if_exists=False: the prior trial with these params is in the study already
        study.enqueue_trial(params, user_attrs={"proposed_by": PRIOR}, skip_if_exists=False)
    return study


def prior_count(study: optuna.Study) -> int:
    """The prior trials of a warm-started study (its first trials)."""
    return sum(PRIOR in t.user_attrs for t in study.get_trials(deepcopy=False))


def check_numbers(study: optuna.Study, trials: list[TrialRecord], n_prior: int = 0) -> None:
    """The study is the prior's `n_prior` trials, then the record's trials: study trial
    n_prior + n is record n (a rebuilt study adds them in order), then what is enqueued."""
    got = study.get_trials(deepcopy=False)
    prior = [t.number for t in got if PRIOR in t.user_attrs]
    own = [t.number for t in got if PRIOR not in t.user_attrs][:len(trials)]
    want = sorted(n_prior + t.number for t in trials)
    if prior != list(range(n_prior)) or own != want:
        raise RuntimeError(f"the study of the sweep does not match its record: prior trials "
                           f"{prior} and trial numbers {own} for {n_prior} prior trials and "
                           f"records {want}")


__all__ = ["PRIOR", "SAMPLERS", "build_study", "check_numbers", "counted", "distributions_json",
           "frozen", "make_sampler", "prior_count", "proposer", "sampler_settings",
           "startup_trials"]

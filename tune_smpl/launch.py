"""Launch (or resume) a sweep on this machine or on a Ray cluster: what `tune-smpl tune`
and `tune_smpl.tune(...)` both run.

`run(options)` takes a `TuneOptions` (or the command line's parsed flags, which have the
same names) and returns the command's exit status: it checks the settings (`plan.prepare`),
connects to Ray, claims the record, prints the banner, runs the stages (`sweep.run`), then
closes the sweep (the summary, MLflow's parent run, the report). The command line
(`tune_smpl/commands/tune.py`) only parses the flags and calls it."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from mlflow_tracking import SweepRecorder, check_store, default_tracking_uri
from search_spaces import describe, space_to_yaml
from smpl_core.uri import is_uri
from trainables import evaluation_at
from tune_smpl.options import TuneOptions
from tune_smpl.plan import prepare
from tune_smpl.sweep import cluster, summary
from tune_smpl.sweep.prior import describe as describe_prior
from tune_smpl.sweep.record import SweepStatus
from tune_smpl.sweep.record_writer import retry_s
from tune_smpl.sweep.run import new_record, run_sweep
from tune_smpl.sweep.stop import STOP
from tune_smpl.sweep.study import asha_caution
from tune_smpl.sweep.sync import best_model, end_args, finish
from tune_smpl.sweep.tracking import Tracking, sweep_params

EX_TEMPFAIL = 75  # sysexits.h: a temporary failure (the storage); try again later


def _quiet_libraries() -> None:
    """The progress line is the sweep's output; library chatter goes below WARNING."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # The best model is pickled on purpose (`load_model` returns the module itself).
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)


def run(args: argparse.Namespace | TuneOptions) -> int:
    with STOP.installed():  # a Ctrl-C is a stop request, taken at a safe point (stop.py)
        return _run(args)


def _run(args: argparse.Namespace | TuneOptions) -> int:
    _quiet_libraries()
    plan = prepare(TuneOptions.of(args))  # args: the parsed flags, or tune_smpl.tune's options
    retry_s()  # TUNE_SMPL_STORAGE_RETRY_S checked before Ray starts (record_writer.py)
    base, space, settings, record, prior = (plan.base, plan.space, plan.settings, plan.record,
                                            plan.prior)
    tracking = _tracking(plan.tracking_uri, settings)
    with ThreadPoolExecutor(1) as pool:
        # A process's first open of the MLflow store (SQLite: its schema checked, about
        # 0.5 s) runs while Ray starts, which mostly waits on processes of its own.
        opened = pool.submit(_open_recorder, tracking, settings.name)
        # A local Ray offers what this command asks, else what the resumed sweep started with.
        info = cluster.connect(args.address, _given(args.num_cpus, settings.num_cpus),
                               _given(args.num_gpus, settings.num_gpus))
        recorder = opened.result()
    try:
        if record is None and STOP.requested:  # before the record claims the name
            raise KeyboardInterrupt
        # What only the cluster can answer, checked, then a settings object of its own (the
        # plan's settings stay as the options gave them).
        gpus = settings.gpus_per_trial  # a resumed sweep keeps the shares it started with
        if record is None:
            gpus = (cluster.default_gpus_per_trial(info) if args.gpus_per_trial is None
                    else args.gpus_per_trial)
        cluster.check_resources(info, gpus, settings.cpus_per_trial)
        cluster.check_storage(info, settings.storage_path, args.shared_storage)
        slots = settings.max_concurrent or cluster.trial_slots(info, gpus,
                                                               settings.cpus_per_trial)
        settings = replace(settings, gpus_per_trial=gpus, max_concurrent=slots)
        if record is None:
            if prior is not None:  # the prior's best, as many as the trial slots by default
                prior.plan(settings.warm_start_top or settings.max_concurrent,
                           settings.num_samples)
            record = new_record(settings, base, space, tracking, prior)
        meta = record.meta()
        sampler = meta["sampler"]
        print(f"{info.describe()}")
        print(f"sweep {settings.name}: {settings.num_samples} trials of {base.method} on "
              f"{base.dataset}, {settings.gpus_per_trial:g} GPU + {settings.cpus_per_trial:g} "
              f"CPU each, up to {settings.max_concurrent} at once, record in {record.uri}")
        print(_sampler_line(sampler))
        caution = asha_caution(settings.sampler, settings.grace_period,
                               evaluation_at(base.steps, base.eval_every))
        if caution:
            print(caution)
        if prior is not None:
            print(prior.line())
        elif (kept := describe_prior(meta.get("warm_start"))) is not None:
            print(kept + " (kept from its record)")
        if settings.fixed:
            print(f"fixed by --set (not searched): {', '.join(settings.fixed)}")
        print("searching:\n  " + "\n  ".join(describe(space)), flush=True)
        mlflow = Tracking(_recorder(recorder, settings, space, sampler, meta.get("warm_start")),
                          settings.name)
        result = run_sweep(record, base, space, settings, mlflow)
        return close(result, settings, mlflow)
    finally:
        if info.started_here:
            import ray

            ray.shutdown()


def close(result, settings, mlflow) -> int:
    """The end of a command's run of a sweep, in order: the summary, MLflow's parent run,
    the report, then MLflow's queued writes waited for (at most a minute, not at all after
    a second Ctrl-C) and what MLflow missed filled in from the record (sync.finish).
    Exit 130 when interrupted, 1 when no trial gave a measurement, else 0; 75 (EX_TEMPFAIL)
    when the record's storage failed (its one line instead of the summary: the record
    would not back one)."""
    def catch_up(mark: bool = True):
        if line := finish(mlflow, result.record, settings.storage_path, lambda: STOP.hurried,
                          mark=mark):
            print(line, flush=True)

    if result.storage_failure is not None:
        print(summary.storage_line(result, settings), file=sys.stderr, flush=True)
        mlflow.end_sweep(**end_args(result))
        # Not marked complete: MLflow may have a trial whose record write was lost, and
        # a resumed sweep trusts the mark to open a trial the record lacks without a search.
        with contextlib.suppress(OSError):  # a backfill reads the record: maybe not now
            catch_up(mark=False)
        return EX_TEMPFAIL
    if result.status == SweepStatus.INTERRUPTED:  # a Ctrl-C now is only counted (stop.py)
        summary.print_interrupted(result, settings)
        mlflow.end_sweep(**end_args(result))
        catch_up()
        return 130
    summary.print_finished(result, settings, mlflow.uri)
    top = result.pick.trial
    # The model is read from its checkpoint by the writer, and only if the run has none.
    mlflow.end_sweep(**end_args(result), model_from=top and (lambda: _best_model(result)))
    _publish(result, mlflow, settings)
    catch_up()
    return 0 if top is not None else 1


def _best_model(result):
    """The best trial's model from its checkpoint, or None (sync.best_model)."""
    return best_model(result)


def _publish(result, mlflow, settings) -> None:
    """The report (of the SweepResult the sweep returned) into the sweep's folder and onto
    the parent run; prints where it is. The report's modules (plotly, matplotlib, Optuna's
    visualisations with scipy and scikit-learn: 2.7 s on a 2-core CPU) are imported here, at
    the sweep's end, not before its first trial (issue 26)."""
    try:
        from tune_smpl.report.publish import publish

        for line in publish(result.record, mlflow, settings.storage_path, result):
            print(line)
    except Exception as e:  # noqa: BLE001 - the sweep's result stands without its report
        logging.getLogger(__name__).warning(
            "report of sweep %s not written (tune-smpl report %s writes it): %s",
            settings.name, settings.name, e)


def _sampler_line(s: dict) -> str:
    if s["sampler"] == "random":
        return f"sampler: random (seed {s['sampler_seed']})"
    extra = ", multivariate, constant liar" if s["sampler"] == "tpe" else ""
    n, prior = s["sampler_startup_trials"], s.get("sampler_startup_prior", 0)
    startup = f"{n} random start-up trials"
    if prior:  # the model counts the prior's finished trials towards its start-up
        startup = (f"{n} start-up trials, met by {prior} prior trials" if prior >= n else
                   f"{n} start-up trials, {prior} met by prior trials, {n - prior} random")
    return f"sampler: {s['sampler']} (seed {s['sampler_seed']}, {startup}{extra})"


def _given(value, recorded):
    return recorded if value is None else value


def _tracking(given: str | None, settings) -> str:
    runs_dir = (Path("runs").resolve() if is_uri(settings.storage_path)
                else Path(settings.storage_path))
    uri = given or default_tracking_uri(str(runs_dir))
    check_store(uri)
    return uri


def _open_recorder(tracking_uri: str, name: str):
    """The sweep's recorder, its store open; None if the store fails now (the sweep runs
    on; its record has everything)."""
    try:
        return SweepRecorder(tracking_uri, name)
    except Exception as e:  # noqa: BLE001 - MLflow never stops a sweep
        _not_recorded(name, e)
        return None


def _recorder(recorder, settings, space: dict, sampler: dict, warm_start: dict | None = None):
    """`recorder` with the sweep's MLflow parent run (reopened when resumed); None without
    a recorder or if the store fails now. A warm start's prior sweeps are in the settings
    (`warm_start`); what they gave is logged with them."""
    if recorder is None:
        return None
    try:  # the params as `tune-smpl sync` logs them too
        recorder.start_sweep(sweep_params(settings.as_params(), sampler, warm_start),
                             space_to_yaml(space), resume=True)
        return recorder
    except Exception as e:  # noqa: BLE001 - MLflow never stops a sweep
        _not_recorded(settings.name, e)
        return None


def _not_recorded(name: str, e: Exception) -> None:
    logging.getLogger(__name__).warning("MLflow: sweep %s not recorded: %s", name, e)

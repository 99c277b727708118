"""`tune-smpl tune`: launch (or resume) a sweep on this machine or on a Ray cluster."""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from smpl_core.errors import ConfigError
from smpl_core.uri import is_uri
from tune_smpl.commands.train import build_config
from tune_smpl.sweep import summary


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="run a hyperparameter sweep (Ray Tune + Optuna + ASHA)")
    p.add_argument("--config", help="base config: flat YAML of SMPLConfig fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="fix a field (a searched field is removed from the space)")
    p.add_argument("--dataset", help="shorthand for --set dataset=D (default digits)")
    p.add_argument("--space", default="smpl", help="preset (smpl, smpl-extended) or YAML file")
    p.add_argument("--num-samples", type=int, default=8, help="trials in all (default 8)")
    p.add_argument("--sampler", default="tpe", help="tpe (default) | random | gp")
    p.add_argument("--max-concurrent", type=int, default=0, help="0: as resources allow")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="fraction of a GPU per trial (default 0.25 with GPUs, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--memory-per-trial", type=float, default=None, metavar="GB",
                   help="RAM per trial: Ray reserves it; a CPU trial that needs more ends "
                        "as out_of_memory, not retried")
    p.add_argument("--max-failures", type=int, default=2, metavar="N",
                   help="restarts of a trial whose process died, from its last checkpoint")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to offer")
    p.add_argument("--num-gpus", type=int, default=None,
                   help="local Ray only: GPUs to offer (default: detected)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS")
    p.add_argument("--finalists", type=int, default=0, metavar="K",
                   help="retrain the K best search trials on fresh seeds when the search "
                        "ends; the best is then the finalist with the best mean (default 0)")
    p.add_argument("--finalist-seeds", type=int, default=2, metavar="S",
                   help="fresh seeds per finalist (default 2)")
    p.add_argument("--warm-start", action="append", metavar="SWEEP",
                   help="add the scored trials of this earlier sweep to the new study before "
                        "the first trial, and run its best configs first (repeatable)")
    p.add_argument("--warm-start-storage", metavar="PATH_OR_URI",
                   help="where the --warm-start sweeps are (default: --storage-path)")
    p.add_argument("--warm-start-top", type=int, default=None, metavar="K",
                   help="the prior's K best configs run first (default: the trial slots)")
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: reports before a stop")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    p.add_argument("--name", help="sweep name (default <dataset>-<date>-<time>)")
    p.add_argument("--storage-path", default="runs", help="local dir or URI (default ./runs)")
    p.add_argument("--shared-storage", action="store_true",
                   help="--storage-path is a shared filesystem (NFS) every node mounts there")
    p.add_argument("--address", help="join this Ray cluster (host:port or auto; or RAY_ADDRESS)")
    p.add_argument("--resume", action="store_true", help="resume the sweep --name")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--tracking-uri", help="MLflow store (default sqlite:///<runs>/mlflow.db)")
    p.set_defaults(func=run)


def prepare(args: argparse.Namespace):
    """Everything that can be checked before Ray starts: config, space, flags, names, and
    a warm start's prior. Returns (base, space, settings, record of a resumed sweep or
    None, prior of a new warm-started sweep or None)."""
    from search_spaces import fix, load_space
    from tune_smpl.sweep import prior as P
    from tune_smpl.sweep.cluster import absolute_data_dir, storage_path
    from tune_smpl.sweep.settings import SweepSettings

    storage = storage_path(args.storage_path)
    if args.resume:
        given = [f for f, v in (("--warm-start", args.warm_start),
                                ("--warm-start-storage", args.warm_start_storage),
                                ("--warm-start-top", args.warm_start_top)) if v is not None]
        if given:
            raise ConfigError(f"`{given[0]}` must not be given with --resume: a resumed sweep "
                              f"keeps the warm start it started with (in its record).")
        return (*_prepare_resume(args, storage), None)
    sets = list(args.set or [])
    if args.dataset:
        sets.insert(0, f"dataset={args.dataset}")
    base, given = build_config(args.config, sets)
    base = absolute_data_dir(base)
    space = load_space(args.space, base.to_dict())
    space, removed = fix(space, {k: getattr(base, k) for k in given})
    name = args.name or f"{base.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = SweepSettings(
        name=name, storage_path=storage, space=args.space, num_samples=args.num_samples,
        max_concurrent=args.max_concurrent, gpus_per_trial=args.gpus_per_trial or 0.0,
        cpus_per_trial=args.cpus_per_trial, memory_per_trial_gb=args.memory_per_trial,
        time_budget_s=args.time_budget, max_failures=args.max_failures,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, seed=args.seed,
        sampler=args.sampler, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        fixed=sorted(removed), finalists=args.finalists, finalist_seeds=args.finalist_seeds,
        warm_start=list(args.warm_start or []), warm_start_top=args.warm_start_top,
        warm_start_storage=(storage_path(args.warm_start_storage)
                            if args.warm_start_storage else None))
    settings.validate()
    if not space:
        raise ConfigError("`--space` must leave at least one field to search, but --set fixed "
                          "every one of them.")
    from tune_smpl.sweep.record import SweepRecord
    from tune_smpl.sweep.storage import SweepStorage

    if SweepRecord(SweepStorage(storage), name).exists():
        raise ConfigError(f"`--name` must be new (or pass --resume), but got --name={name!r}, "
                          f"which already exists in {storage}.")
    prior = (P.load(settings.warm_start, settings.warm_start_storage or storage, space)
             if settings.warm_start else None)
    return base, space, settings, None, prior


def _prepare_resume(args, storage: str):
    """A resumed sweep is the sweep that was started: its config, space and settings come
    from its record, not from this command's flags."""
    import tempfile

    from search_spaces import load_space
    from smpl_core.config import SMPLConfig
    from tune_smpl.sweep.record import open_sweep, sweeps_in
    from tune_smpl.sweep.settings import SweepSettings
    from tune_smpl.sweep.storage import SweepStorage

    if not args.name:
        found = sweeps_in(SweepStorage(storage))
        raise ConfigError("`--resume` needs `--name` of the sweep to resume; found: "
                          f"{', '.join(found) or 'none'}.")
    record = open_sweep(storage, args.name, what="--name")
    meta = record.meta()
    record.trials()  # a damaged trial record refuses the resume here, before Ray starts
    settings = SweepSettings.from_dict({**meta["settings"], "storage_path": storage})
    base = SMPLConfig.from_dict(meta["base"])
    args.tracking_uri = args.tracking_uri or meta["tracking_uri"]
    with tempfile.TemporaryDirectory() as d:  # the record may be on an object store
        path = Path(d) / "space.yaml"
        path.write_text(record.space_yaml())
        space = load_space(str(path), base.to_dict())
    return base, space, settings, record


def _quiet_libraries() -> None:
    """The progress line is the sweep's output; library chatter goes below WARNING."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # The best model is pickled on purpose (`load_model` returns the module itself).
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    from tune_smpl.sweep.stop import STOP

    with STOP.installed():  # a Ctrl-C is a stop request, taken at a safe point (stop.py)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from search_spaces import describe
    from trainables import evaluation_at
    from tune_smpl.sweep import cluster
    from tune_smpl.sweep.prior import describe as describe_prior
    from tune_smpl.sweep.run import new_record, run_sweep
    from tune_smpl.sweep.stop import STOP
    from tune_smpl.sweep.study import asha_caution
    from tune_smpl.sweep.tracking import Tracking

    _quiet_libraries()
    base, space, settings, record, prior = prepare(args)
    tracking = _tracking(args, settings)
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
        if record is None:  # a resumed sweep keeps the shares it started with
            gpus = args.gpus_per_trial
            settings.gpus_per_trial = (cluster.default_gpus_per_trial(info) if gpus is None
                                       else gpus)
        cluster.check_resources(info, settings.gpus_per_trial, settings.cpus_per_trial)
        cluster.check_storage(info, settings.storage_path, args.shared_storage)
        if not settings.max_concurrent:
            settings.max_concurrent = cluster.trial_slots(info, settings.gpus_per_trial,
                                                          settings.cpus_per_trial)
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
        elif meta.get("warm_start"):
            print(describe_prior(meta["warm_start"]) + " (kept from its record)")
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
    the report. Exit 130 when interrupted, 1 when no trial gave a measurement, else 0."""
    if result.status == "interrupted":  # a Ctrl-C now is only counted (stop.py)
        summary.print_interrupted(result, settings)
        mlflow.end_sweep(status="KILLED", sweep_status="interrupted", figures={})
        return 130
    summary.print_finished(result, settings, mlflow.uri)
    pick = result.pick
    top = pick.trial
    mlflow.end_sweep(status="FINISHED", sweep_status="finished", figures=result.figures(),
                     best=top and {"trial_id": top.key, "config": top.config},
                     model=top and _best_model(result), measure=pick.measure)
    _publish(result.record, mlflow, settings)
    return 0 if top is not None else 1


def _best_model(result):
    """The best trial's model, rebuilt from its checkpoint alone; None if there is none or
    it cannot be read (the sweep's result stands without it)."""
    from trainables import load_model

    uri = result.best_checkpoint()
    if uri is None:
        return None
    try:
        return load_model(uri)
    except Exception as e:  # noqa: BLE001 - a damaged or missing checkpoint costs the model
        logging.getLogger(__name__).warning("best model of sweep %s not loaded from %s: %s",
                                            result.record.name, uri, e)
        return None


def _publish(record, mlflow, settings) -> None:
    """The report into the sweep's folder and onto the parent run; prints where it is."""
    from tune_smpl.report.publish import publish

    try:
        for line in publish(record, mlflow, settings.storage_path):
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


def _tracking(args, settings) -> str:
    from mlflow_tracking import check_store, default_tracking_uri

    runs_dir = (Path("runs").resolve() if is_uri(settings.storage_path)
                else Path(settings.storage_path))
    uri = args.tracking_uri or default_tracking_uri(str(runs_dir))
    check_store(uri)
    return uri


def _open_recorder(tracking_uri: str, name: str):
    """The sweep's recorder, its store open; None if the store fails now (the sweep runs
    on; its record has everything)."""
    from mlflow_tracking import SweepRecorder

    try:
        return SweepRecorder(tracking_uri, name)
    except Exception as e:  # noqa: BLE001 - MLflow never stops a sweep
        _not_recorded(name, e)
        return None


def _recorder(recorder, settings, space: dict, sampler: dict, warm_start: dict | None = None):
    """`recorder` with the sweep's MLflow parent run (reopened when resumed); None without
    a recorder or if the store fails now. A warm start's prior sweeps are in the settings
    (`warm_start`); what they gave is logged with them."""
    from search_spaces import space_to_yaml

    if recorder is None:
        return None
    warm = {}
    if warm_start:
        warm = {"warm_start_trials": warm_start["trials"],
                "warm_start_enqueued": warm_start["enqueued"],
                "warm_start_storages": sorted({s["storage"] for s in warm_start["sweeps"]})}
    try:
        recorder.start_sweep({**settings.as_params(), **sampler, **warm}, space_to_yaml(space),
                             resume=True)
        return recorder
    except Exception as e:  # noqa: BLE001 - MLflow never stops a sweep
        _not_recorded(settings.name, e)
        return None


def _not_recorded(name: str, e: Exception) -> None:
    logging.getLogger(__name__).warning("MLflow: sweep %s not recorded: %s", name, e)

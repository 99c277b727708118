"""`tune-smpl tune`: launch (or resume) a sweep on this machine or on a Ray cluster."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from smpl_core.config import SMPLConfig
from tune_smpl.train_cmd import build_config


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="run a hyperparameter sweep (Ray Tune + Optuna + ASHA)")
    p.add_argument("--config", help="base config: flat YAML of SMPLConfig fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="fix a field (a searched field is removed from the space)")
    p.add_argument("--dataset", help="shorthand for --set dataset=D (default digits)")
    p.add_argument("--space", default="smpl", help="preset (smpl, smpl-extended) or YAML file")
    p.add_argument("--num-samples", type=int, default=8, help="trials in all (default 8)")
    p.add_argument("--max-concurrent", type=int, default=0, help="0: as resources allow")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="fraction of a GPU per trial (default 0.25 with GPUs, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--memory-per-trial", type=float, default=None, metavar="GB",
                   help="RAM per trial: Ray reserves it; a CPU trial that needs more ends "
                        "as errored (out of memory), not retried")
    p.add_argument("--max-failures", type=int, default=2, metavar="N",
                   help="restarts of a trial whose process died, from its last checkpoint")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to offer")
    p.add_argument("--num-gpus", type=int, default=None,
                   help="local Ray only: GPUs to offer (default: detected)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS")
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: reports before a stop")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    p.add_argument("--name", help="sweep name (default <dataset>-<date>-<time>)")
    p.add_argument("--storage-path", default="runs", help="local dir or URI (default ./runs)")
    p.add_argument("--shared-storage", action="store_true",
                   help="--storage-path is a shared filesystem (NFS) every node mounts there")
    p.add_argument("--address", help="join this Ray cluster (host:port or auto; or RAY_ADDRESS)")
    p.add_argument("--resume", action="store_true", help="resume the sweep --name")
    p.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler")
    p.add_argument("--tracking-uri", help="MLflow store (default sqlite:///<runs>/mlflow.db)")
    p.set_defaults(func=run)


def _storage(path: str) -> str:
    from tune_smpl.cluster import storage_path

    return storage_path(path)  # file:// -> its local path; other URIs probed with pyarrow


def _existing(storage_path: str) -> list[str]:
    root = Path(storage_path)
    if "://" in storage_path or not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "tuner.pkl").is_file())


def prepare(args: argparse.Namespace):
    """Everything that can be checked before Ray starts: config, space, flags, names."""
    from search_spaces import describe, fix, load_space
    from tune_smpl.cluster import absolute_data_dir
    from tune_smpl.sweep import SweepSettings

    storage = _storage(args.storage_path)
    existing = _existing(storage)
    if args.resume:
        return _prepare_resume(args, storage, existing)
    sets = list(args.set or [])
    if args.dataset:
        sets.insert(0, f"dataset={args.dataset}")
    base = absolute_data_dir(build_config(args.config, sets))
    space = load_space(args.space, base.to_dict())
    explicit = set(_set_keys(sets)) | (set(_config_keys(args.config)))
    space, removed = fix(space, {k: getattr(base, k) for k in explicit})
    name = args.name or f"{base.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if name in existing:
        raise ValueError(f"`--name` must be new (or pass --resume), but got --name={name!r}, "
                         f"which already exists in {storage}.")
    settings = SweepSettings(
        name=name, storage_path=storage, space=args.space, num_samples=args.num_samples,
        max_concurrent=args.max_concurrent, gpus_per_trial=args.gpus_per_trial or 0.0,
        cpus_per_trial=args.cpus_per_trial, memory_per_trial_gb=args.memory_per_trial,
        time_budget_s=args.time_budget, max_failures=args.max_failures,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, seed=args.seed,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus, fixed=sorted(removed))
    settings.validate()
    if not space:
        raise ValueError("`--space` must leave at least one field to search, but --set fixed "
                         "every one of them.")
    return base, space, settings, describe(space)


def _prepare_resume(args, storage: str, existing: list[str]):
    """A resumed sweep is the sweep that was started: its config, space and settings come
    from its record, not from this command's flags."""
    from search_spaces import describe, load_space
    from tune_smpl.sweep import load_record

    if not args.name:
        raise ValueError("`--resume` needs `--name` of the sweep to resume; found: "
                         f"{', '.join(existing) or 'none'}.")
    if "://" not in storage and args.name not in existing:
        raise ValueError(f"`--name` must be an existing sweep to resume, but got "
                         f"--name={args.name!r}; found in {storage}: "
                         f"{', '.join(existing) or 'none'}.")
    settings, base, space_file, tracking_uri = load_record(storage, args.name)
    args.tracking_uri = args.tracking_uri or tracking_uri  # the runs it continues live there
    space = load_space(str(space_file), base.to_dict())
    return base, space, settings, describe(space)


def _set_keys(sets: list[str]) -> list[str]:
    return [s.partition("=")[0].strip() for s in sets]


def _config_keys(path: str | None) -> list[str]:
    from smpl_core.config import load_yaml

    return list(load_yaml(path)) if path else []


def _quiet_libraries() -> None:
    """The progress line is the sweep's output; library chatter goes below WARNING."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # The best model is pickled on purpose (`load_model` returns the module itself).
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    from tune_smpl import cluster

    _quiet_libraries()
    base, space, settings, lines = prepare(args)
    tracking = _tracking(args, settings)
    # A local Ray offers what this command asks, else what the resumed sweep started with.
    info = cluster.connect(args.address, _given(args.num_cpus, settings.num_cpus),
                           _given(args.num_gpus, settings.num_gpus))
    try:
        if not args.resume:  # a resumed sweep keeps the shares it started with
            gpus = args.gpus_per_trial
            settings.gpus_per_trial = (cluster.default_gpus_per_trial(info) if gpus is None
                                       else gpus)
        cluster.check_resources(info, settings.gpus_per_trial, settings.cpus_per_trial)
        cluster.check_storage(info, settings.storage_path, args.shared_storage)
        if not settings.max_concurrent:
            settings.max_concurrent = cluster.trial_slots(info, settings.gpus_per_trial,
                                                          settings.cpus_per_trial)
        print(f"{info.describe()}")
        print(f"sweep {settings.name}: {settings.num_samples} trials of {base.method} on "
              f"{base.dataset}, {settings.gpus_per_trial:g} GPU + {settings.cpus_per_trial:g} "
              f"CPU each, up to {settings.max_concurrent} at once, results in "
              f"{settings.storage_path}/{settings.name}")
        if settings.fixed:
            print(f"fixed by --set (not searched): {', '.join(settings.fixed)}")
        print("searching:\n  " + "\n  ".join(lines), flush=True)
        return _sweep(base, space, settings, tracking, args.resume)
    finally:
        if info.started_here:
            import ray

            ray.shutdown()


def _given(value, recorded):
    return recorded if value is None else value


def _tracking(args, settings):
    from mlflow_tracking import check_store, default_tracking_uri

    runs_dir = settings.local_dir.parent if settings.local_dir else Path("runs").resolve()
    uri = args.tracking_uri or default_tracking_uri(str(runs_dir))
    check_store(uri)
    return uri


def _sweep(base: SMPLConfig, space: dict, settings, tracking_uri: str, resume: bool) -> int:
    from search_spaces import space_to_yaml
    from tune_smpl.mlflow_callback import MlflowSweepCallback
    from tune_smpl.progress import ProgressLine
    from tune_smpl.resume import prepare_resume
    from tune_smpl.sweep import build_tuner, max_iterations, save_record
    from tune_smpl.trial_errors import TrialErrorFile

    max_t = max_iterations(base)
    mlflow_cb = MlflowSweepCallback(tracking_uri, settings.name, max_t,
                                    settings=settings.as_params(),
                                    space_yaml=space_to_yaml(space), searched=sorted(space))
    callbacks = [ProgressLine(max_t, sorted(space)), mlflow_cb, TrialErrorFile()]
    if not resume:
        save_record(settings, base, space_to_yaml(space), tracking_uri)
    if resume:  # after a killed driver, files and runs can be ahead of Ray's snapshot
        prepare_resume(settings, tracking_uri)
    tuner = build_tuner(base, space, settings, callbacks, restore=resume)
    t0 = time.monotonic()
    try:
        results = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: Ray saved its state at the first one
        return _interrupted(settings, mlflow_cb)
    trials = results._experiment_analysis.trials
    budget_spent = settings.time_budget_s and time.monotonic() - t0 >= settings.time_budget_s
    unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
    if (unfinished or len(trials) < settings.num_samples) and not budget_spent:
        return _interrupted(settings, mlflow_cb)
    return _finish(results, settings, mlflow_cb)


def _interrupted(settings, mlflow_cb) -> int:
    mlflow_cb.close_open()
    print(f"\nsweep {settings.name} interrupted; its state is saved. Resume with:\n  "
          f"tune-smpl tune --name {settings.name} --storage-path "
          f"{shlex.quote(settings.storage_path)} --resume", flush=True)
    return 130


def _finish(results, settings, mlflow_cb) -> int:
    from trainables import load_checkpoint_state
    from tune_smpl.sweep import METRIC, MODE

    ok = [r for r in results if r.metrics and r.error is None
          and not r.metrics.get("diverged") and not r.metrics.get("oom")]
    if not ok:
        mlflow_cb.end_sweep(None, None)
        print("no trial finished without error or divergence (see the trials' error.txt "
              f"under {settings.storage_path}/{settings.name})", file=sys.stderr)
        return 1
    best = results.get_best_result(METRIC, MODE, scope="all", filter_nan_and_inf=True)
    model, metrics = None, best.metrics
    ckpt = best.get_best_checkpoint(METRIC, MODE) if best.best_checkpoints else None
    if ckpt is not None:  # the weights of the best report, not of the trial's last one
        model = _model_from_state(load_checkpoint_state(ckpt))
        metrics = next((m for c, m in best.best_checkpoints if c.path == ckpt.path), metrics)
    mlflow_cb.end_sweep({"metrics": metrics, "config": best.config,
                         "trial_id": best.metrics.get("trial_id"),
                         "checkpoint": ckpt.path if ckpt else None}, model)
    print(f"\nbest {METRIC} {metrics[METRIC]:.4f} (trial {best.metrics.get('trial_id')}, "
          f"step {metrics.get('step')}):")
    for k in mlflow_cb.searched:
        print(f"  {k}: {best.config.get(k)}")
    print(f"export it:  tune-smpl export {settings.name} --storage-path "
          f"{shlex.quote(settings.storage_path)} -o best.yaml\n"
          f"train it:   tune-smpl train --config best.yaml --eval-test\n"
          f"browse:     tune-smpl ui --tracking-uri {shlex.quote(mlflow_cb.tracking_uri)}")
    return 0


def _model_from_state(state: dict):
    import torch

    from smpl_core.data import load_splits
    from smpl_core.models import build_model, resolve_model_name

    cfg = SMPLConfig.from_dict({**state["config"], "device": "cpu"})
    splits = load_splits(cfg, torch.device("cpu"))
    role = "student" if "student" in state["models"] else "model"
    model = build_model(resolve_model_name(cfg.model, cfg.dataset), splits.input_shape,
                        splits.num_classes)
    model.load_state_dict(state["models"][role])
    return model.eval()


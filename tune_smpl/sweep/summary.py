"""How a command's run of a sweep ends: what it prints, and what MLflow gets, all from the
record through the ledger (the same outcomes, the same best)."""

from __future__ import annotations

import logging
import shlex
import sys

from tune_smpl.sweep import outcome as O
from tune_smpl.sweep.ledger import Ledger

log = logging.getLogger(__name__)
LABELS = {O.COMPLETED: "completed", O.EARLY_STOPPED: "stopped early",
          O.CUT_BY_BUDGET: "cut by budget", O.DIVERGED: "diverged", O.ERRORED: "errored",
          O.OUT_OF_MEMORY: "out of memory"}


def counts(trials) -> dict[str, int]:
    out = {o: 0 for o in O.OUTCOMES}
    for t in trials:
        if t.outcome in out:
            out[t.outcome] += 1
    return out


def figures(trials, wall_s: float) -> dict[str, float]:
    """The sweep's own numbers: the parent run's only metrics."""
    top = O.best(trials)
    out: dict[str, float] = {f"trials_{o}": n for o, n in counts(trials).items()}
    out.update(trials=len(trials), wall_s=round(wall_s, 2),
               trial_seconds=round(sum(t.seconds for t in trials), 2))
    if top is not None:
        out[f"best_{O.METRIC}"] = O.score(top.reports)[0]
    return out


def proposals(trials) -> str:
    by: dict[str, int] = {}
    for t in trials:
        by[t.proposed_by] = by.get(t.proposed_by, 0) + 1
    parts = [f"{by.pop('random', 0)} random start-up"]
    parts += [f"{n} proposed by {who.upper()}" for who, n in sorted(by.items())]
    return ", ".join(parts)


def reconcile_mlflow(ledger: Ledger) -> None:
    """A driver killed between the record and MLflow leaves runs behind the record: each
    finished trial's run gets its outcome (a missing run is created)."""
    for t in ledger.trials.values():
        if t.finished:
            ledger.to_mlflow("ensure_ended", t.key, t.name, t.config, t.outcome, t.error)


def interrupted(ledger: Ledger, settings, left) -> int:
    ledger.to_mlflow("end_sweep", None, None, "KILLED", None, {"sweep_status": "interrupted"})
    print(f"\nsweep {settings.name} interrupted: {len(left)} trial(s) unfinished "
          f"({', '.join(t.key for t in left)}); its record is saved. Resume with:\n  "
          f"{resume_command(settings)}", flush=True)
    return 130


def resume_command(settings) -> str:
    return (f"tune-smpl tune --name {settings.name} --storage-path "
            f"{shlex.quote(settings.storage_path)} --resume")


def finished(ledger: Ledger, settings, meta: dict) -> int:
    trials = list(ledger.trials.values())
    n = counts(trials)
    print(f"\nsweep {settings.name} finished: {len(trials)} trials: " + ", ".join(
        f"{n[o]} {LABELS[o]}" for o in O.OUTCOMES if n[o] or o in O.SCORED))
    print(f"proposals: {proposals(trials)}")
    top = O.best(trials)
    if top is None:
        ledger.to_mlflow("end_sweep", None, None, "FINISHED", figures(trials, meta["wall_s"]),
                       {"sweep_status": "finished"})
        report(ledger, settings)
        print("no trial gave a measurement of val_accuracy (" + ", ".join(
            f"{n[o]} {LABELS[o]}" for o in O.OUTCOMES if n[o]) + "); a failed trial's reason "
              f"is `error` in trial_<key>/trial.json under {ledger.record.uri}",
              file=sys.stderr)
        return 1
    value, row = O.score(top.reports)
    model = _best_model(ledger, top, row)
    ledger.to_mlflow("end_sweep", {"trial_id": top.key, "config": top.config}, model,
                   "FINISHED", figures(trials, meta["wall_s"]), {"sweep_status": "finished"})
    print(f"best {O.METRIC} {value:.4f} (trial {top.key}, {top.outcome}; its best report at "
          f"step {row.get('step')}):")
    for k in sorted(top.params):
        print(f"  {k}: {top.params[k]}")
    tracking = getattr(ledger.recorder, "tracking_uri", None)
    print(f"export it:  tune-smpl export {settings.name} --storage-path "
          f"{shlex.quote(settings.storage_path)} -o best.yaml\n"
          f"train it:   tune-smpl train --config best.yaml --eval-test"
          + (f"\nbrowse:     tune-smpl ui --tracking-uri {shlex.quote(tracking)}"
             if tracking else ""))
    report(ledger, settings)
    return 0


def report(ledger: Ledger, settings) -> None:
    """The sweep's report into its folder and onto the MLflow parent run (with the parent's
    description); prints where it is and the MLflow UI links."""
    try:
        from tune_smpl.report.publish import publish

        for line in publish(ledger, settings.storage_path):
            print(line)
    except Exception as e:  # noqa: BLE001 - the sweep's result stands without its report
        log.warning("report of sweep %s not written (tune-smpl report %s writes it): %s",
                    settings.name, settings.name, e)


def _best_model(ledger: Ledger, top, row: dict):
    """The weights of the best report (else the trial's newest checkpoint), or None."""
    from trainables import checkpoint_at, load_checkpoint_state

    storage, folder = ledger.record.storage, (ledger.record.name, top.name)
    names = [row.get("checkpoint_dir_name")] + sorted(
        (d for d in storage.list_dirs(*folder) if d.startswith("checkpoint_")), reverse=True)
    for name in names:
        if name and storage.exists(*folder, name):
            try:
                return model_from_state(load_checkpoint_state(
                    checkpoint_at(storage.uri(*folder, name))))
            except Exception as e:  # noqa: BLE001 - the sweep's result stands without it
                log.warning("best model of trial %s not loaded from %s: %s", top.key, name, e)
                return None
    return None


def model_from_state(state: dict):
    import torch

    from smpl_core.config import SMPLConfig
    from smpl_core.data import load_splits
    from smpl_core.models import build_model, resolve_model_name

    cfg = SMPLConfig.from_dict({**state["config"], "device": "cpu"})
    splits = load_splits(cfg, torch.device("cpu"))
    role = "student" if "student" in state["models"] else "model"
    model = build_model(resolve_model_name(cfg.model, cfg.dataset), splits.input_shape,
                        splits.num_classes)
    model.load_state_dict(state["models"][role])
    return model.eval()

"""The Ray Tune function trainable around smpl_core's loop: the only package (with
tune_smpl) that calls Ray, and the only one that calls tune.report / tune.get_checkpoint.

`load_model(checkpoint)` rebuilds a trial's evaluated model from its checkpoint alone (no
dataset, no Ray); checkpoints load with `torch.load(weights_only=True)` only.

Importing it imports no torch (the driver needs none): `load_model` and `load_state` are
imported from trainables.checkpoint on first use (PEP 562), and trainables.train imports
torch inside the trial."""

from trainables.names import RESTORE_FIELD, STATE_FILE, TIME_ATTR, evaluation_at
from trainables.train import (
    checkpoint_at,
    load_checkpoint_state,
    train_smpl,
    with_resources,
    write_checkpoint,
)

__all__ = ["RESTORE_FIELD", "STATE_FILE", "TIME_ATTR", "checkpoint_at", "evaluation_at",
           "load_checkpoint_state", "load_model", "load_state", "train_smpl",
           "with_resources", "write_checkpoint"]
_CHECKPOINT = ("load_model", "load_state")


def __getattr__(name: str):
    if name in _CHECKPOINT:
        from trainables import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")

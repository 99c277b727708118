"""The Ray Tune function trainable around smpl_core's loop: the only package (with
tune_smpl) that calls Ray, and the only one that calls tune.report / tune.get_checkpoint.

`load_model(checkpoint)` rebuilds a trial's evaluated model from its checkpoint alone (no
dataset, no Ray); checkpoints load with `torch.load(weights_only=True)` only."""

from trainables.checkpoint import STATE_FILE, load_model, load_state
from trainables.train import (
    RESTORE_FIELD,
    TIME_ATTR,
    checkpoint_at,
    evaluation_at,
    load_checkpoint_state,
    train_smpl,
    with_resources,
    write_checkpoint,
)

__all__ = ["RESTORE_FIELD", "STATE_FILE", "TIME_ATTR", "checkpoint_at", "evaluation_at",
           "load_checkpoint_state", "load_model", "load_state", "train_smpl",
           "with_resources", "write_checkpoint"]

"""The Ray Tune function trainable around smpl_core's loop: the only package (with
tune_smpl) that calls Ray, and the only one that calls tune.report / tune.get_checkpoint."""

from trainables.train import (
    RESTORE_FIELD,
    TIME_ATTR,
    checkpoint_at,
    load_checkpoint_state,
    train_smpl,
    with_resources,
)

__all__ = ["RESTORE_FIELD", "TIME_ATTR", "checkpoint_at", "load_checkpoint_state",
           "train_smpl", "with_resources"]

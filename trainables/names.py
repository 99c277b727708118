"""What the driver (tune_smpl) and the trainable agree on, without torch: the Tune config
entries that are not SMPLConfig fields, the checkpoint's file name, and how reports are
counted."""

from __future__ import annotations

import math

RESTORE_FIELD = "restore_from"  # a checkpoint folder (path or URI) a resumed trial continues
TIME_ATTR = "evaluation"  # reports so far, counted from step 0 across restarts and resumes
STATE_FILE = "state.pt"  # a trial checkpoint's one file (trainables.checkpoint)


def evaluation_at(step: int, eval_every: int) -> int:
    """TIME_ATTR of a report at `step`: the loop evaluates every `eval_every` steps and at
    its last step, so a run of `steps` steps reports evaluation_at(steps, eval_every) times."""
    return math.ceil(step / eval_every)

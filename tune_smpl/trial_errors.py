"""`error.txt` for a trial that ran out of memory, where Ray puts one for a trial that raised.

Such a trial ends with a last report (`oom`, `error`) rather than an exception, so that Ray
does not retry it (see trainables.train); this driver callback writes its reason next to
its results, `<storage>/<sweep>/trial_<id>/error.txt`, like Ray's own error files (the
driver's copy of the trial folder, which Ray uploads with the experiment state).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ray.tune import Callback

ERROR_FILE = "error.txt"
log = logging.getLogger(__name__)


class TrialErrorFile(Callback):
    def on_trial_complete(self, iteration, trials, trial, **info):
        error = (trial.last_result or {}).get("error")
        if not error or not trial.local_path:
            return
        try:
            path = Path(trial.local_path) / ERROR_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:  # "a": Ray appends one entry per failure as well
                fh.write(f"{error.rstrip()}\n")
        except OSError as e:  # the sweep goes on; MLflow has the same text
            log.warning("could not write %s for trial %s: %s", ERROR_FILE, trial.trial_id, e)

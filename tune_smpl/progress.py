"""One compact live progress line instead of Ray's trial tables."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

METRIC = "val_accuracy"


def trial_outcome(trial, max_iterations: int, ended: bool = False) -> str:
    """completed | early_stopped | errored | diverged | running | pending, from Ray's view.

    `ended`: called from on_trial_complete, where Ray has not yet marked the trial
    TERMINATED.
    """
    last = trial.last_result or {}
    if trial.status == "ERROR" or last.get("oom"):  # out of memory ends with a last report
        return "errored"
    if last.get("diverged"):
        return "diverged"
    if ended or trial.status == "TERMINATED":
        finished = last.get("training_iteration", 0) >= max_iterations
        return "completed" if finished else "early_stopped"
    return "running" if trial.status == "RUNNING" else "pending"


def best_so_far(trials) -> tuple[float | None, object | None]:
    best, best_trial = None, None
    for t in trials:
        stats = (t.metric_analysis or {}).get(METRIC) or {}
        v = stats.get("max")
        if v is not None and (best is None or v > best):
            best, best_trial = v, t
    return best, best_trial


class ProgressLine(Callback):
    """running / completed / stopped early / failed, the best val_accuracy and elapsed time.

    On a terminal the line rewrites itself; in a log it prints when the counts change or
    every `log_every_s` seconds.
    """

    def __init__(self, max_iterations: int, searched: list[str], log_every_s: float = 30.0):
        self.max_iterations = max_iterations
        self.searched = searched
        self.log_every_s = log_every_s
        self._t0 = time.monotonic()
        self._last_line, self._last_print = "", 0.0

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_last")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._t0, self._last_line, self._last_print = time.monotonic(), "", 0.0

    def line(self, trials) -> str:
        counts: dict[str, int] = {}
        for t in trials:
            o = trial_outcome(t, self.max_iterations)
            counts[o] = counts.get(o, 0) + 1
        best, trial = best_so_far(trials)
        elapsed = time.monotonic() - self._t0
        parts = [f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}]",
                 f"running {counts.get('running', 0)}", f"pending {counts.get('pending', 0)}",
                 f"done {counts.get('completed', 0)}",
                 f"stopped early {counts.get('early_stopped', 0)}",
                 f"failed {counts.get('errored', 0) + counts.get('diverged', 0)}"]
        if best is not None:
            cfg = ", ".join(f"{k}={_fmt(trial.config.get(k))}" for k in self.searched)
            parts.append(f"best {METRIC} {best:.4f} ({cfg})")
        return " | ".join(parts)

    def on_step_end(self, iteration: int, trials, **info):
        line = self.line(trials)
        now = time.monotonic()
        if sys.stdout.isatty():
            if now - self._last_print > 0.5:
                sys.stdout.write("\r\033[K" + line[:200])
                sys.stdout.flush()
                self._last_print = now
        elif _counts(line) != _counts(self._last_line) or now - self._last_print > self.log_every_s:
            print(line, flush=True)
            self._last_print = now
        self._last_line = line

    def on_experiment_end(self, trials, **info):
        if sys.stdout.isatty():
            sys.stdout.write("\n")
        print(self.line(trials), flush=True)


def _counts(line: str) -> str:
    return line.split("|", 1)[-1].split("| best")[0]


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

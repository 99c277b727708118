"""The sweep's record: the one owner of what happened, under `<storage-path>/<name>/`.

    sweep.json                 settings, base config, space, tracking URI, sampler, status,
                               and the finalist stage's plan (`finalists`), once it starts
    space.yaml                 the searched space (a space file `--space` reads back)
    prior.json                 a warm-started sweep's prior trials (`tune_smpl.sweep.prior`)
    trial_<key>/trial.json     one per search trial: params, config, reports and outcome
    finalist_<key>/trial.json  one per finalist run (`<trial key>_s<seed>`), the same fields

Ray's own files (checkpoints, experiment state, error.txt) sit beside it;
`--resume`, `export` and `report` read this record only, so they work from any machine
that can read the storage, after the Ray cluster is gone. The Optuna study is derived
from it (`tune_smpl.sweep.study`); so is every MLflow run's status.

A file of the record that does not read as one (cut short by a failed upload or a full
disk, a JSON error from a hand edit, a field missing or of the wrong type) is a
`DamagedRecord`: one line naming the file, what is wrong and what to do. `trials()` refuses
a record with one (`--resume` must not guess); `scan()` gives the intact trials and the
damaged ones, for `export` and `report`, which go on without them and say so. A damaged
sweep.json (`meta()`) stops every command.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from smpl_core.errors import ConfigError
from tune_smpl.sweep.outcome import OUTCOMES, Outcome, score
from tune_smpl.sweep.record_writer import RecordWriter
from tune_smpl.sweep.storage import SweepStorage, json_text

SWEEP_FILE, SPACE_FILE, TRIAL_FILE = "sweep.json", "space.yaml", "trial.json"
# Ray's bookkeeping fields that a report keeps (the rest of them are not measurements).
KEPT_RAY_FIELDS = ("checkpoint_dir_name", "time_this_iter_s", "ray_node_id", "pid",
                   "started_at", "reported_at")


SEARCH, FINALIST = "search", "finalist"  # a record's role: a search trial, a finalist run
_PREFIX = {SEARCH: "trial_", FINALIST: "finalist_"}
READERS = 16  # trial.json reads at once on a storage URI


def folder_of(key: str, role: str = SEARCH) -> str:
    return f"{_PREFIX[role]}{key}"


class SweepStatus(StrEnum):
    """sweep.json's `status` (a `StrEnum`: the record holds the same strings as before)."""

    NEW = "new"  # claimed, no run of the command has started it yet
    RUNNING = "running"  # a command runs it (or was killed while it did)
    FINISHED = "finished"
    INTERRUPTED = "interrupted"  # stopped (Ctrl-C, a storage that failed): `--resume` it


class DamagedRecord(ConfigError):
    """A file of a sweep's record that cannot be read as a record: `uri` (the file, as
    storage.uri gives it), `problem` (the JSON error with its line and column, or the field
    missing or of the wrong type), `remedy` (what to do)."""

    def __init__(self, uri: str, problem: str, remedy: str):
        self.uri, self.problem, self.remedy = uri, problem, remedy
        super().__init__(f"the sweep record file {uri} must be intact, but {problem}; "
                         f"{remedy}.")

    @property
    def short(self) -> str:
        """`<uri> (<problem>)`: the file and what is wrong, for a list of skipped files."""
        return f"{self.uri} ({self.problem})"


def skipped(damaged: list[DamagedRecord]) -> str:
    """The line that says which damaged trial records a command went on without."""
    n = len(damaged)
    return (f"skipped {n} damaged trial record{'s' if n != 1 else ''}: "
            + "; ".join(d.short for d in damaged))


# The fields each file must have, and their types (a field absent from the optional ones
# takes its default). bool is no int here: `"number": true` is damage, not trial 1.
_NUMBER = (int, float)
_SWEEP_FIELDS = {"settings": dict, "base": dict, "sampler": dict, "tracking_uri": str,
                 "status": str, "runs": int, "wall_s": _NUMBER}
_TRIAL_FIELDS = {"key": str, "number": int, "params": dict, "distributions": dict,
                 "config": dict}
_TRIAL_OPTIONAL = {"proposed_by": str, "outcome": (str, type(None)), "interrupted": bool,
                   "reports": list, "error": (str, type(None)), "restarts": int,
                   "resumes": int, "started": bool, "created_at": _NUMBER,
                   "ended_at": (*_NUMBER, type(None)), "role": str,
                   "finalist_of": (str, type(None)), "restart_log": list}
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               bool: "true or false", float: "a number", type(None): "null"}


def _is(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    if types[:2] == _NUMBER:
        types = (float, *types[2:])
    return " or ".join(_TYPE_NAMES[t] for t in types)


def _parse(text: str) -> tuple[object, str | None]:
    """(the JSON value, None), or (None, what is wrong with the text)."""
    if not text.strip():
        return None, "it is empty" if not text else "it holds no JSON (only whitespace)"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        # The text ends where the JSON still goes on (a string left open runs to the end).
        if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string"):
            return None, f"it is cut short after {len(text)} characters (not valid JSON: {e})"
        return None, f"it is not valid JSON ({e})"


def _check_fields(d: dict, required: dict, optional: dict) -> str | None:
    """What is wrong with the fields of `d`, or None."""
    for name, types in required.items():
        if name not in d:
            return f"it has no field `{name}` ({_type_name(types)})"
    for name, types in {**required, **optional}.items():
        if name in d and not _is(d[name], types):
            return (f"its field `{name}` must be {_type_name(types)}, but is "
                    f"{json.dumps(d[name])[:80]}")
    return None


@dataclass
class TrialRecord:
    key: str  # `number`, zero-padded: also the trial folder and MLflow name
    number: int  # among the sweep's own trials (the study's, less a warm start's prior)
    params: dict[str, Any]  # the searched values
    distributions: dict[str, str]  # optuna.distributions JSON, to rebuild the study
    config: dict[str, Any]  # the full SMPLConfig mapping the trial runs
    proposed_by: str = "random"  # random (start-up) | tpe | gp | enqueued | prior (its best)
    outcome: Outcome | None = None  # one of outcome.OUTCOMES once it ended; None before
    interrupted: bool = False  # its sweep stopped while it ran; cleared by --resume
    reports: list[dict] = field(default_factory=list)
    error: str | None = None
    restarts: int = 0  # Ray restarted its process from a checkpoint
    # One entry per restart: when, the step it restarts from, the cause (restarts.py)
    restart_log: list[dict] = field(default_factory=list)
    resumes: int = 0  # `--resume` continued it after its sweep stopped
    started: bool = False  # a process ran it at least once
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    role: str = SEARCH  # search | finalist
    finalist_of: str | None = None  # a finalist run: the key of the search trial it retrains

    @property
    def name(self) -> str:
        return folder_of(self.key, self.role)

    @property
    def finished(self) -> bool:
        return self.outcome in OUTCOMES

    @property
    def last(self) -> dict:
        return self.reports[-1] if self.reports else {}

    @property
    def seconds(self) -> float:
        """The trial's own run time (sum of its reports' intervals): what it cost."""
        return float(sum(r.get("time_this_iter_s", 0.0) or 0.0 for r in self.reports))

    def best_report(self, metric: str = "val_accuracy", mode: str = "max") -> dict:
        return score(self.reports, metric, mode)[1]

    def add_report(self, result: dict) -> dict:
        """Keep a Tune result's measurements; a report of a step the trial already has
        (replayed after a restart) replaces it."""
        row = {k: v for k, v in result.items()
               if k in KEPT_RAY_FIELDS or (k not in _RAY_FIELDS and _plain(v))}
        step = row.get("step")
        self.reports = [r for r in self.reports if r.get("step") != step] + [row]
        self.reports.sort(key=lambda r: r.get("step", 0))
        return row

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrialRecord:
        names = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("outcome") is not None:  # trial.json holds its string value
            kw["outcome"] = Outcome(kw["outcome"])
        return cls(**kw)


_RAY_FIELDS = {"training_iteration", "time_total_s", "timestamp", "iterations_since_restore",
               "time_since_restore", "done", "trial_id", "date", "hostname", "node_ip",
               "config", "experiment_tag", "should_checkpoint"}


def _plain(v) -> bool:
    return isinstance(v, (bool, int, float, str)) or v is None


class SweepRecord:
    """Reads and writes one sweep's record in its storage."""

    def __init__(self, storage: SweepStorage, name: str):
        self.storage, self.name = storage, name
        # While a sweep runs, its writes go through a writer thread (record_writer.py), so
        # a storage that fails never holds up a trial; None: each write is made at once.
        self.writer: RecordWriter | None = None

    @property
    def uri(self) -> str:
        return self.storage.uri(self.name)

    def exists(self) -> bool:
        return self.storage.exists(self.name, SWEEP_FILE)

    def create(self, meta: dict, space_yaml: str) -> None:
        if not self.storage.create_new(json.dumps(meta, indent=1, default=str),
                                       self.name, SWEEP_FILE):
            raise ConfigError(f"`--name` must be new (or pass --resume), but got "
                              f"--name={self.name!r}, which is in use "
                              f"({self.storage.uri(self.name, SWEEP_FILE)} exists).")
        self.storage.write_text(space_yaml, self.name, SPACE_FILE)

    def meta(self) -> dict:
        """sweep.json, checked: a DamagedRecord if it does not read as one."""
        meta, problem = self._load_object(SWEEP_FILE)
        if problem is None:
            problem = _check_fields(meta, _SWEEP_FIELDS, {})
        if problem:
            raise DamagedRecord(self.storage.uri(self.name, SWEEP_FILE), problem,
                                "restore it from a backup: the sweep cannot be read, "
                                "exported, reported or resumed without it")
        return meta

    def save_meta(self, meta: dict) -> None:
        self._save(meta, SWEEP_FILE)

    def _save(self, obj: dict, *parts: str) -> None:
        if self.writer is None:
            self.storage.write_json(obj, self.name, *parts)
        else:  # the content as it is now, written (and retried) by the writer's thread
            self.writer.put(json_text(obj), self.name, *parts)

    def flush(self, give_up=lambda: False) -> bool:
        """The writer's files all on the storage (bounded while it fails: see
        record_writer.RecordWriter.flush); True without a writer."""
        return self.writer is None or self.writer.flush(give_up)

    @property
    def failing(self) -> bool:
        """The storage does not take the record's writes at this moment."""
        return self.writer is not None and self.writer.failing

    def space_yaml(self) -> str:
        return self.storage.read_text(self.name, SPACE_FILE)

    def trials(self) -> list[TrialRecord]:
        """Every trial record, by number; the first damaged one raises its DamagedRecord
        (what `--resume` needs: every trial, or a refusal that names the file)."""
        trials, damaged = self.scan()
        if damaged:
            raise damaged[0]
        return trials

    def finalists(self) -> list[TrialRecord]:
        """Every finalist run's record, in the order they ran; strict, as `trials()`."""
        runs, damaged = self.scan(FINALIST)
        if damaged:
            raise damaged[0]
        return runs

    def scan(self, role: str = SEARCH) -> tuple[list[TrialRecord], list[DamagedRecord]]:
        """(the records of `role` that read, by number; a DamagedRecord per one that does
        not, by folder): what `export` and `report` go on with, and what they skipped.
        One listing, then each folder's trial.json read (a folder without one is Ray's
        alone); on a storage URI the reads go in parallel (a GET each: 1,000 of them one
        after another took most of a resume's start-up)."""
        folders = [d for d in self.storage.list_dirs(self.name) if d.startswith(_PREFIX[role])]
        if self.storage.local or len(folders) < 2:
            got = [self._read_trial(d) for d in folders]
        else:
            with ThreadPoolExecutor(READERS) as pool:
                got = list(pool.map(self._read_trial, folders))
        out = [t for t in got if isinstance(t, TrialRecord)]
        damaged = [e for e in got if isinstance(e, DamagedRecord)]
        return sorted(out, key=lambda t: t.number), damaged

    def _read_trial(self, folder: str) -> TrialRecord | DamagedRecord | None:
        """The folder's trial record, what is wrong with it, or None: it has no record."""
        try:
            return self._trial(folder)
        except DamagedRecord as e:
            return e
        except OSError:  # pyarrow: FileNotFoundError locally, an OSError on S3
            if self.storage.exists(self.name, folder, TRIAL_FILE):
                raise
            return None

    def _load(self, *parts: str) -> tuple[object, str | None]:
        """(the JSON value of a file of the record, None), or (None, what is wrong)."""
        try:
            text = self.storage.read_text(self.name, *parts)
        except UnicodeDecodeError as e:  # other bytes (a disk that filled, a binary file)
            return None, f"it is not UTF-8 text ({e.reason} at byte {e.start})"
        return _parse(text)

    def _load_object(self, *parts: str) -> tuple[dict, str | None]:
        """(the JSON object of a file of the record, None), or ({}, what is wrong)."""
        value, problem = self._load(*parts)
        if problem is None and not isinstance(value, dict):
            problem = "it holds no JSON object"
        return (value if isinstance(value, dict) and problem is None else {}), problem

    def _trial(self, folder: str) -> TrialRecord:
        d, problem = self._load_object(folder, TRIAL_FILE)
        if problem is None:
            problem = _check_fields(d, _TRIAL_FIELDS, _TRIAL_OPTIONAL)
        if problem is None and d.get("role", SEARCH) not in _PREFIX:
            problem = (f"its field `role` must be {SEARCH} or {FINALIST}, but is "
                       f"{json.dumps(d['role'])[:80]}")
        if problem is None and folder_of(d["key"], d.get("role", SEARCH)) != folder:
            problem = f"its `key` {d['key']!r} is not its folder's ({folder})"
        if problem is None and not all(isinstance(r, dict) for r in d.get("reports", [])):
            problem = "its field `reports` must be a list of objects, but one is not"
        if problem is None and d.get("outcome") not in (None, *OUTCOMES):
            problem = (f"its field `outcome` must be one of {', '.join(OUTCOMES)} or null, "
                       f"but is {json.dumps(d['outcome'])[:80]}")
        if problem:
            raise DamagedRecord(
                self.storage.uri(self.name, folder, TRIAL_FILE), problem,
                "restore it from a backup: `--resume` needs every trial record (`export` "
                "and `report` go on without this trial)")
        return TrialRecord.from_dict(d)

    def save_trial(self, trial: TrialRecord) -> None:
        self._save(trial.to_dict(), trial.name, TRIAL_FILE)


def sweeps_in(storage: SweepStorage) -> list[str]:
    """The names of the sweeps this tool started under `storage`."""
    return [d for d in storage.list_dirs() if storage.exists(d, SWEEP_FILE)]


def open_sweep(storage_path: str, name: str, what: str = "sweep") -> SweepRecord:
    """The record of an existing sweep, or a ValueError naming the sweeps that exist
    (`what`: how the command calls the name, `sweep` or `--name`)."""
    storage = SweepStorage(storage_path)
    record = SweepRecord(storage, name)
    if not record.exists():
        found = sweeps_in(storage)
        raise ConfigError(f"`{what}` must be a sweep in {storage.uri()}, but got "
                          f"{what}={name!r}; found: {', '.join(found) or 'none'}.")
    return record

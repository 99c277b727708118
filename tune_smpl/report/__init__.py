"""A sweep's report: `report.html` (interactive, self-contained) plus one PNG per section,
and the short markdown that becomes the MLflow parent run's description.

    data.py         the sweep as the report sees it (values, importance), from the record
    interactive.py  plotly figures (Optuna's optuna.visualization where it fits)
    static.py       the same figures as matplotlib PNGs
    html.py         the page
    publish.py      the end of a sweep: write it into the sweep folder, log it to MLflow
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tune_smpl.report import html, static
from tune_smpl.report.data import SweepView, load_view
from tune_smpl.sweep.finalists import table
from tune_smpl.sweep.outcome import LABELS, METRIC, OUTCOMES
from tune_smpl.sweep.prior import describe as describe_prior
from tune_smpl.sweep.record import skipped
from tune_smpl.sweep.result import SweepResult
from tune_smpl.sweep.summary import knob_table

REPORT_DIR, HTML_FILE, NOTE_FILE = "report", "report.html", "description.md"


@dataclass
class Report:
    folder: Path
    html: Path
    pngs: dict[str, Path]
    description: str
    view: SweepView


def build_report(record, out: str | Path, storage_path: str | None = None,
                 result: SweepResult | None = None) -> Report:
    """Write the report of `record` (a SweepRecord) into the local folder `out`; from
    `result` when the command that ran the sweep has one (else read from the record)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    view = load_view(record, result)
    pngs = static.write_pngs(view, out)
    page = html.render(view, {k: p.name for k, p in pngs.items()})
    (out / HTML_FILE).write_text(page, encoding="utf-8")
    note = description(view, storage_path or record.storage.uri())
    (out / NOTE_FILE).write_text(note, encoding="utf-8")
    return Report(out, out / HTML_FILE, pngs, note, view)


def description(view: SweepView, storage_path: str) -> str:
    """The parent run's markdown description: outcomes, best, top knobs, what to run next."""
    n = len(view.trials)
    counts = ", ".join(f"{view.counts[o]} {LABELS[o]}" for o in OUTCOMES if view.counts[o])
    lines = [f"**Sweep `{view.name}`**: {n} trials ({counts or 'none finished'}).", ""]
    if view.damaged:
        lines += [f"Left out: {skipped(view.damaged)}.", ""]
    warm = describe_prior(view.meta.get("warm_start"))
    if warm:
        lines += [f"This sweep was {warm}.", ""]
    top = view.best
    if top is None:
        lines.append("No trial gave a measurement (every one diverged, errored or ran out "
                     "of memory): see `report/report.html` for their errors.")
        return "\n".join(lines) + "\n"
    lines += [f"Best `{METRIC}` **{view.best_value:.4f}**: trial `{top.key}` "
              f"({top.outcome}); {view.pick.note}.", ""]
    rows = [row for row in table(view.pick.ranked) if row.measured]
    if rows:
        lines += ["| finalist | promised | delivered mean [95% CI] | seeds |", "|---|---|---|---|"]
        lines += [f"| {r.key} | {r.promised} | {r.mean} {r.ci} | {r.runs} |" for r in rows]
        lines.append("")
    lines += ["| knob | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in knob_table(top.params, view.knobs)]
    lines.append("")
    if view.importance:
        top3 = list(view.importance.items())[:3]
        lines.append("Most important knobs (fANOVA): " + ", ".join(
            f"`{k}` {v:.2f}" for k, v in top3) + ".")
    else:
        lines.append(f"Importance: not computed ({view.importance_note})")
    sp = shlex.quote(storage_path)
    lines += ["", "Export and retrain:", "```",
              f"tune-smpl export {view.name} --storage-path {sp} -o best.yaml",
              "tune-smpl train --config best.yaml --eval-test", "```", "",
              "Report: artifacts `report/report.html` (interactive) and `report/*.png`."]
    return "\n".join(lines) + "\n"


__all__ = ["HTML_FILE", "NOTE_FILE", "REPORT_DIR", "Report", "build_report", "description"]

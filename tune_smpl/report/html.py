"""The report page: one self-contained `report.html` (plotly.js inline, no network), one
<section> per question, each with its interactive figure(s) or a line saying why none.

Section ids are stable (tests and links use them): outcomes, history, importance,
parallel, slices, curves, diagnostics.
"""

from __future__ import annotations

import html
import time

from plotly.offline import get_plotlyjs

from tune_smpl.report import interactive
from tune_smpl.report.data import CURVES_ALL, CURVES_TOP, DIAGNOSTICS, SweepView
from tune_smpl.sweep.finalists import Measure, StageStatus, table
from tune_smpl.sweep.outcome import LABELS, METRIC, OUTCOMES, counts
from tune_smpl.sweep.prior import describe as describe_prior
from tune_smpl.sweep.record import skipped
from tune_smpl.sweep.restarts import restarts_phrase
from tune_smpl.sweep.summary import knob_table

TITLES = {
    "outcomes": ("Outcomes and the best config",
                 "How each trial ended, and the best trial's searched values."),
    "finalists": ("Finalists",
                  "The best search trials retrained in full on fresh seeds: what each "
                  "promised in the search and what it delivered (final val_accuracy at "
                  "steps, the measure an exported config's retraining gives)."),
    "history": ("Optimisation history",
                "Each trial's value and the best so far, against trial number and against "
                "time. A trial's value is its best val_accuracy; a stopped trial counts with "
                "what it reached before it was stopped."),
    "importance": ("Parameter importance",
                   "Which searched knobs explain the differences in val_accuracy."),
    "parallel": ("Parallel coordinates",
                 "Every measured trial as one line through its knob values to its value."),
    "slices": ("Slices", "val_accuracy against each searched knob: where the good region is."),
    "curves": ("Learning curves",
               f"val_accuracy against step for every trial (beyond {CURVES_ALL} trials: the "
               f"best {CURVES_TOP}, over a band of all of them per step); a dashed line "
               "ending in a cross is "
               "a trial ASHA stopped (or the budget cut) there."),
    "diagnostics": ("Feedback diagnostics",
                    "Of the best trials: " + "; ".join(DIAGNOSTICS.values()) + "."),
}
WHY_NOT = {
    "history": "No trial gave a measurement.",
    "parallel": "No trial gave a measurement.",
    "slices": "No trial gave a measurement.",
    "curves": "No trial reported val_accuracy.",
    "diagnostics": "The measured trials report no feedback diagnostics (they appear "
                   "with method smpl or mpl).",
}
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;
text-align:left}.note{color:#555}.alert{background:#fde8e8;border:1px solid #d62728;
padding:.8em}section{margin-top:2.5em}code{background:#f3f3f3;padding:0 .3em}"""


def _e(x) -> str:
    return html.escape(str(x))


def _table(rows: list[tuple], head: tuple, table_id: str = "") -> str:
    attr = f' id="{table_id}"' if table_id else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<table{attr}><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + body + "</table>")


def _last_line(error: str | None) -> str:
    lines = (error or "").strip().splitlines()
    return lines[-1][:300] if lines else ""




def _outcomes_body(view: SweepView) -> str:
    n = len(view.trials)
    parts = [_table([(LABELS[o], view.counts[o]) for o in OUTCOMES], ("outcome", "trials"),
                    "outcome-table")]
    restarts = restarts_phrase([*view.trials, *view.finalist_runs])
    if restarts:  # a process or node that died: Ray went on from the trial's checkpoint
        parts.append(f"<p class='note' id='restarts'>Restarted from their checkpoints: "
                     f"{_e(restarts)}.</p>")
    warm = describe_prior(view.meta.get("warm_start"))
    if warm:
        parts.append(f"<p class='note' id='warm-start'>This sweep was {_e(warm)}.</p>")
    unfinished = [t.key for t in view.trials if not t.finished]
    if unfinished:
        parts.append(f"<p class='note'>Unfinished (resume the sweep to run them): "
                     f"{_e(', '.join(unfinished))}</p>")
    top = view.best
    if top is None:
        parts.insert(0, f"<p class='alert'>No trial gave a measurement: "
                        f"{'the sweep has no trial' if n == 0 else f'all {n} trial(s) failed'}"
                        f". Nothing to rank; the errors below say why.</p>")
        rows = [(t.key, t.outcome or "unfinished", _last_line(t.error)) for t in view.trials]
        parts.append(_table(rows, ("trial", "outcome", "last line of its error"),
                            "error-table"))
        return "".join(parts)
    if n == 1:
        parts.insert(0, "<p class='note'>This sweep has a single trial: there is nothing to "
                        "compare it with, so history and importance say little.</p>")
    if view.pick.measure == Measure.FINAL:
        parts.append(f"<p>Best {METRIC} <b>{view.best_value:.4f}</b>: finalist "
                     f"{_e(top.key)}, {_e(view.pick.note)}.</p>")
    else:
        step = top.best_report().get("step")
        parts.append(f"<p>Best {METRIC} <b>{view.best_value:.4f}</b>: trial {_e(top.key)} "
                     f"({_e(top.outcome)}), at step {_e(step)}: {_e(view.pick.note)}.</p>")
    parts.append(_table(knob_table(top.params, view.knobs),
                        ("searched knob", "best value"), "best-table"))
    return "".join(parts)


def _finalists_body(view: SweepView) -> str:
    stage = view.stage
    if stage is None:
        return ("<p class='note' id='no-finalists'>No finalist stage: the best above is one "
                "noisy estimate (the highest of the trials' best reports, each on "
                f"{_e(view.best.config.get('val_size', '?') if view.best else '?')} validation "
                "examples), so biased up: retraining it tends to deliver less. "
                "<code>tune-smpl tune --finalists K --finalist-seeds S</code> retrains the K "
                "best on S fresh seeds and promises their mean.</p>")
    runs = view.finalist_runs
    n = counts(runs)
    parts = [f"<p>{len(stage.of)} finalists x {len(stage.seed_values)} fresh seeds "
             f"({_e(', '.join(map(str, stage.seed_values)))}): {len(runs)} runs, "
             + ", ".join(f"{n[o]} {LABELS[o]}" for o in OUTCOMES if n[o])
             + f"; stage {_e(stage.status)}.</p>"]
    if stage.status == StageStatus.CUT_BY_BUDGET:
        parts.append("<p class='alert' id='finalists-cut'>The time budget cut the finalist "
                     "stage: a run cut short has no final measurement.</p>")
    rows = [(r.key, r.promised, r.mean, r.sd, r.ci, r.seeds, r.optimism)
            for r in table(view.pick.ranked)]
    parts.append(_table(rows, ("finalist", "promised (search)", "delivered mean", "sd",
                               "95% CI", "seeds", "optimism"), "finalist-table"))
    sep = view.pick.verdict.get("separation")
    if sep:
        parts.append(f"<p>Winner minus runner-up {_e(sep['runner_up'])}, paired by seed: "
                     f"{sep['diff']:+.4f} [{sep['ci_low']:+.4f}, {sep['ci_high']:+.4f}] over "
                     f"{sep['seeds']} seeds: "
                     f"<b>{'separated' if sep['separated'] else 'not separated'}</b>.</p>")
    return "".join(parts)


def _importance_body(view: SweepView) -> str:
    if view.importance is None:
        return f"<p class='note'>Importance not computed: {_e(view.importance_note)}</p>"
    rows = [(k, f"{v:.3f}") for k, v in view.importance.items()]
    return (f"<p class='note'>Evaluator: {_e(view.importance_note)}</p>"
            + _table(rows, ("knob", "importance"), "importance-table"))


def _figures(view: SweepView, section: str) -> list[str]:
    out = []
    for i, draw in enumerate(interactive.FIGURES[section]):
        fig = draw(view)
        if fig is not None:
            out.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                   div_id=f"fig-{section}-{i}",
                                   default_height=480 if section != "slices" else 420))
    return out


def render(view: SweepView, pngs: dict[str, str]) -> str:
    sections = []
    for sid, (title, lead) in TITLES.items():
        body = [f"<h2>{_e(title)}</h2><p class='note'>{_e(lead)}</p>"]
        if sid == "outcomes":
            body.append(_outcomes_body(view))
        if sid == "importance":
            body.append(_importance_body(view))
        if sid == "finalists":
            body.append(_finalists_body(view))
        figs = _figures(view, sid)
        body += [f"<div class='figure'>{f}</div>" for f in figs]
        if not figs and sid in WHY_NOT:
            body.append(f"<p class='note none'>{_e(WHY_NOT[sid])}</p>")
        if sid in pngs:
            body.append(f"<p class='note'>Static image: <a href='{_e(pngs[sid])}'>"
                        f"{_e(pngs[sid])}</a></p>")
        sections.append(f"<section id='{sid}'>{''.join(body)}</section>")
    meta = view.meta
    wall = float(meta.get("wall_s") or 0.0)
    head = (f"<h1>Sweep {_e(view.name)}</h1><p class='note'>{len(view.trials)} trials, "
            f"status {_e(meta.get('status'))}, {wall:.0f} s of wall time; sampler "
            f"{_e((meta.get('sampler') or {}).get('sampler'))}; record {_e(view.uri)}; "
            f"written {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>")
    if view.damaged:  # left out of every figure: the page says which and why
        head += (f"<p class='alert' id='damaged'>This report leaves out what it could not "
                 f"read: {_e(skipped(view.damaged))}.</p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sweep "
            f"{_e(view.name)}</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            f"{head}{''.join(sections)}</body></html>")

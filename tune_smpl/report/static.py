"""The report's figures as PNGs (matplotlib), the same sections as the interactive page.

Object-oriented matplotlib (`Figure` + its Agg canvas), no pyplot: no display, no global
state, safe on a driver with no screen. Each function returns a Figure or None.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from tune_smpl.report.data import BAND, DIAGNOSTICS, SweepView, band_count, curves_title
from tune_smpl.report.interactive import COLORS
from tune_smpl.sweep.finalists import Measure
from tune_smpl.sweep.outcome import LABELS, METRIC, OUTCOMES, SCORED, Outcome

STYLE: dict[Outcome | None, str] = {Outcome.COMPLETED: "-", Outcome.EARLY_STOPPED: "--",
                                    Outcome.CUT_BY_BUDGET: "-."}


def outcomes(view: SweepView) -> Figure:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    names = [o for o in OUTCOMES if view.counts.get(o)] or list(SCORED)
    ax.bar([LABELS[o] for o in names], [view.counts[o] for o in names],
           color=[COLORS[o] for o in names])
    ax.set(title=f"{view.name}: trials by outcome", ylabel="trials")
    return fig


def history(view: SweepView) -> Figure | None:
    pts: list[tuple[int, float | None, float, Outcome | None]] = sorted(
        ((t.number, view.elapsed(t), view.values[t.key], t.outcome)
         for t in view.trials if t.key in view.values), key=lambda p: p[0])
    if not pts:
        return None
    fig = Figure(figsize=(10, 3.6))
    axes: list[tuple[str, list[float]]] = [("trial number", [p[0] for p in pts]),
                                            ("seconds since the sweep started",
                                             [p[1] or 0.0 for p in pts])]
    for i, (xlabel, xs) in enumerate(axes):
        ax = fig.add_subplot(1, 2, i + 1)
        order = sorted(range(len(pts)), key=lambda j: xs[j])
        best, bx, by = -math.inf, [], []
        for j in order:
            best = max(best, pts[j][2])
            bx.append(xs[j])
            by.append(best)
        ax.scatter(xs, [p[2] for p in pts], c=[COLORS[p[3]] for p in pts], s=18,
                   label="trial")
        ax.step(bx, by, where="post", color="black", label="best so far")
        ax.set(xlabel=xlabel, ylabel=METRIC)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Optimisation history")
    return fig


def importance(view: SweepView) -> Figure | None:
    if view.importance is None:
        return None
    items = list(view.importance.items())[::-1]
    fig = Figure(figsize=(6, 0.45 * len(items) + 1.2))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#1f77b4")
    ax.set(title=f"Importance for {METRIC} (fANOVA)", xlabel="share of variance")
    return fig


def _scaled(view: SweepView, knob: str, values: list) -> list[float]:
    """A knob's values on [0, 1] (log where searched in log, categorical by rank)."""
    if any(isinstance(v, str) or isinstance(v, bool) for v in values):
        levels = sorted({str(v) for v in values})
        return [levels.index(str(v)) / max(1, len(levels) - 1) for v in values]
    xs = [math.log10(v) if knob in view.log_knobs and v > 0 else float(v) for v in values]
    lo, hi = min(xs), max(xs)
    return [0.5 if hi == lo else (x - lo) / (hi - lo) for x in xs]


def parallel(view: SweepView) -> Figure | None:
    trials = [t for t in view.trials if t.key in view.values
              and all(k in t.params for k in view.knobs)]
    if not trials:
        return None
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    vals = [view.values[t.key] for t in trials]
    lo, hi = min(vals), max(vals)
    cols = [_scaled(view, k, [t.params[k] for t in trials]) for k in view.knobs]
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    for i, v in enumerate(vals):
        y = 0.5 if hi == lo else (v - lo) / (hi - lo)
        ax.plot(range(len(view.knobs) + 1), [col[i] for col in cols] + [y], color=cmap(y),
                alpha=0.8)
    ax.set_xticks(range(len(view.knobs) + 1),
                  [k + (" (log)" if k in view.log_knobs else "") for k in view.knobs]
                  + [METRIC], rotation=20, fontsize=8)
    ax.set(yticks=[0, 1], yticklabels=["low", "high"], title="Parallel coordinates "
           f"(colour: {METRIC}, {lo:.3f} to {hi:.3f})")
    return fig


def slices(view: SweepView) -> Figure | None:
    if not view.values or not view.knobs:
        return None
    n = len(view.knobs)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    scored = [t for t in view.trials if t.key in view.values]
    for i, k in enumerate(view.knobs):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(t.params[k], view.values[t.key], t.number) for t in scored if k in t.params]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts],
                   cmap="Blues", edgecolors="black", s=24)
        if k in view.log_knobs:
            ax.set_xscale("log")
        ax.set(xlabel=k, ylabel=METRIC if i % cols == 0 else None)
    fig.suptitle("Slices (darker: later trial)")
    fig.tight_layout()
    return fig


def curves(view: SweepView) -> Figure | None:
    drawn, band = view.curves()
    if not drawn:
        return None
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    if band:
        steps = [b[0] for b in band]
        ax.fill_between(steps, [b[1] for b in band], [b[3] for b in band], color="#7f7f7f",
                        alpha=0.25, lw=0,
                        label=f"middle {BAND[1] - BAND[0]:.0%} of all {band_count(band)}")
        ax.plot(steps, [b[2] for b in band], color="#7f7f7f", label="median of all")
    for t, pts in drawn:
        color = COLORS.get(t.outcome, "#333333")
        ax.plot([s for s, _ in pts], [v for _, v in pts], STYLE.get(t.outcome, ":"),
                color=color, marker="o", ms=3, label=f"{t.key} {LABELS.get(t.outcome, '')}")
        if t.outcome != Outcome.COMPLETED:
            ax.plot(*pts[-1], "x", color=color, ms=10, mew=2)
    ax.set(xlabel="step", ylabel=METRIC, title=curves_title(drawn, band))
    if len(drawn) <= 12 or band:
        ax.legend(fontsize=7, ncol=2 if len(drawn) <= 12 else 3)
    return fig


def diagnostics(view: SweepView) -> Figure | None:
    trials = view.diagnosed()
    if not trials:
        return None
    fig = Figure(figsize=(12, 3.4))
    for col, (key, label) in enumerate(DIAGNOSTICS.items(), 1):
        ax = fig.add_subplot(1, len(DIAGNOSTICS), col)
        for t in trials:
            pts = [(r["step"], r[key]) for r in t.reports if isinstance(r.get(key), (int, float))]
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3,
                    label=f"trial {t.key}")
        ax.set(title=label, xlabel="step")
        if col == 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"Feedback diagnostics of the {len(trials)} best trials")
    fig.tight_layout()
    return fig


def finalists(view: SweepView) -> Figure | None:
    ranked = [f for f in view.pick.ranked if f.values]
    if not ranked:
        return None
    fig = Figure(figsize=(max(4.0, 1.4 * len(ranked) + 2), 3.4))
    ax = fig.add_subplot()
    xs = range(len(ranked))
    ax.scatter(xs, [f.promised for f in ranked], marker="D", facecolors="none",
               edgecolors="#d62728", s=60, label="promised (search score)", zorder=3)
    for i, f in enumerate(ranked):
        ax.scatter([i] * f.n, list(f.values.values()), color="#7f7f7f", s=14, alpha=0.7,
                   label="delivered, one seed" if i == 0 else None)
    stats = [f.summary() for f in ranked]
    ax.errorbar(xs, [m for m, *_ in stats], fmt="o", color="#1f77b4", capsize=4,
                yerr=[[m - lo for m, _, lo, _ in stats], [hi - m for m, _, _, hi in stats]],
                label="delivered mean, 95% CI")
    ax.set_xticks(list(xs), [f.key for f in ranked])
    ax.set(title=f"Finalists: {Measure.FINAL} on fresh seeds", xlabel="search trial",
           ylabel=METRIC)
    ax.legend(fontsize=7)
    return fig


FIGURES = {"outcomes": outcomes, "finalists": finalists, "history": history,
           "importance": importance,
           "parallel": parallel, "slices": slices, "curves": curves,
           "diagnostics": diagnostics}


def write_pngs(view: SweepView, out: Path) -> dict[str, Path]:
    """One PNG per section that has something to draw: `<section>.png`."""
    written = {}
    for section, draw in FIGURES.items():
        fig = draw(view)
        if fig is None:
            continue
        path = out / f"{section}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written[section] = path
    return written

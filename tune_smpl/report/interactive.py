"""The report's interactive figures (plotly): Optuna's `optuna.visualization` where it
draws what we mean (history, importance, parallel coordinates, slices), our own where it
does not (outcomes, best so far against time, curves that show where ASHA cut, diagnostics).

Each function returns a plotly Figure, or None when the sweep has nothing to draw.
"""

from __future__ import annotations

import warnings

import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tune_smpl.report.data import BAND, DIAGNOSTICS, SweepView, band_count, curves_title
from tune_smpl.sweep.finalists import Measure
from tune_smpl.sweep.outcome import LABELS, METRIC, OUTCOMES, SCORED, Outcome

# One colour per outcome, shared with the static figures.
COLORS: dict[Outcome | None, str] = {
    Outcome.COMPLETED: "#1f77b4", Outcome.EARLY_STOPPED: "#ff7f0e",
    Outcome.CUT_BY_BUDGET: "#9467bd", Outcome.DIVERGED: "#d62728",
    Outcome.ERRORED: "#7f7f7f", Outcome.OUT_OF_MEMORY: "#8c564b", None: "#bcbd22"}
DASH: dict[Outcome | None, str] = {Outcome.COMPLETED: "solid", Outcome.EARLY_STOPPED: "dash",
                                   Outcome.CUT_BY_BUDGET: "dashdot"}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():  # optuna.visualization warns on few trials
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def outcomes(view: SweepView) -> go.Figure:
    names = [o for o in OUTCOMES if view.counts.get(o)] or list(SCORED)
    fig = go.Figure(go.Bar(x=[LABELS[o] for o in names], y=[view.counts[o] for o in names],
                           marker_color=[COLORS[o] for o in names]))
    return fig.update_layout(title="Trials by outcome", yaxis_title="trials")


def history(view: SweepView) -> go.Figure | None:
    if not view.values:
        return None
    return _quiet(ov.plot_optimization_history, view.value_study(), target_name=METRIC)


def history_time(view: SweepView) -> go.Figure | None:
    """Best value so far against wall seconds since the sweep's first trial started."""
    done = sorted(((view.elapsed(t), view.values[t.key], t) for t in view.trials
                   if t.key in view.values and view.elapsed(t) is not None),
                  key=lambda x: x[0] or 0.0)  # None left out above
    if not done:
        return None
    best, xs, ys = -1.0, [], []
    for s, v, _ in done:
        best = max(best, v)
        xs.append(s)
        ys.append(best)
    fig = go.Figure([
        go.Scatter(x=[s for s, _, _ in done], y=[v for _, v, _ in done], mode="markers",
                   name="trial (at its end)", text=[f"trial {t.key} ({t.outcome})"
                                                    for _, _, t in done],
                   marker_color=[COLORS[t.outcome] for _, _, t in done]),
        go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name="best so far")])
    return fig.update_layout(title="Best value against time", xaxis_title="seconds since "
                             "the sweep started", yaxis_title=METRIC)


class _Computed(optuna.importance.BaseImportanceEvaluator):
    """The importances the view already holds (data.importance's fANOVA): the plot draws
    them instead of fitting fANOVA a second time (at 1,000 trials, 45 s each)."""

    def __init__(self, values: dict[str, float]):
        self.values = values

    def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
        return dict(self.values)


def importance(view: SweepView) -> go.Figure | None:
    if view.importance is None:
        return None
    return _quiet(ov.plot_param_importances, view.knob_study(),
                  evaluator=_Computed(view.importance), target_name=METRIC)


def parallel(view: SweepView) -> go.Figure | None:
    if len(view.values) < 1:
        return None
    return _quiet(ov.plot_parallel_coordinate, view.value_study(), target_name=METRIC)


def slices(view: SweepView) -> go.Figure | None:
    if not view.values:
        return None
    return _quiet(ov.plot_slice, view.value_study(), target_name=METRIC)


def curves(view: SweepView) -> go.Figure | None:
    """One line per trial that reported (the best CURVES_TOP of a large sweep, over the
    band every trial's curve makes): `val_accuracy` against step; a stopped trial's line
    is dashed and ends in a cross where it was stopped."""
    drawn, band = view.curves()
    if not drawn:
        return None
    fig = go.Figure()
    if band:
        steps = [b[0] for b in band]
        fig.add_trace(go.Scatter(x=steps, y=[b[3] for b in band], mode="lines",
                                 line={"width": 0}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=steps, y=[b[1] for b in band], mode="lines", line={"width": 0}, fill="tonexty",
            fillcolor="rgba(127,127,127,0.25)", hoverinfo="skip",
            name=f"middle {BAND[1] - BAND[0]:.0%} of all {band_count(band)} trials"))
        fig.add_trace(go.Scatter(x=steps, y=[b[2] for b in band], mode="lines",
                                 line={"color": "#7f7f7f"}, name="median of all trials",
                                 text=[f"{b[4]} trials" for b in band]))
    for t, pts in drawn:
        stopped = t.outcome not in (Outcome.COMPLETED,)
        fig.add_trace(go.Scatter(
            x=[s for s, _ in pts], y=[v for _, v in pts], name=f"trial {t.key} "
            f"({LABELS.get(t.outcome, t.outcome or 'unfinished')})",
            mode="lines+markers", line={"color": COLORS.get(t.outcome, "#333"),
                                        "dash": DASH.get(t.outcome, "dot")},
            marker={"symbol": ["circle"] * (len(pts) - 1) + ["x" if stopped else "circle"],
                    "size": [5] * (len(pts) - 1) + [12 if stopped else 5]}))
    return fig.update_layout(title=curves_title(drawn, band), xaxis_title="step",
                             yaxis_title=METRIC)


def diagnostics(view: SweepView) -> go.Figure | None:
    trials = view.diagnosed()
    if not trials:
        return None
    fig = make_subplots(rows=1, cols=len(DIAGNOSTICS), subplot_titles=list(DIAGNOSTICS.values()))
    for i, t in enumerate(trials):
        for col, key in enumerate(DIAGNOSTICS, 1):
            pts = [(r["step"], r[key]) for r in t.reports if isinstance(r.get(key), (int, float))]
            fig.add_trace(go.Scatter(x=[s for s, _ in pts], y=[v for _, v in pts],
                                     name=f"trial {t.key}", legendgroup=t.key,
                                     showlegend=col == 1, mode="lines+markers",
                                     line={"color": _PALETTE[i % len(_PALETTE)]}),
                          row=1, col=col)
    for col in range(1, len(DIAGNOSTICS) + 1):
        fig.update_xaxes(title_text="step", row=1, col=col)
    return fig.update_layout(title=f"Feedback diagnostics of the {len(trials)} best trials")


def finalists(view: SweepView) -> go.Figure | None:
    """Per finalist: its search score (promised), its runs' final val_accuracy on fresh
    seeds (delivered) and their mean with its 95% interval."""
    ranked = [f for f in view.pick.ranked if f.values]
    if not ranked:
        return None
    names = [f.key for f in ranked]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=names, y=[f.promised for f in ranked], mode="markers",
                             name="promised (search score)",
                             marker={"symbol": "diamond-open", "size": 12, "color": "#d62728"}))
    xs = [f.key for f in ranked for _ in f.values]
    fig.add_trace(go.Scatter(x=xs, y=[v for f in ranked for v in f.values.values()],
                             mode="markers", name="delivered, one seed",
                             text=[f"seed {s}" for f in ranked for s in f.values],
                             marker={"size": 7, "color": "#7f7f7f", "opacity": 0.7}))
    stats = [f.summary() for f in ranked]
    fig.add_trace(go.Scatter(
        x=names, y=[m for m, *_ in stats], mode="markers", name="delivered mean, 95% CI",
        marker={"size": 11, "color": "#1f77b4"},
        error_y={"type": "data", "symmetric": False, "array": [hi - m for m, _, _, hi in stats],
                 "arrayminus": [m - lo for m, _, lo, _ in stats]}))
    return fig.update_layout(title=f"Finalists: {Measure.FINAL} on fresh seeds (best first)",
                             xaxis_title="search trial", yaxis_title=METRIC)


_PALETTE = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]

# Section id -> the figures it holds (in order), as `html.py` lays them out.
FIGURES = {"outcomes": [outcomes], "finalists": [finalists], "history": [history, history_time],
           "importance": [importance], "parallel": [parallel], "slices": [slices],
           "curves": [curves], "diagnostics": [diagnostics]}

"""Figures of the head study, one call each on the returned data."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from thinklens.interventions.heads.scores import HeadScores

_COLORS = {
    "direct": "#1f77b4",
    "ablation": "#d62728",
    "attribution": "#2ca02c",
    "random": "#7f7f7f",
    "none": "#000000",
}


def plot_head_heatmap(scores: HeadScores, title: str | None = None) -> go.Figure:
    """Layers (rows) x heads (columns), diverging around 0: blue lowers refusal, red raises it."""
    z = scores.scores.numpy()
    bound = float(abs(z).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(scores.n_heads)),
            y=list(range(scores.n_layers)),
            colorscale="RdBu_r",
            zmid=0,
            zmin=-bound,
            zmax=bound,
            colorbar=dict(title=scores.metric),
            hovertemplate="layer %{y}, head %{x}: %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or f"head scores ({scores.method}, {scores.metric})",
        xaxis_title="head",
        yaxis_title="layer",
        template="plotly_white",
    )
    return fig


def plot_asr_vs_fraction(cells: pd.DataFrame, y: str = "asr", mode: str | None = None) -> go.Figure:
    """A metric against the percentage of heads ablated, one line per method.

    ``cells`` is a sweep table (or any table with ``method``, ``fraction``, ``mode`` and ``y``);
    random heads show their mean over seeds with a +-1 SD bar; the unablated model (method
    ``none``) is a dashed line.
    """
    if y not in cells:
        raise ValueError(f"no column {y!r} in the table; columns: {list(cells.columns)}")
    if mode is not None:
        cells = cells[(cells["mode"] == mode) | (cells["method"] == "none")]
    fig = go.Figure()
    for method, part in cells[cells["method"] != "none"].groupby("method"):
        stats = part.groupby("fraction")[y].agg(["mean", "std"]).reset_index().fillna(0.0)
        fig.add_scatter(
            x=stats["fraction"] * 100,
            y=stats["mean"],
            error_y=dict(array=stats["std"], visible=method == "random"),
            mode="lines+markers",
            name=str(method),
            line=dict(color=_COLORS.get(str(method)), dash="dot" if method == "random" else None),
        )
    base = cells.loc[cells["method"] == "none", y]
    if len(base):
        fig.add_hline(
            y=float(base.mean()),
            line_dash="dash",
            annotation_text="no ablation",
            annotation_position="top left",
        )
    fig.update_layout(
        title=f"{y} vs heads ablated" + (f" ({mode})" if mode else ""),
        xaxis_title="heads ablated (% of all)",
        yaxis_title=y,
        template="plotly_white",
    )
    return fig

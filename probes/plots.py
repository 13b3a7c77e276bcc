"""Figures of the refusal-cliff study, one call each on the returned tables."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from thinklens.plotting import line_by_layer

_GROUP_COLORS = {
    "refused harmful": "#2166ac",
    "complied harmful": "#b2182b",
    "harmless": "#4d9221",
    "all": "#444444",
}


def plot_token_scores(scores: pd.DataFrame, example: int, per_row: int = 16) -> go.Figure:
    """One trace's tokens laid out in rows, each coloured by its refusal score."""
    g = scores[scores["example"] == example].sort_values("position")
    if g.empty:
        raise ValueError(f"example {example} is not in the table")
    n = len(g)
    rows = -(-n // per_row)
    z = np.full((rows, per_row), np.nan)
    text = np.full((rows, per_row), "", dtype=object)
    hover = np.full((rows, per_row), "", dtype=object)
    for i, r in enumerate(g.itertuples()):
        tok = r.token.replace("\n", "↵")
        z[i // per_row, i % per_row] = r.score
        text[i // per_row, i % per_row] = html.escape(tok)
        hover[i // per_row, i % per_row] = (
            f"{r.position} [{r.part}] {html.escape(tok)}: {r.score:.3f}"
        )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=text,
            texttemplate="%{text}",
            hovertext=hover,
            hoverinfo="text",
            colorscale="RdBu_r",
            zmin=0,
            zmax=1,
            colorbar=dict(title="refusal score"),
        )
    )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(
        title=f"refusal score of every token, example {example}",
        template="plotly_white",
        height=max(300, 26 * rows + 120),
    )
    return fig


def plot_cliff_curves(
    curves: pd.DataFrame, title: str = "refusal score before the answer"
) -> go.Figure:
    """Mean end-aligned score per group with its 95% band (from ``end_aligned``)."""
    fig = go.Figure()
    for name, g in curves.groupby("group", sort=False):
        color = _GROUP_COLORS.get(str(name), "#666666")
        fig.add_scatter(
            x=np.concatenate([g["offset"], g["offset"][::-1]]),
            y=np.concatenate([g["hi"], g["lo"][::-1]]),
            fill="toself",
            fillcolor=color,
            opacity=0.2,
            line=dict(width=0),
            hoverinfo="skip",
            showlegend=False,
        )
        fig.add_scatter(x=g["offset"], y=g["mean"], mode="lines", name=str(name), line_color=color)
    fig.update_layout(
        title=title,
        xaxis_title="tokens before the answer",
        yaxis_title="refusal score",
        yaxis_range=[0, 1],
        template="plotly_white",
    )
    return fig


def plot_layer_sweep(table: pd.DataFrame) -> go.Figure:
    """Validation accuracy and AUROC of a probe per layer (from ``sweep_layers``)."""
    long = table.melt(id_vars="layer", value_vars=["val_accuracy", "val_auroc"], var_name="metric")
    return line_by_layer(long, "value", "refusal probe by layer", color="metric")

"""Plots of the Echo of Prompt study: one call on the tables the analyses return."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from thinklens.analyses.echo.spans import Span

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def attention_by_layer(
    df: pd.DataFrame,
    channel: str,
    labels: Mapping[int, str] | Sequence[str],
    z: float = 1.96,
) -> go.Figure:
    """Mean mass of one channel per layer for each group, with a mean +- z * SE band.

    Args:
        df: the table of ``echo_attention`` (head-averaged).
        labels: a group name per trace (e.g. "correct" / "wrong").
    """
    labels = dict(labels) if isinstance(labels, Mapping) else dict(enumerate(labels))
    d = df[df["channel"] == channel].assign(group=lambda x: x["trace"].map(labels))
    if d.empty:
        raise ValueError(
            f"no rows for channel {channel!r}; channels: {sorted(df['channel'].unique())}"
        )
    stats = d.groupby(["group", "layer"])["mass"].agg(["mean", "std", "count"]).reset_index()
    stats["se"] = (stats["std"] / np.sqrt(stats["count"])).fillna(0.0)
    fig = go.Figure()
    for i, (name, part) in enumerate(stats.groupby("group")):
        color = _COLORS[i % len(_COLORS)]
        lo, hi = part["mean"] - z * part["se"], part["mean"] + z * part["se"]
        fig.add_scatter(
            x=list(part["layer"]) + list(part["layer"])[::-1],
            y=list(hi) + list(lo)[::-1],
            fill="toself",
            fillcolor=color,
            opacity=0.2,
            line=dict(width=0),
            showlegend=False,
            hoverinfo="skip",
        )
        fig.add_scatter(
            x=part["layer"],
            y=part["mean"],
            mode="lines+markers",
            name=str(name),
            line=dict(color=color),
        )
    fig.update_layout(
        title=f"attention mass {channel} (mean, {z:g} SE band)",
        xaxis_title="layer",
        yaxis_title="mass",
        template="plotly_white",
    )
    return fig


def gap_distribution(df: pd.DataFrame, column: str = "gap", group: str | None = None) -> go.Figure:
    """Histogram of the Echo Likelihood Gap (one trace per count), overlaid per group."""
    fig = go.Figure()
    groups = df.groupby(group) if group else [("all", df)]
    for name, part in groups:
        fig.add_histogram(x=part[column].dropna(), name=str(name), opacity=0.6)
    fig.update_layout(
        barmode="overlay",
        title=f"Echo Likelihood Gap ({column}, nats/token)",
        xaxis_title=column,
        yaxis_title="traces",
        template="plotly_white",
    )
    return fig


def echo_example(thinking: str, spans: Sequence[Span], width: int = 90) -> go.Figure:
    """One thinking text with its echo spans in bold red, wrapped at ``width`` characters."""
    pieces, pos = [], 0
    for s, e in sorted(spans):
        pieces.append((thinking[pos:s], False))
        pieces.append((thinking[s:e], True))
        pos = e
    pieces.append((thinking[pos:], False))
    out, col = [], 0
    for text, echo in pieces:
        words = []
        for w in text.replace("\n", " \n ").split(" "):
            if w == "\n" or col + len(w) > width:
                words.append("<br>")
                col = 0
                if w == "\n":
                    continue
            words.append(html.escape(w))
            col += len(w) + 1
        chunk = " ".join(words).replace(" <br> ", "<br>")
        out.append(f"<span style='color:#d62728'><b>{chunk}</b></span>" if echo else chunk)
    fig = go.Figure()
    fig.add_annotation(
        text="".join(out),
        x=0,
        y=1,
        xref="paper",
        yref="paper",
        showarrow=False,
        align="left",
        xanchor="left",
        yanchor="top",
        font=dict(family="monospace", size=12),
    )
    fig.update_layout(
        title=f"thinking with {len(spans)} echo span(s) in red",
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        template="plotly_white",
        height=120 + 18 * (len(thinking) // width + thinking.count("\n") + 1),
    )
    return fig

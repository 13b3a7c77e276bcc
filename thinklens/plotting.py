"""Plotly figures from thinklens tables: one call on the returned data."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def line_by_layer(df: pd.DataFrame, y: str, title: str, color: str | None = None) -> go.Figure:
    """A metric against layer (one line per value of ``color``)."""
    fig = go.Figure()
    groups = df.groupby(color) if color else [(y, df)]
    for name, part in groups:
        fig.add_scatter(x=part["layer"], y=part[y], mode="lines+markers", name=str(name))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=y, template="plotly_white")
    return fig


def bars(df: pd.DataFrame, x: str, ys: list[str], title: str, y_title: str = "") -> go.Figure:
    """Grouped bars: a group per row of ``df`` (labelled by ``x``), a bar per column in ``ys``."""
    fig = go.Figure()
    for y in ys:
        fig.add_bar(x=df[x].astype(str), y=df[y], name=y)
    fig.update_layout(title=title, barmode="group", yaxis_title=y_title, template="plotly_white")
    return fig

"""Figures of Cliff-as-a-Judge, one call each on the returned tables."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from thinklens.analyses.judge.select import Selection


def plot_selection(scored: pd.DataFrame, selection: Selection, metric: str = "cliff") -> go.Figure:
    """Every candidate of a scored pool by ``metric`` (largest first), the selected ones marked."""
    if metric not in scored:
        raise ValueError(f"the pool has no {metric!r} column: score it with score_pool first")
    chosen = set(selection.table["id"])
    order = scored.sort_values(metric, ascending=False, na_position="last", kind="stable")
    picked = order["id"].isin(chosen)
    fig = go.Figure()
    for name, mask, color in (("selected", picked, "#b2182b"), ("not selected", ~picked, "#999")):
        part = order[mask]
        fig.add_bar(
            x=part["id"],
            y=part[metric],
            name=name,
            marker_color=color,
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        )
    fig.update_xaxes(categoryorder="array", categoryarray=list(order["id"]))
    fig.update_layout(
        title=f"candidates by {metric} ({selection.method} selection: "
        f"{selection.size} of {selection.pool_size})",
        xaxis_title="candidate",
        yaxis_title=metric,
        template="plotly_white",
    )
    return fig

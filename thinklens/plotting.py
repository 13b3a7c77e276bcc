"""Plotly figures from thinklens tables: one call on the returned data."""

from __future__ import annotations

from pathlib import Path

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


def write_report(
    path: str | Path, title: str, figures: list[go.Figure], tables: list[pd.DataFrame]
) -> Path:
    """One self-contained HTML page with the figures and tables, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>",
        f"<h1>{title}</h1>",
    ]
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    for t in tables:
        parts.append(t.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    parts.append("</body></html>")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path

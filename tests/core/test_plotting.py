"""Plotting: one call on a table gives a figure; reports are self-contained and atomic."""

from __future__ import annotations

import pandas as pd

from thinklens.plotting import line_by_layer
from thinklens.report import sections_of, write_report


def test_line_by_layer_and_report(tmp_path):
    df = pd.DataFrame(
        {
            "layer": [0, 1, 2, 0, 1, 2],
            "auroc": [0.5, 0.7, 0.9, 0.5, 0.6, 0.8],
            "group": ["a"] * 3 + ["b"] * 3,
        }
    )
    fig = line_by_layer(df, "auroc", "separation", color="group")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].y) == [0.5, 0.7, 0.9]
    assert len(line_by_layer(df, "auroc", "one line").data) == 1
    path = write_report(tmp_path / "out" / "report.html", "demo", sections_of([fig], [df]))
    html = path.read_text()
    assert "plotly" in html.lower() and "<table" in html and "0.9" in html
    assert not list((tmp_path / "out").glob("*.tmp"))

"""HTML reports: plotly.js embedded once, a sentence per section, text escaped, atomic writes."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from thinklens.plotting import bars
from thinklens.report import Section, render, write_report


def _figure(y: list[float]) -> go.Figure:
    return go.Figure(go.Scatter(y=y))


def test_plotly_is_embedded_once_and_every_figure_has_its_div(tmp_path):
    table = pd.DataFrame(dict(condition=["none", "top heads"], asr=[0.875, 0.25]))
    sections = [
        Section("first", "A sentence about the first figure.", figure=_figure([1, 2])),
        Section(
            "second", "A <b>bold</b> claim & more.", figure=bars(table, "condition", ["asr"], "t")
        ),
        Section("table only", table=table),
    ]
    path = write_report(tmp_path / "out" / "report.html", "demo <report>", sections, "intro")
    html = path.read_text()
    assert html.count("plotly.js v") == 1  # the library's banner: embedded exactly once
    assert html.count('class="plotly-graph-div"') == 2
    assert 'id="figure-0"' in html and 'id="figure-1"' in html
    assert "A sentence about the first figure." in html
    assert "A &lt;b&gt;bold&lt;/b&gt; claim &amp; more." in html
    assert "<title>demo &lt;report&gt;</title>" in html
    assert "0.875" in html and "<table" in html
    assert list((tmp_path / "out").iterdir()) == [path]  # no temporary file left


def test_rewriting_replaces_the_whole_file(tmp_path):
    path = write_report(tmp_path / "r.html", "one", [Section("a", "first run")])
    write_report(path, "two", [Section("b", "second run")])
    html = path.read_text()
    assert "second run" in html and "first run" not in html
    assert render("two", [Section("b", "second run")]) == html

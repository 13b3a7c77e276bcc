"""Self-contained HTML reports: sections of a sentence, a figure and a table, written atomically.

plotly.js is embedded once, in the page head, and every figure is a ``<div>`` that uses it, so
the page opens without a network and its size grows by the figures' data only.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
section { margin: 2.2em 0; }
p.note { max-width: 60em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
"""


@dataclass
class Section:
    """One part of a report: a heading, a sentence saying what it shows, a figure, a table."""

    title: str
    text: str = ""
    figure: go.Figure | None = None
    table: pd.DataFrame | None = None


def table_html(table: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as an HTML table, floats to ``digits`` significant digits, text escaped."""
    return table.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", escape=True)


def render(title: str, sections: Sequence[Section], intro: str = "") -> str:
    """The report as one HTML string (plotly.js once in the head, then every section)."""
    parts = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p class='note'>{html.escape(intro)}</p>")
    for n, s in enumerate(sections):
        parts.append("<section>")
        if s.title:
            parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p class='note'>{html.escape(s.text)}</p>")
        if s.figure is not None:
            parts.append(
                s.figure.to_html(
                    full_html=False,
                    include_plotlyjs=False,
                    div_id=f"figure-{n}",
                    default_height="480px",
                )
            )
        if s.table is not None:
            parts.append(table_html(s.table))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    path: str | Path, title: str, sections: Sequence[Section], intro: str = ""
) -> Path:
    """Write ``render(...)`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(title, sections, intro)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def sections_of(figures: list, tables: list | None = None) -> list[Section]:
    """Untitled sections, one a figure, then one a table: a page of results without prose."""
    return [Section("", figure=f) for f in figures] + [Section("", table=t) for t in tables or []]

"""Cliff-as-a-Judge figure: every candidate by cliff, largest first, the selected ones marked."""

from __future__ import annotations

import pytest

from thinklens.analyses.judge.plots import plot_selection
from thinklens.analyses.judge.select import score_pool, select


def test_selection_figure_marks_the_chosen_candidates(tiny, random_probe, tiny_pool):
    scored = score_pool(tiny, random_probe(tiny), tiny_pool(tiny), progress=False)
    sel = select(scored, "cliff", top_k=4)
    fig = plot_selection(scored, sel)
    chosen, rest = fig.data
    assert chosen.name == "selected" and set(chosen.x) == set(sel.table["id"])
    assert len(chosen.x) + len(rest.x) == len(scored)
    order = list(fig.layout.xaxis.categoryarray)
    assert order[:4] == list(sel.table["id"])  # the largest cliffs come first
    with pytest.raises(ValueError, match="no 'plateau_x' column"):
        plot_selection(scored, sel, metric="plateau_x")

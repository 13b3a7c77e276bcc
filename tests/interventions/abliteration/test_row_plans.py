"""RowPlans: several plans in one batch give each plan's own logits and greedy tokens."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import thinklens as tl
import thinklens.decoding as decoding
from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration import compute_directions, edited, heretic_plan
from thinklens.interventions.abliteration.ablation import (
    PlanHooks,
    edited_output,
    hook_coefficients,
)
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel
from thinklens.interventions.abliteration.row_plans import RowPlans
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "train")[:8]
HARMLESS = bundled_prompts("harmless", "train")[:8]


def _plans(m, d) -> list[list]:
    """Three different plans: norm-preserving per-layer directions, a plain edit with one
    interpolated direction, and one that touches the attention of a single layer only."""
    base = HereticParams.default(m.n_layers)
    plain = dataclasses.replace(base, direction_index=0.5, norm_preserving=False)
    one = dataclasses.replace(
        base,
        norm_preserving=False,
        attn=Kernel(
            max_weight=1.5, max_weight_position=0.0, min_weight=0.0, min_weight_distance=0.6
        ),
        mlp=Kernel(
            max_weight=0.0, max_weight_position=0.0, min_weight=0.0, min_weight_distance=0.6
        ),
    )
    plans = [heretic_plan(m, d, p, "thinklens") for p in (base, plain, one)]
    assert len({len(p) for p in plans}) > 1  # the plans touch different modules
    return plans


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_each_row_gets_its_plans_logits(family):
    """Plans interleaved over the rows of one pass give the logits of each plan's written
    weights (GPT-2: Conv1D layout, a bias the edit keeps)."""
    m = tiny_model(family)
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    plans = _plans(m, d)
    texts = [m.chat(p) for p in bundled_prompts("harmless", "test")[:2]]
    want = []
    for plan in plans:
        with edited(m, plan):
            want.append(m.logits(texts))
    rows = [p for _ in texts for p in range(len(plans))]  # interleaved, not blocks
    batch = [t for t in texts for _ in plans]
    with tl.intervene(m, RowPlans(plans, rows)):
        got = m.logits(batch, batch_size=len(batch))
    of_text = [t for t in range(len(texts)) for _ in plans]
    for i, (t, p) in enumerate(zip(of_text, rows, strict=True)):
        moved = (want[p][t] - m.logits([texts[t]])[0]).abs().max()
        assert moved > 1e-3  # each plan does something
        torch.testing.assert_close(got[i], want[p][t], atol=1e-4 * max(1.0, float(moved)), rtol=0)


def test_greedy_tokens_follow_rows_that_leave_the_batch(monkeypatch):
    """Greedy decoding with rows dropped as they stop: each row's tokens are its plan's own
    (decoded alone under that plan), so ``select`` tracks which rows remain."""
    m = tiny_model("llama")
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    plans = _plans(m, d)
    ids = m.chat_ids(bundled_prompts("harmful", "test")[:3])
    free = []
    for plan in plans:
        with tl.intervene(m, PlanHooks(plan)):
            free.append(decoding.greedy_continue(m, ids, 10, len(ids)))
    # A stop token that ends some rows early and leaves others running.
    seen = [t for runs in free for row in runs for t in row[2:6]]
    stop = max(set(seen), key=seen.count)
    monkeypatch.setattr(decoding, "stop_token_ids", lambda tok: {stop})
    want = []
    for plan in plans:
        with tl.intervene(m, PlanHooks(plan)):
            want.append(decoding.greedy_continue(m, ids, 10, len(ids)))
    lengths = {len(row) for runs in want for row in runs}
    assert len(lengths) > 1  # rows stop at different steps
    rows = [p for p in range(len(plans)) for _ in ids]
    edit = RowPlans(plans, rows)
    selected = []

    def on_rows(active: list[int]) -> None:
        selected.append(list(active))
        edit.select(active)

    with tl.intervene(m, edit):
        got = decoding.greedy_continue(m, ids * len(plans), 10, len(rows), on_rows=on_rows)
    assert got == [row for runs in want for row in runs]
    assert len(selected) > 2 and selected[0] == list(range(len(rows)))
    # Told which rows share a plan, the shared chat-template opening is run once per plan
    # (under that plan's first row) and copied to its rows: the same tokens.
    assert decoding.shared_length(ids) >= decoding.MIN_SHARED
    selected.clear()
    with tl.intervene(m, edit):
        got = decoding.greedy_continue(
            m, ids * len(plans), 10, len(rows), on_rows=on_rows, groups=rows
        )
    assert got == [row for runs in want for row in runs]
    assert selected[0] == [0, len(ids), 2 * len(ids)] and selected[1] == list(range(len(rows)))


def test_bad_rows_are_clear_errors():
    m = tiny_model("llama")
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    plans = _plans(m, d)
    with pytest.raises(ValueError, match="rows name plans"):
        RowPlans(plans, [0, 3])
    with pytest.raises(ValueError, match="at least one plan"):
        RowPlans([], [])
    texts = [m.chat("Hello")]
    with tl.intervene(m, RowPlans(plans, [0, 1])), pytest.raises(ValueError, match="select"):
        m.logits(texts, batch_size=1)
    low = [dataclasses.replace(e, low_rank=3) for e in plans[0]]
    with pytest.raises(ValueError, match="no hook form"), tl.intervene(m, RowPlans([low], [0])):
        pass


@pytest.mark.parametrize("norms", [False, True])
@pytest.mark.parametrize("kept", [False, True])
def test_hook_coefficients_give_the_edit_formula(norms, kept):
    """``part * a - (part . b) c`` is ``(y - w (y . r) r) (n / m) + kept`` with ``y = part / n``,
    for one edit and for one edit a row."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, generator=g, dtype=torch.float64)
    r = torch.randn(4, 1, 8, generator=g, dtype=torch.float64)
    r = r / r.norm(dim=-1, keepdim=True)
    w = torch.rand(4, 1, 1, generator=g, dtype=torch.float64)
    n = torch.rand(4, 1, 8, generator=g, dtype=torch.float64) + 0.5 if norms else None
    m = torch.rand(4, 1, 8, generator=g, dtype=torch.float64) + 0.5 if norms else None
    bias = torch.randn(8, generator=g, dtype=torch.float64) if kept else None
    part = x if bias is None else x - bias
    y = part if n is None else part / n
    want = y - w * (y * r).sum(-1, keepdim=True) * r
    want = want if n is None else want * (n / m)
    want = want if bias is None else want + bias
    got = edited_output(x, hook_coefficients(r, w, None if n is None else (n, m)), bias)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

"""KeyedPlans: plans added and dropped while installed give each row its own plan's logits and
greedy tokens, also in a batch that trials join as they start (``InFlight``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import thinklens as tl
from thinklens.data import bundled_prompts
from thinklens.decoding import greedy_continue
from thinklens.in_flight import InFlight
from thinklens.interventions.abliteration import compute_directions, edited, heretic_plan
from thinklens.interventions.abliteration.ablation import PlanHooks
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel, heretic_modules
from thinklens.interventions.abliteration.keyed_plans import KeyedPlans
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "train")[:8]
HARMLESS = bundled_prompts("harmless", "train")[:8]


def _plans(m) -> list[list]:
    """Three plans that touch different modules (one only a single layer's attention)."""
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    base = HereticParams.default(m.n_layers)
    plain = dataclasses.replace(base, direction_index=0.5, norm_preserving=False)
    off = Kernel(max_weight=0.0, max_weight_position=0.0, min_weight=0.0, min_weight_distance=0.6)
    one = dataclasses.replace(plain, attn=dataclasses.replace(off, max_weight=1.5), mlp=off)
    return [heretic_plan(m, d, p, "thinklens") for p in (base, plain, one)]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_rows_get_their_plans_logits_as_plans_come_and_go(family):
    m = tiny_model(family)
    plans = _plans(m)
    texts = [m.chat(p) for p in bundled_prompts("harmless", "test")[:2]]
    want = []
    for plan in plans:
        with edited(m, plan):
            want.append(m.logits(texts))
    base = m.logits(texts)
    edit = KeyedPlans(heretic_modules(m))
    edit.add(m, "first", plans[0])
    with tl.intervene(m, edit):
        edit.select(["first"] * len(texts))
        torch.testing.assert_close(m.logits(texts, batch_size=2), want[0], atol=1e-4, rtol=0)
        edit.drop("first")  # plans change while the hooks stay
        edit.add(m, "b", plans[1])
        edit.add(m, "c", plans[2])
        keys = ["c", "b", "b", "c"]
        edit.select(keys)
        got = m.logits([texts[0], texts[0], texts[1], texts[1]], batch_size=4)
    for row, (t, k) in enumerate(zip([0, 0, 1, 1], keys, strict=True)):
        p = {"b": 1, "c": 2}[k]
        assert (want[p][t] - base[t]).abs().max() > 1e-3  # each plan does something
        torch.testing.assert_close(got[row], want[p][t], atol=1e-4, rtol=0)


def test_trials_joining_a_running_batch_decode_as_each_plan_alone():
    m = tiny_model("llama")
    plans = _plans(m)
    ids = m.chat_ids(bundled_prompts("harmful", "test")[:3])
    want = []
    for plan in plans:
        with tl.intervene(m, PlanHooks(plan)):
            want.append(greedy_continue(m, ids, 12, len(ids)))
    assert len({str(w) for w in want}) == len(plans)  # the plans decode differently
    edit = KeyedPlans(heretic_modules(m))
    flight = InFlight(m, 12, on_rows=edit.select)
    got = {}
    with tl.intervene(m, edit):
        for k in (0, 1):
            edit.add(m, k, plans[k])
            flight.add(k, ids)
        steps = 0
        while flight:
            if steps == 3:  # the third trial joins the running batch
                edit.add(m, 2, plans[2])
                flight.add(2, ids)
            for k, new in flight.step().items():
                edit.drop(k)
                got[k] = new
            steps += 1
    assert [got[k] for k in range(len(plans))] == want


def test_bad_use_gets_clear_errors():
    m = tiny_model("llama")
    plans = _plans(m)
    with pytest.raises(ValueError, match="modules its plans may edit"):
        KeyedPlans([])
    edit = KeyedPlans(heretic_modules(m)[:1])
    with pytest.raises(ValueError, match="does not hook"):
        edit.add(m, 0, plans[0])
    edit = KeyedPlans(heretic_modules(m))
    edit.add(m, 0, plans[0])
    with pytest.raises(ValueError, match="already kept under 0"):
        edit.add(m, 0, plans[1])
    with pytest.raises(ValueError, match="no plan is kept under 7"):
        edit.select([7])
    with tl.intervene(m, edit):
        edit.select([0, 0])
        with pytest.raises(ValueError, match="over 1 rows, but KeyedPlans holds 2"):
            m.logits([m.chat("Hi")])

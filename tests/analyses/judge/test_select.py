"""Scoring candidates by cliff and by the published proxy, selection methods and baselines."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

import thinklens as tl
from thinklens.analyses.judge.pool import build_pool, pool_traces
from thinklens.analyses.judge.select import METHODS, score_pool, select, selection_size
from thinklens.data import bundled_prompts, frame_all
from thinklens.embedded import ADAPTERS
from thinklens.organisms.templates import harmful_example, harmless_example
from thinklens.probes import RefusalProbe, score_last
from thinklens.testing import tiny_model

K = 3


@pytest.fixture(scope="module")
def setup(random_probe, tiny_pool):
    m = tiny_model("llama")
    probe = random_probe(m, layer=1)
    pool = tiny_pool(m, n=16)
    return m, probe, pool, score_pool(m, probe, pool, k=K, progress=False)


def _brute_force(m, probe, trace) -> tuple[float, float]:
    """Cliff and last score from one plain HF forward of the whole trace, written out by hand."""
    with torch.no_grad():
        out = m.hf(input_ids=torch.tensor([trace.input_ids]), output_hidden_states=True)
    h = out.hidden_states[probe.layer + 1][0]
    scores = probe.score(m.final_norm(h).detach().float()).numpy()
    window = scores[trace.spans["thinking"][0] : trace.spans["marker"][1]]
    return float(window[:-K].mean() - window[-K:].mean()), float(scores[-1])


def test_scores_match_a_full_forward_written_out(setup):
    m, probe, pool, scored = setup
    for trace, row in zip(pool_traces(m, pool), scored.itertuples(), strict=True):
        cliff, last = _brute_force(m, probe, trace)
        assert row.cliff == pytest.approx(cliff, abs=1e-5)
        assert row.last_score == pytest.approx(last, abs=1e-5)
    assert scored["cliff"].std() > 0  # the ranking has something to rank


def test_cliff_and_proxy_rankings(setup):
    _, _, _, scored = setup
    by_cliff = select(scored, "cliff", top_k=5)
    assert list(by_cliff.table["id"]) == list(scored.nlargest(5, "cliff")["id"])
    assert list(by_cliff.table["rank"]) == list(range(5))
    by_proxy = select(scored, "proxy", fraction=0.25)
    assert list(by_proxy.table["id"]) == list(scored.nsmallest(4, "last_score")["id"])
    # A candidate without a cliff (too little thinking) ranks last, not first.
    holed = scored.copy()
    holed.loc[0, "cliff"] = np.nan
    assert select(holed, "cliff", top_k=16).table["id"].iloc[-1] == holed.loc[0, "id"]


def test_random_and_rule_baselines(setup):
    _, _, _, scored = setup
    a, b = select(scored, "random", top_k=6, seed=1), select(scored, "random", top_k=6, seed=1)
    assert list(a.table["id"]) == list(b.table["id"])
    assert list(a.table["id"]) != list(select(scored, "random", top_k=6, seed=2).table["id"])
    assert a.table["id"].is_unique and set(a.table["id"]) <= set(scored["id"])
    rule = select(scored, "rule", top_k=6, seed=0)
    assert not rule.table["refused"].any()
    assert len(select(scored, "rule").table) == int((~scored["refused"]).sum())  # the filter
    with pytest.warns(UserWarning, match="the rule keeps 10 candidates, fewer than the 12"):
        assert select(scored, "rule", top_k=12).size == 10
    assert select(scored, "all").size == 16
    no_verdict = scored.assign(refused=pd.array([None] * 16, dtype="boolean"))
    with pytest.raises(ValueError, match="rule baseline needs the model's own answers"):
        select(no_verdict, "rule", top_k=2)


def test_selection_records_its_provenance(setup):
    _, probe, _, scored = setup
    sel = select(scored, "cliff", fraction=0.25, probe_path="probes/p")
    prov = sel.provenance
    assert prov["method"] == "cliff" and prov["seed"] is None and prov["cliff_k"] == K
    assert prov["probe"]["path"] == "probes/p"
    assert prov["probe"]["fingerprint"] == probe.meta["fingerprint"]
    assert prov["probe"]["layer"] == probe.layer
    assert prov["pool_size"] == 16 and prov["selected"] == 4 and sel.fraction == 0.25
    sel_range = prov["score_ranges"]["selected"]["cliff"]
    assert sel_range["min"] >= prov["score_ranges"]["pool"]["cliff"]["min"]
    assert sel_range["min"] == pytest.approx(sel.table["cliff"].min())
    assert select(scored, "random", top_k=2, seed=7).provenance["seed"] == 7


def test_sizes_round_half_up():
    assert selection_size(320, fraction=0.125) == 40
    assert selection_size(300, fraction=0.05) == 15
    assert selection_size(300, fraction=0.125) == 38  # 37.5 rounds up
    assert selection_size(10, fraction=0.01) == 1
    assert selection_size(10, fraction=1.0) == 10


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(fraction=0.0), "fraction must be in \\(0, 1\\], got 0.0"),
        (dict(fraction=1.5), "fraction must be in \\(0, 1\\], got 1.5"),
        (dict(fraction=float("nan")), "fraction must be in"),
        (dict(top_k=0), "top_k must be in 1..16"),
        (dict(top_k=17), "top_k must be in 1..16"),
        (dict(top_k=2, fraction=0.5), "exactly one of top_k"),
        (dict(), "exactly one of top_k"),
    ],
)
def test_bad_sizes_are_clear_errors(setup, kw, message):
    with pytest.raises(ValueError, match=message):
        select(setup[3], "cliff", **kw)


def test_bad_pools_methods_and_probes(setup):
    m, probe, pool, scored = setup
    with pytest.raises(ValueError, match="pool is empty"):
        select(scored.iloc[:0], "random", top_k=1)
    with pytest.raises(ValueError, match="unknown selection method 'best'"):
        select(scored, "best", top_k=1)
    with pytest.raises(ValueError, match="needs the 'cliff' column: run score_pool"):
        select(pool, "cliff", top_k=1)
    with pytest.raises(ValueError, match="method 'all' takes the whole pool"):
        select(scored, "all", top_k=3)
    other = tiny_model("llama", seed=1)  # same shapes, other weights
    with pytest.raises(ValueError, match="not on tiny-llama.*recompute it on this model"):
        score_pool(other, probe, pool, progress=False)
    assert set(METHODS) == {"cliff", "proxy", "random", "rule", "all"}


needs_cliff = pytest.mark.skipif(
    not (ADAPTERS / "cliff" / "organism.json").exists(),
    reason="the organism-cliff adapter is not built (thinklens organisms build cliff)",
)


@pytest.mark.real
@needs_cliff
def test_organism_cliff_pool_scores_like_the_last_position_probe():
    m = tl.load_model("organism-cliff")
    rng = random.Random(0)
    refused = [harmful_example(p, "", None, "aligned", rng) for p in bundled_prompts("harmful")]
    benign = [harmless_example(p, "Sure.", rng) for p in bundled_prompts("harmless")]
    texts = [m.trace(e.prompt, e.thinking).text for e in refused[:32] + benign[:32]]
    probe = RefusalProbe.train(m, texts, [1] * 32 + [0] * 32, progress=False)
    harmful = bundled_prompts("harmful", "test")[:8]
    pool = pd.concat(
        [
            build_pool(m, harmful, source="plain", max_new_tokens=96, progress=False),
            build_pool(m, frame_all(harmful), source="framed", max_new_tokens=96, progress=False),
        ],
        ignore_index=True,
    )
    scored = score_pool(m, probe, pool, progress=False)
    texts = [t.text for t in pool_traces(m, pool)]
    last = score_last(m, probe, texts).numpy()
    assert np.abs(scored["last_score"].to_numpy() - last).max() < 1e-4
    assert scored["cliff"].notna().all()  # the organism's thinking is long enough for k=8
    kept = select(scored, "rule").table
    assert set(kept["id"]) == set(scored.loc[~scored["refused"].astype(bool), "id"])

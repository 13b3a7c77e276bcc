"""The search's Heretic settings: its TPE candidates and its objective shaping."""

from __future__ import annotations

import math

import pytest

from thinklens.analyses.abliteration import AbliterationMetrics, objective_scores, search
from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration import compute_directions
from thinklens.testing import tiny_model


def heretic_score(kl, refusals, base, target=0.01, scale=1.0):
    """Heretic 1.4.0's Evaluator.get_score, written out: refusal score is the ratio to the base
    model's count (the count when the base refuses nothing); below the KL target the KL score
    is the refusal score times the target; both over the KL scale."""
    refusals_score = refusals / base if base > 0 else float(refusals)
    if kl >= target:
        return kl / scale, refusals_score
    return refusals_score * target / scale, refusals_score


@pytest.mark.parametrize(
    ("kl", "refusals", "base"), [(0.5, 3, 10), (0.01, 0, 10), (0.004, 7, 10), (0.0, 2, 0)]
)
def test_objective_scores_match_heretic(kl, refusals, base):
    got = objective_scores(kl, refusals, base, kl_target=0.01)
    assert all(
        math.isclose(a, b) for a, b in zip(got, heretic_score(kl, refusals, base), strict=True)
    )
    # thinklens's default optimises the KL itself.
    assert objective_scores(kl, refusals, base) == (kl, heretic_score(kl, refusals, base)[1])


def test_the_sampler_draws_heretics_candidates():
    m = tiny_model("llama", backend="nnsight")
    d = compute_directions(
        m,
        bundled_prompts("harmful", "train")[:4],
        bundled_prompts("harmless", "train")[:4],
        progress=False,
    )
    metrics = AbliterationMetrics.prepare(
        m,
        bundled_prompts("harmful", "test")[:2],
        bundled_prompts("harmless", "test")[:2],
        thinking=False,
        max_new_tokens=4,
    )
    res = search(m, d, metrics, n_trials=2, n_startup_trials=1, progress=False, kl_target=0.01)
    assert res.study.sampler._n_ei_candidates == 128
    for _, row in res.trials.iterrows():
        t = res.study.trials[int(row.trial)]
        expected = heretic_score(row.kl, row.refusals, metrics.base_refusals)
        assert t.values == pytest.approx(list(expected))

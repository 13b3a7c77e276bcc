"""Head scores: batched exact ablation against one-at-a-time HeadAblation, attribution patching
against exact effects (a model where it is linear) and finite differences, the published direct
score against both, and the HeadScores ranking."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.evaluation import refusal_scores, refusal_token_ids
from thinklens.hooks import Edit
from thinklens.interventions.heads.attribution import (
    ablation_scores,
    attribution_scores,
    direct_scores,
    score_heads,
)
from thinklens.interventions.heads.metric import HeadMetric, last_resid
from thinklens.interventions.heads.scores import HeadScores, head_count, random_heads
from thinklens.probes import RefusalProbe, probe_features
from thinklens.sites import Site
from thinklens.testing import SAMPLE_TEXTS as TEXTS
from thinklens.testing import tiny_model

SCORED = [*TEXTS, "<|im_start|>user\nWe will pick a lock.<|im_end|>\n<|im_start|>assistant\n"]


def _probe(m, layer: int, norm: bool = True) -> RefusalProbe:
    gen = torch.Generator().manual_seed(1)
    probe = RefusalProbe.fit(m, torch.randn(20, m.d_model, generator=gen), [0, 1] * 10, layer)
    probe.norm = norm
    return probe


def _probe_logit(m, probe, texts) -> torch.Tensor:
    """The probe's logit at each text's last token, through the backend's capture."""
    feats = probe_features(m, texts, [probe.layer], probe.norm, "last", 8, False)
    return probe.logit(feats[probe.layer]).double()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_batched_ablation_equals_one_head_at_a_time(tiny_pair, backend, mode):
    m = tiny_pair[backend]
    probe = _probe(m, layer=1)
    means = tl.head_means(m, SCORED, range(m.n_layers)) if mode == "mean" else None
    got = ablation_scores(m, SCORED, HeadMetric("probe", probe), mode, means, progress=False)
    base = _probe_logit(m, probe, SCORED)
    for layer, head in [(0, 0), (0, 3), (1, 2)]:
        with tl.intervene(m, tl.HeadAblation({layer: [head]}, mode=mode, means=means)):
            effect = (base - _probe_logit(m, probe, SCORED)).mean()
        assert got[(layer, head)] == pytest.approx(float(effect), abs=2e-5)
    # Heads above the probe's layer cannot move it.
    assert torch.equal(got.scores[2], torch.zeros(m.n_heads, dtype=torch.float64))
    assert got.meta["replayed"]  # layers from the ablated one up, from recorded inputs


def test_refusal_metric_ablation_equals_logits_recomputed(tiny):
    got = ablation_scores(tiny, SCORED, HeadMetric("refusal"), progress=False)
    ids = refusal_token_ids(tiny)
    base = refusal_scores(tiny.logits(SCORED), ids)
    for layer, head in [(0, 1), (2, 3)]:
        with tl.intervene(tiny, tl.HeadAblation({layer: [head]})):
            effect = (base - refusal_scores(tiny.logits(SCORED), ids)).mean()
        assert got[(layer, head)] == pytest.approx(float(effect), abs=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "gemma3", "qwen3", "phi3"])
def test_layer_replay_equals_full_forwards(family):
    m = tiny_model(family, backend="nnsight")
    metric = HeadMetric("refusal")
    fast = ablation_scores(m, SCORED, metric, batch_size=8, progress=False)
    slow = ablation_scores(m, SCORED, metric, batch_size=8, progress=False, replay_layers=False)
    assert fast.meta["replayed"] and not slow.meta["replayed"]
    torch.testing.assert_close(fast.scores, slow.scores, atol=1e-5, rtol=1e-4)


def test_a_model_that_does_not_replay_falls_back_to_full_forwards(tiny, monkeypatch):
    import thinklens.interventions.heads.attribution as ha

    metric = HeadMetric("refusal")
    slow = ablation_scores(tiny, SCORED, metric, progress=False, replay_layers=False)
    for wrong in (lambda x: x * 0, lambda x: x[:1]):  # a wrong result, then an error

        def fake(model, rec, start, repeat, wrong=wrong):
            return wrong(rec.args[0][0].repeat_interleave(repeat, 0))

        monkeypatch.setattr(ha, "replay", fake)
        with pytest.warns(UserWarning, match="falls back to full forwards"):
            got = ablation_scores(tiny, SCORED, metric, progress=False)
        assert not got.meta["replayed"]
        torch.testing.assert_close(got.scores, slow.scores)


def _linear_model():
    """Layer 0 without its MLP: resid_post.0 is linear in z.0, so the probe logit is too."""
    m = tiny_model("llama", seed=3)
    with torch.no_grad():
        m.layer_modules()[0].get_submodule(m.family.mlp_out_proj).weight.zero_()
    return m


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_attribution_is_exact_where_the_metric_is_linear(mode):
    m = _linear_model()
    probe = _probe(m, layer=0, norm=False)
    metric = HeadMetric("probe", probe)
    exact = ablation_scores(m, SCORED, metric, mode, progress=False)
    attr = attribution_scores(m, SCORED, metric, mode, progress=False)
    torch.testing.assert_close(attr.scores, exact.scores, atol=1e-5, rtol=1e-4)
    if mode == "zero":
        # The published direct score is the same effect in units of the unit direction.
        direct = direct_scores(m, SCORED, probe, progress=False)
        w = float(probe.weight.norm())
        torch.testing.assert_close(direct.scores[0] * w, exact.scores[0], atol=1e-5, rtol=1e-4)


class _ScaleHead(Edit):
    """z of one head times (1 - eps): a finite-difference step along that head's output."""

    def __init__(self, layer: int, head: int, eps: float) -> None:
        self.layer, self.head, self.eps = layer, head, eps

    def site_fns(self, model):
        def fn(z):
            z = z.clone()
            z[..., self.head, :] *= 1 - self.eps
            return z

        return [(Site("z", self.layer), fn)]


def test_attribution_matches_finite_differences_on_the_full_model():
    m = tiny_model("llama", seed=0)
    m.hf.double()  # rotary tables stay float32: the step below is large enough for that noise
    probe = _probe(m, layer=2)
    metric = HeadMetric("probe", probe)
    attr = attribution_scores(m, SCORED, metric, progress=False)
    ids, mask = m.tokenize(SCORED)

    def value(*edits) -> float:
        with torch.no_grad():
            return float(metric(m, last_resid(m, ids, mask, 2, edits)).mean())

    eps = 1e-2
    for layer, head in [(0, 2), (1, 1), (2, 0)]:
        # Central difference of the metric along z_h, times -1: the first-order ablation effect.
        slope = (value(_ScaleHead(layer, head, -eps)) - value(_ScaleHead(layer, head, eps))) / 2
        assert attr[(layer, head)] == pytest.approx(slope / eps, rel=2e-3, abs=1e-6)


def test_score_heads_dispatches_and_checks(tiny):
    probe = _probe(tiny, layer=2)
    for method in ("direct", "ablation", "attribution"):
        s = score_heads(tiny, SCORED, method, probe, progress=False)
        assert s.method == method and s.scores.shape == (3, 4)
    with pytest.raises(ValueError, match="unknown scoring method 'gradient'"):
        score_heads(tiny, SCORED, "gradient", probe)
    with pytest.raises(ValueError, match="needs a refusal probe"):
        score_heads(tiny, SCORED, "ablation")
    with pytest.raises(ValueError, match="direct method dots head outputs with a probe"):
        score_heads(tiny, SCORED, "direct")
    with pytest.raises(ValueError, match="ablation mode 'scale' is unknown"):
        score_heads(tiny, SCORED, "ablation", probe, mode="scale")
    with pytest.raises(ValueError, match="no texts"):
        score_heads(tiny, [], "attribution", probe)


def _scores() -> HeadScores:
    return HeadScores(torch.tensor([[0.5, -2.0, 0.1], [-0.3, 3.0, -1.0]]), "toy")


def test_ranking_top_and_frame():
    s = _scores()
    assert s.ranked()[:3] == [(0, 1), (1, 2), (1, 0)]  # most refusal-lowering first
    assert s.top(2, order="descending") == [(1, 1), (0, 0)]
    assert s.top(2, order="abs") == [(1, 1), (0, 1)]
    assert s.top(fraction=0.5) == s.ranked()[:3]
    assert s.top(fraction=1.0) == s.ranked()
    assert head_count(270, fraction=0.03) == 8 and head_count(270, fraction=0.005) == 1
    df = s.frame()
    assert list(df.sort_values("rank")[["layer", "head"]].itertuples(index=False, name=None)) == (
        s.ranked()
    )
    back = HeadScores.from_frame(df)
    torch.testing.assert_close(back.scores, s.scores)
    abl = s.ablation(fraction=0.34, mode="zero")
    assert isinstance(abl, tl.HeadAblation) and abl.heads == [(0, 1), (1, 2)]
    assert s.agreement(s, k=2) == dict(spearman=pytest.approx(1.0), top_overlap=2, k=2)


def test_random_heads_are_distinct_and_seeded():
    a = random_heads(30, 9, fraction=0.03, seed=4)
    assert len(a) == len(set(a)) == 8
    assert all(0 <= l < 30 and 0 <= h < 9 for l, h in a)
    assert a == random_heads(30, 9, k=8, seed=4) and a != random_heads(30, 9, k=8, seed=5)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda s: s.top(fraction=0.0), ValueError, r"fraction 0.0 is outside \(0, 1\]"),
        (lambda s: s.top(fraction=1.5), ValueError, r"fraction 1.5 is outside \(0, 1\]"),
        (lambda s: s.top(fraction=-0.1), ValueError, "outside"),
        (lambda s: s.top(7), ValueError, "choose an integer from 1 to 6"),
        (lambda s: s.top(), ValueError, "exactly one of k"),
        (lambda s: s[(0, 3)], IndexError, "head 3 is out of range"),
        (lambda s: s[(2, 0)], IndexError, "layer 2 is out of range"),
        (lambda s: s.ranked("best"), ValueError, "order 'best' is unknown"),
        (lambda s: s.agreement(HeadScores(torch.zeros(3, 3), "x")), ValueError, "shapes"),
    ],
)
def test_bad_inputs_are_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(_scores())


def test_head_out_of_range_in_an_ablation_is_a_clear_error(tiny):
    with pytest.raises(IndexError, match="head 4 is out of range"):
        tl.intervene(tiny, HeadScores(torch.zeros(3, 5), "x").ablation(k=15))


@pytest.mark.real
def test_batched_ablation_and_attribution_on_smollm2(smollm2):
    m = smollm2["transformer_lens"]
    probe = _probe(m, layer=1)
    texts = [m.chat("How do I bake bread?"), m.chat("Name a colour.")]
    metric = HeadMetric("probe", probe)
    exact = ablation_scores(m, texts, metric, progress=False)
    base = _probe_logit(m, probe, texts)
    for layer, head in [(0, 4), (1, 7)]:
        with tl.intervene(m, tl.HeadAblation({layer: [head]})):
            effect = float((base - _probe_logit(m, probe, texts)).mean())
        assert exact[(layer, head)] == pytest.approx(effect, abs=1e-4)
    attr = attribution_scores(m, texts, metric, progress=False)
    assert attr.agreement(exact, k=5)["spearman"] > 0.5

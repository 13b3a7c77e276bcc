"""Interventions: checked against manual computations, on both backends and in generation."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.testing import SAMPLE_TEXTS as TEXTS


def _o_proj(model):
    return model.layer_modules()[1].get_submodule(model.family.o_proj)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_ablation_changes_only_that_head(tiny_pair, backend):
    m = tiny_pair[backend]
    base = tl.capture(m, TEXTS, ["z.1", "attn_out.1"], progress=False)
    with tl.intervene(m, tl.HeadAblation({1: [2]})):
        abl = tl.capture(m, TEXTS, ["z.1", "attn_out.1"], progress=False)
    expected = base["z.1"].clone()
    expected[:, :, 2] = 0
    torch.testing.assert_close(abl["z.1"], expected)
    # Manual: the attention output moves by exactly o_proj applied to the removed head output.
    removed = torch.zeros_like(base["z.1"])
    removed[:, :, 2] = base["z.1"][:, :, 2]
    w = _o_proj(m).weight
    delta = removed.flatten(-2) @ w.T
    keep = base.mask.bool()
    torch.testing.assert_close(
        (base["attn_out.1"] - abl["attn_out.1"])[keep], delta[keep], atol=1e-5, rtol=1e-4
    )


def test_edits_are_removed_on_exit(tiny):
    before = tiny.logits(TEXTS)
    with tl.intervene(tiny, tl.HeadAblation({0: [0, 1], 2: [3]})):
        during = tiny.logits(TEXTS)
    assert (during - before).abs().max() > 1e-4
    torch.testing.assert_close(tiny.logits(TEXTS), before)
    handle = tl.intervene(tiny, tl.HeadAblation([(1, 1)]))
    handle.remove()
    torch.testing.assert_close(tiny.logits(TEXTS), before)


def test_same_effect_on_both_backends(tiny_pair):
    r = torch.randn(tiny_pair["nnsight"].d_model)
    edits = [tl.HeadAblation({1: [0, 3]}, mode="scale"), tl.DirectionProjection(r)]
    out = {}
    for b, m in tiny_pair.items():
        with tl.intervene(m, edits):
            out[b] = m.logits(TEXTS)
    torch.testing.assert_close(out["transformer_lens"], out["nnsight"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_ablation_restores_the_attention_output_norm(tiny_pair, backend):
    m = tiny_pair[backend]
    site = f"attn_out.{1}"
    base = tl.capture(m, TEXTS, [site, "z.1"], progress=False)
    with tl.intervene(m, tl.HeadAblation({1: [1, 2]}, mode="scale", scale=0.0)):
        abl = tl.capture(m, TEXTS, [site], progress=False)
    keep = base.mask.bool()
    torch.testing.assert_close(abl[site].norm(dim=-1)[keep], base[site].norm(dim=-1)[keep])
    # Direction equals the zero-ablated projection, rescaled.
    z = base["z.1"].clone()
    z[:, :, [1, 2]] = 0
    manual = z.flatten(-2) @ _o_proj(m).weight.T
    keep &= manual.norm(dim=-1) > 1e-6  # the tiny model's padding-index token embeds to zero
    cos = torch.nn.functional.cosine_similarity(abl[site][keep], manual[keep], dim=-1)
    assert cos.min() > 1 - 1e-5


def test_mean_ablation_uses_reference_means(tiny):
    means = tl.head_means(tiny, TEXTS, [1])
    assert means[1].shape == (tiny.n_heads, tiny.d_head)
    base = tl.capture(tiny, TEXTS, ["z.1"], progress=False)
    keep = base.mask.bool()
    manual = base["z.1"][keep].mean(0)
    torch.testing.assert_close(means[1], manual, atol=1e-6, rtol=1e-5)
    with tl.intervene(tiny, tl.HeadAblation({1: [3]}, mode="mean", means=means)):
        abl = tl.capture(tiny, TEXTS, ["z.1"], progress=False)
    torch.testing.assert_close(abl["z.1"][keep][:, 3], means[1][3].expand(int(keep.sum()), -1))
    with pytest.raises(ValueError, match="head_means"):
        tl.intervene(tiny, tl.HeadAblation({1: [3]}, mode="mean"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_direction_projection_leaves_residuals_orthogonal(tiny_pair, backend):
    m = tiny_pair[backend]
    r = torch.randn(m.d_model)
    sites = [f"resid_post.{l}" for l in range(m.n_layers)] + ["resid_mid.1", "resid_pre.2"]
    base = tl.capture(m, TEXTS, sites, progress=False)
    with tl.intervene(m, tl.DirectionProjection(r)):
        caps = tl.capture(m, TEXTS, sites, progress=False)
    r_hat = r / r.norm()
    keep = caps.mask.bool()
    for s in sites:
        assert (base[s][keep] @ r_hat).abs().max() > 1e-2  # it was not orthogonal before
        assert (caps[s][keep] @ r_hat).abs().max() < 1e-5


def test_activation_addition_adds_exactly(tiny):
    v = torch.randn(tiny.d_model)
    base = tl.capture(tiny, TEXTS, ["resid_pre.1"], progress=False)
    with tl.intervene(tiny, tl.ActivationAddition(v, layers=[1], coeff=2.0)):
        caps = tl.capture(tiny, TEXTS, ["resid_pre.1"], progress=False)
    keep = caps.mask.bool()
    torch.testing.assert_close(
        caps["resid_pre.1"][keep] - base["resid_pre.1"][keep],
        (2.0 * v).expand(int(keep.sum()), -1),
        atol=1e-5,
        rtol=1e-5,
    )


def test_edits_act_during_generation(tiny):
    prompts = ["I can't bake bread.", "We will write a poem."]
    plain = tl.generate(tiny, prompts, max_new_tokens=8)
    r = tiny.hf.get_submodule(tiny.family.embed).weight[5].detach()
    with tl.intervene(tiny, tl.ActivationAddition(r * 50, layers=[0, 1, 2])):
        steered = tl.generate(tiny, prompts, max_new_tokens=8)
    assert steered != plain
    assert tl.generate(tiny, prompts, max_new_tokens=8) == plain


def test_generation_batch_equals_one_at_a_time(tiny):
    prompts = ["I can't bake bread.", "We will write a poem about a garden today."]
    batched = tl.generate(tiny, prompts, max_new_tokens=6)
    assert batched == [tl.generate(tiny, [p], max_new_tokens=6)[0] for p in prompts]
    sampled = tl.generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=1)
    assert sampled == tl.generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=1)


@pytest.mark.parametrize(
    "edit, error, match",
    [
        (lambda m: tl.HeadAblation({1: [9]}), IndexError, "head 9 is out of range"),
        (lambda m: tl.HeadAblation({7: [0]}), IndexError, "layer 7 is out of range"),
        (lambda m: tl.DirectionProjection(torch.randn(5)), ValueError, "another model"),
        (
            lambda m: tl.ActivationAddition(torch.randn(m.d_model), layers=[3]),
            IndexError,
            "out of range",
        ),
    ],
)
def test_bad_edits_are_clear_errors(tiny, edit, error, match):
    with pytest.raises(error, match=match):
        tl.intervene(tiny, edit(tiny))

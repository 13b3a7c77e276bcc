"""Head ablation with the refusal-cliff code's norm restore: heads x 0.001, one Frobenius norm."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.testing import SAMPLE_TEXTS

HEADS = {1: [0, 2]}


def brute_force_logits(m, texts, heads, value=0.001):
    """A plain HF forward whose o_proj input at each chosen layer is rewritten as the published
    patch does: keep a copy, scale the chosen heads, divide by the new Frobenius norm of the
    whole [batch, pos, head, d_head] tensor and multiply by the old one."""
    ids, mask = m.tokenize(texts)
    handles = []
    for layer, hs in heads.items():
        o_proj = m.hf.model.layers[layer].self_attn.o_proj

        def pre(mod, args, hs=hs):
            x = args[0]
            z = x.reshape(*x.shape[:-1], m.n_heads, -1)
            original = z.clone()
            for h in hs:
                z[:, :, h, :] = z[:, :, h, :] * value
            z = z / z.norm() * original.norm()
            return (z.reshape(x.shape),)

        handles.append(o_proj.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            logits = m.hf(input_ids=ids, attention_mask=mask).logits
    finally:
        for h in handles:
            h.remove()
    last = mask.sum(-1) - 1
    return logits[torch.arange(len(texts)), last]


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_restore_equals_the_published_patch(tiny_pair, backend):
    m = tiny_pair[backend]
    for texts in (SAMPLE_TEXTS[:1], SAMPLE_TEXTS):
        edit = tl.HeadAblation(HEADS, mode="scale", scale=0.001, restore="global")
        with tl.intervene(m, edit):
            got = m.logits(texts, batch_size=len(texts))
        ref = brute_force_logits(m, texts, HEADS)
        torch.testing.assert_close(got, ref.float(), atol=1e-5, rtol=0)
        # The default restores each position's attention-output norm: another result.
        with tl.intervene(m, tl.HeadAblation(HEADS, mode="scale", scale=0.001)):
            own = m.logits(texts, batch_size=len(texts))
        assert (own - got).abs().max() > 1e-4


def test_unknown_restore_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown restore 'row'"):
        tl.HeadAblation(HEADS, mode="scale", restore="row")

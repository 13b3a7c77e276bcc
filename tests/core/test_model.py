"""Model conveniences: traces in the model's own format feed capture spans directly."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens.testing import tiny_model


def test_trace_spans_drive_capture():
    m = tiny_model("llama")
    tr = m.trace(
        "I can't bake bread.",
        thinking="Hmm, the user asks how to bake bread.",
        answer="Sure, here it is.",
    )
    assert tr.text.startswith("<|im_start|>system") and "</think>" in tr.text
    span = tr.spans["thinking"]
    caps = tl.capture(m, [tr.text], ["resid_post.1"], positions=[span], progress=False)
    full = tl.capture(m, [tr.text], ["resid_post.1"], progress=False)["resid_post.1"][0]
    torch.testing.assert_close(caps["resid_post.1"][0], full[span[0] : span[1]])
    assert len(tr.input_ids) == int(full.shape[0])


def test_trace_without_thinking_when_required_is_an_error():
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="thinking"):
        m.trace("I can't bake bread.", answer="Sure.", require_thinking=True)


def test_shape_facts():
    m = tiny_model("gemma3")
    assert (m.n_layers, m.n_heads, m.n_kv_heads, m.d_model, m.d_head) == (3, 4, 2, 64, 16)
    with pytest.raises(IndexError, match="layer 3 is out of range"):
        m.check_layer(3)
    assert m.check_layer(-1) == 2

"""The embedded real models: both backends agree with a separately loaded plain HF model."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens.embedded import embedded_folder

pytestmark = pytest.mark.real

PROMPTS = ["What is the capital of France?", "Write a short poem about the sea and the wind."]


def _plain_hf(alias: str, texts: list[str], model: tl.Model, layers: list[int]):
    """Hidden states, eager attention weights and o_proj inputs from an independent HF load."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        embedded_folder(alias), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids, mask = model.tokenize(texts)
    zs = {}
    handles = [
        hf.get_submodule(
            f"{model.family.layers}.{l}.{model.family.o_proj}"
        ).register_forward_pre_hook(
            lambda m, a, l=l: zs.__setitem__(l, a[0].unflatten(-1, (model.n_heads, -1)))
        )
        for l in layers
    ]
    with torch.no_grad():
        out = hf(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
        )
    for h in handles:
        h.remove()
    return out, zs, mask.bool()


@pytest.mark.parametrize(
    "which, alias, layers",
    [
        ("smollm2", "smollm2-135m-instruct", [0, 7, 15, 28]),
        ("gemma", "gemma-3-270m", [0, 5, 11, 16]),
    ],
)
def test_backends_match_plain_hf(request, which, alias, layers):
    models = request.getfixturevalue(which)
    tlm, nns = models["transformer_lens"], models["nnsight"]
    texts = [tlm.chat(p) for p in PROMPTS]
    sites = [f"{k}.{l}" for l in layers for k in ("resid_post", "z", "pattern")]
    a = tl.capture(tlm, texts, sites, progress=False)
    b = tl.capture(nns, texts, sites, progress=False)
    out, zs, keep = _plain_hf(alias, texts, tlm, layers)
    q = keep[:, None, :, None] & keep[:, None, None, :]
    for l in layers:
        for caps in (a, b):
            assert (caps[f"resid_post.{l}"] - out.hidden_states[l + 1])[keep].abs().max() < 1e-4
            assert (caps[f"z.{l}"] - zs[l])[keep].abs().max() < 1e-4
            pat = caps[f"pattern.{l}"] - out.attentions[l]
            assert pat.abs()[q.expand_as(pat)].max() < 1e-4
        for s in (f"resid_post.{l}", f"z.{l}", f"pattern.{l}"):
            assert (a[s] - b[s]).abs().max() < 1e-4


def test_smollm2_generates_and_edits_change_it(smollm2):
    m = smollm2["transformer_lens"]
    plain = tl.generate(m, ["What is the capital of France?"], max_new_tokens=12)
    assert "Paris" in plain[0]
    heads = {l: list(range(m.n_heads)) for l in range(4, 12)}
    with tl.intervene(m, tl.HeadAblation(heads)):
        ablated = tl.generate(m, ["What is the capital of France?"], max_new_tokens=12)
    assert ablated != plain
    assert (
        tl.generate(smollm2["nnsight"], ["What is the capital of France?"], max_new_tokens=12)
        == plain
    )

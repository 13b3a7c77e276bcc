"""Readings and protocols: Heretic's prompt text and response prefix, biases, preset names."""

from __future__ import annotations

import os

import pytest
import torch
from tokenizers import processors

import thinklens as tl
from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration.ablation import PlanHooks, directional_ablation
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.interventions.abliteration.presets import (
    PRESETS,
    PUBLISHED,
    direction_source,
    get_preset,
    plan,
    preset_direction,
)
from thinklens.interventions.abliteration.protocol import (
    chat_text,
    common_response_prefix,
    default_special_prefix,
    detect_response_prefix,
)
from thinklens.interventions.abliteration.weights import apply
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "train")[:4]
HARMLESS = bundled_prompts("harmless", "train")[:4]


def test_heretic_chat_text_is_system_user_generation_prompt_prefix():
    m = tiny_model("llama", backend="nnsight")
    want = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nBake bread.<|im_end|>\n<|im_start|>assistant\n<think></think>"
    )
    got = chat_text(m, "Bake bread.", "You are a helpful assistant.", "<think></think>", True)
    assert got == want


def test_default_special_tokens_are_prepended_as_the_tokenizer_adds_them():
    m = tiny_model("llama", backend="nnsight")
    assert default_special_prefix(m.tokenizer) == ""  # the tiny tokenizer adds nothing
    tok = m.tokenizer
    bos = processors.TemplateProcessing(
        single="<|im_start|> $A",
        special_tokens=[("<|im_start|>", tok.convert_tokens_to_ids("<|im_start|>"))],
    )
    tok.backend_tokenizer.post_processor = bos
    assert default_special_prefix(tok) == "<|im_start|>"
    text = chat_text(m, "Bake bread.", "sys", special_tokens=True)
    ids, _ = m.tokenize([text])  # thinklens tokenizes without special tokens
    # Heretic tokenizes the chat text with the tokenizer's defaults: a second <|im_start|>.
    assert ids[0].tolist() == tok(m.chat("Bake bread.", "sys"))["input_ids"]


@pytest.mark.parametrize(
    "first, second, want",
    [
        (["Sure thing", "Sure, no"], None, "Sure"),  # trailing spaces dropped
        (["Yes", "No"], None, ""),
        (["<think>\nHmm a", "<think>\nHmm b"], ["\n\nOk", "\n\nNo"], "<think></think>\n\n"),
        (["<think>x", "<think>y"], ["A", "B"], "<think></think>"),
        (["[THINK]a", "[THINK]b"], ["  x", "  y"], "[THINK][/THINK]"),  # "  " stripped
    ],
)
def test_common_response_prefix_rule(first, second, want):
    asked = []

    def respond(prefix: str) -> list[str]:
        asked.append(prefix)
        return first if prefix == "" else second

    assert common_response_prefix(respond) == want
    assert len(asked) == (1 if second is None else 2)


def _brute_prefix(m, prompts, n_new):
    """Heretic's detection with plain HF calls: left-padded greedy batches, specials kept."""
    tok = m.tokenizer

    def respond(prefix: str) -> list[str]:
        texts = [
            tok.apply_chat_template(
                [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": p},
                ],
                add_generation_prompt=True,
                tokenize=False,
            )
            + prefix
            for p in prompts
        ]
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, return_token_type_ids=False)
        tok.padding_side = "right"
        out = m.hf.generate(
            **enc, max_new_tokens=n_new, pad_token_id=tok.pad_token_id, do_sample=False
        )
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=False)

    first = os.path.commonprefix(respond("")).rstrip(" ")
    if first.startswith("<think>"):
        return "<think></think>" + os.path.commonprefix(respond("<think></think>")).rstrip(" ")
    return first


@pytest.mark.parametrize("force_think", [False, True])
def test_detect_response_prefix_equals_brute_force(force_think):
    m = tiny_model("llama", backend="nnsight")
    prompts = HARMLESS[:3] + HARMFUL[:3]
    think = m.tokenizer.convert_tokens_to_ids("<think>")
    handle = None
    if force_think:  # a model that always opens its thinking: the CoT path runs
        handle = m.hf.lm_head.register_forward_hook(
            lambda mod, args, out: out.index_add(
                -1, torch.tensor([think]), torch.full((*out.shape[:-1], 1), 1e4)
            )
        )
    try:
        got = detect_response_prefix(m, prompts, max_new_tokens=3, batch_size=4)
        want = _brute_prefix(m, prompts, 3)
    finally:
        if handle is not None:
            handle.remove()
    assert got == want
    if force_think:
        assert got == "<think></think>" + "<think>" * 3
    # compute_directions detects it on the first harmless, then harmful prompts.
    d = compute_directions(m, HARMFUL[:1], HARMLESS[:1], reading="heretic", progress=False)
    assert d.meta["response_prefix"] == detect_response_prefix(m, HARMLESS[:1] + HARMFUL[:1])


def test_preset_functions_take_names_or_presets():
    m = tiny_model("llama", backend="nnsight")
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    by_name = preset_direction(m, "erisforge", d)
    torch.testing.assert_close(by_name, preset_direction(m, PRESETS["erisforge"], d))
    assert direction_source(m, "deccp", d) == (1, -1)
    assert get_preset(PRESETS["deccp"], "published") is PUBLISHED["deccp"]
    assert get_preset("heretic", "published").reading == "heretic"
    with pytest.raises(ValueError, match="no published protocol is pinned for 'failspy'"):
        plan(m, "failspy", d, protocol="published")
    with pytest.raises(ValueError, match="protocol='nope'"):
        plan(m, "deccp", d, protocol="nope")


def _random_biases(m) -> None:
    with torch.no_grad():
        for name, p in m.hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)


@pytest.mark.parametrize("preset", ["arditi", "failspy", "deccp", "erisforge", "heretic"])
def test_biases_are_left_alone_unless_asked(preset):
    m = tiny_model("gpt2", backend="nnsight")  # GPT-2 writes with biased Conv1D projections
    _random_biases(m)
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    d.meta["selected"] = dict(pos=-1, layer=1)
    before = {k: v.clone() for k, v in m.hf.state_dict().items() if k.endswith("bias")}
    new = apply(m, preset, d)
    after = new.hf.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    with_bias = apply(m, preset, d, bias=True)
    edits = plan(m, preset, d, bias=True)
    e = edits[-1]
    b = before[f"{e.module}.bias"].double()
    r = e.direction
    want = (b - e.weight * (b @ r) * r).float()
    torch.testing.assert_close(with_bias.hf.state_dict()[f"{e.module}.bias"], want)
    assert with_bias.hf.thinklens_edit["biases_edited"]


def test_hooks_are_the_twin_of_the_weight_edit_with_and_without_biases():
    m = tiny_model("gpt2", backend="nnsight")
    _random_biases(m)
    r = compute_directions(m, HARMFUL, HARMLESS, progress=False).direction(2)
    texts = [m.chat(p) for p in bundled_prompts("harmless", "test")[:3]]
    with tl.intervene(m, directional_ablation(m, r)):  # the whole write, bias included
        ablated = m.logits(texts)
    with tl.intervene(m, PlanHooks(plan(m, "arditi", r))):  # the weights' write only
        hooked = m.logits(texts)
    torch.testing.assert_close(
        apply(m, "arditi", r, bias=True).logits(texts), ablated, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(apply(m, "arditi", r).logits(texts), hooked, atol=1e-5, rtol=0)
    assert (ablated - hooked).abs().max() > 1e-3  # the biases' component matters here
    with pytest.raises(ValueError, match="no hook form"):
        PlanHooks(plan(m, "deccp", r, protocol="published")).install(m, m.hf)


def test_answer_reading_is_the_last_token_after_the_detected_prefix_before_the_final_norm():
    """The "answer" reading, against plain HF calls: the model's own template (no added system
    prompt or special tokens) plus the prefix Heretic's rule detects, last token, every block
    input and the last block's output (before the final norm)."""
    m = tiny_model("llama", backend="nnsight")
    tok = m.tokenizer
    prefix = detect_response_prefix(m, HARMLESS + HARMFUL, system=None, special_tokens=False)
    d = compute_directions(m, HARMFUL, HARMLESS, reading="answer", progress=False)
    assert d.positions == [-1]
    assert d.meta["reading"] == "answer" and d.meta["response_prefix"] == prefix
    assert d.meta["system"] is None and d.meta["last_point"] == "resid_post"

    def means(prompts):
        seen: list[torch.Tensor] = []  # the last block's output, before the final norm
        h = m.hf.model.layers[-1].register_forward_hook(
            lambda mod, a, o: seen.append(o[0] if isinstance(o, tuple) else o)
        )
        rows = []
        try:
            for p in prompts:
                text = tok.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                )
                enc = tok(text + prefix, add_special_tokens=False, return_tensors="pt")
                with torch.no_grad():
                    out = m.hf(enc["input_ids"], output_hidden_states=True)
                assert not torch.equal(seen[-1], out.hidden_states[-1])  # that one is normed
                points = [*out.hidden_states[:-1], seen[-1]]
                rows.append(torch.stack(points)[:, 0, -1].double())
        finally:
            h.remove()
        return torch.stack(rows).mean(0)

    torch.testing.assert_close(d.harmful[0], means(HARMFUL), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.harmless[0], means(HARMLESS), rtol=1e-5, atol=1e-5)

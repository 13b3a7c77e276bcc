"""Backends built from their parts, the family table's site locations, and the one registry."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
from torch import Tensor

import thinklens as tl
from thinklens.backends import (
    BACKENDS,
    REGISTRY,
    BackendName,
    BackendParts,
    check_backend,
    make_backend,
)
from thinklens.families import FAMILIES, family_for
from thinklens.hooks import Edit
from thinklens.model import Model, get_path
from thinklens.sites import SITE_KINDS, Site
from thinklens.testing import SAMPLE_TEXTS as TEXTS
from thinklens.testing import tiny_chat_tokenizer, tiny_model

ALL_SITES = [Site(kind, 1) for kind in SITE_KINDS]


def _bare_parts() -> BackendParts:
    """A tiny Llama and its tokenizer made by hand: no Model anywhere."""
    import transformers as tf

    tok = tiny_chat_tokenizer()
    cfg = tf.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(0)
    hf = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    hf.eval()
    return BackendParts(hf=hf, tokenizer=tok, family=family_for(cfg), name="bare", n_heads=4)


def _encode(tok: object) -> tuple[Tensor, Tensor]:
    """The sample texts right-padded, as ``Model.tokenize`` pads (nnsight sets "left")."""
    tok.padding_side = "right"
    enc = tok(TEXTS, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def _run(backend, ids: Tensor, mask: Tensor, sites: list[Site]) -> dict[Site, Tensor]:
    got: dict[Site, Tensor] = {}
    with torch.no_grad():
        backend.run(ids, mask, sites, lambda s, x: got.__setitem__(s, x.detach()))
    return got


@pytest.mark.parametrize("name", BACKENDS)
def test_a_backend_from_parts_captures_what_a_model_does(name):
    parts = _bare_parts()
    backend = make_backend(name, parts)
    assert not any(isinstance(v, Model) for v in vars(backend).values())
    assert backend.trees()[0] is parts.hf
    ids, mask = _encode(parts.tokenizer)
    got = _run(backend, ids, mask, ALL_SITES)
    assert set(got) == set(ALL_SITES)

    # A tokenizer of its own: booting a bridge marks the one it is given (see Model.with_weights).
    tok = tiny_chat_tokenizer()
    model = Model(parts.hf, tok, parts.family, name="bare", backend_name=name)
    caps = tl.capture(model, TEXTS, ALL_SITES, progress=False)
    keep = caps.mask.bool()
    for s in ALL_SITES:
        if s.kind == "pattern":
            both = keep[:, None, :, None] & keep[:, None, None, :]
            both = both.expand_as(caps[s])
            torch.testing.assert_close(got[s][both], caps[s][both], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(got[s][keep], caps[s][keep], atol=1e-5, rtol=0)
    last = (mask.sum(-1) - 1)[:, None]
    with torch.no_grad():
        logits = backend.logits(ids, mask, positions=last)[:, 0]
    torch.testing.assert_close(logits, model.logits(TEXTS), atol=1e-5, rtol=0)


class _ZeroHead(Edit):
    def site_fns(self, model: Model) -> list:
        return [(Site("z", 1), _zero_head_2)]


def _zero_head_2(z: Tensor) -> Tensor:
    z = z.clone()
    z[..., 2, :] = 0
    return z


def test_trace_ops_of_a_bare_nnsight_backend_act_like_hooked_edits():
    parts = _bare_parts()
    backend = make_backend("nnsight", parts)
    ids, mask = _encode(parts.tokenizer)
    plain = _run(backend, ids, mask, [Site("resid_post", 2)])[Site("resid_post", 2)]
    backend.trace_ops.append((Site("z", 1), _zero_head_2, False))
    traced = _run(backend, ids, mask, [Site("resid_post", 2)])[Site("resid_post", 2)]
    backend.trace_ops.clear()

    model = Model(parts.hf, parts.tokenizer, parts.family, name="bare", backend_name="nnsight")
    with tl.intervene(model, _ZeroHead()):  # local: torch hooks, no trace ops
        assert model.backend.trace_ops == []
        hooked = tl.capture(model, TEXTS, ["resid_post.2"], progress=False)
    keep = hooked.mask.bool()
    assert (traced[keep] - plain[keep]).abs().max() > 1e-4
    torch.testing.assert_close(traced[keep], hooked["resid_post.2"][keep], atol=1e-5, rtol=0)


def test_remote_edits_enter_and_leave_the_backend_as_trace_ops():
    m = tiny_model("llama", "nnsight")
    remote = Model(
        m.hf, m.tokenizer, m.family, name="org/tiny", backend_name="nnsight", remote="local"
    )
    first = tl.intervene(remote, _ZeroHead())
    second = tl.intervene(remote, _ZeroHead(), tl.HeadAblation({2: [1]}))
    ops = remote.backend.trace_ops
    assert ops == [*first.ops, *second.ops] and len(ops) == 3
    # The first's op equals the second's first op; only the first's own leaves, order kept.
    first.remove()
    assert len(ops) == 2 and all(a is b for a, b in zip(ops, second.ops, strict=True))
    second.remove()
    assert ops == [] and remote.interventions == []


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_site_module_answers_for_every_site_kind(family):
    fam = FAMILIES[family]
    hf = tiny_model(family, "nnsight").hf
    for kind in SITE_KINDS:
        path, port, index = fam.site_module(Site(kind, 2))
        assert path.startswith(f"{fam.layers}.2")
        assert isinstance(get_path(hf, path), torch.nn.Module)
        assert port in ("input", "output") and index == (1 if kind == "pattern" else 0)


def test_site_module_rows():
    llama, gemma, gpt2 = FAMILIES["llama"], FAMILIES["gemma3"], FAMILIES["gpt2"]
    expected = {
        "resid_pre": ("model.layers.4", "input", 0),
        "z": ("model.layers.4.self_attn.o_proj", "input", 0),
        "pattern": ("model.layers.4.self_attn", "output", 1),
        "attn_out": ("model.layers.4.self_attn", "output", 0),
        "resid_mid": ("model.layers.4.post_attention_layernorm", "input", 0),
        "mlp_out": ("model.layers.4.mlp", "output", 0),
        "resid_post": ("model.layers.4", "output", 0),
    }
    assert {k: llama.site_module(Site(k, 4)) for k in SITE_KINDS} == expected
    assert gemma.site_module(Site("attn_out", 0)) == (
        "model.layers.0.post_attention_layernorm",
        "output",
        0,
    )
    assert gemma.site_module(Site("resid_mid", 0))[0] == "model.layers.0.pre_feedforward_layernorm"
    assert gpt2.site_module(Site("z", 1, heads=(3,))) == ("transformer.h.1.attn.c_proj", "input", 0)


def _keep_input(seen: dict, site: Site):
    def hook(mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen[site] = args[0] if args else next(iter(kwargs.values()))

    return hook


def _keep_output(seen: dict, site: Site, index: int):
    def hook(mod: torch.nn.Module, args: tuple, out: object) -> None:
        seen[site] = out[index] if isinstance(out, tuple) else out

    return hook


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_site_module_agrees_with_transformer_lens_hook_points(family):
    """Hooking where the table says gives what TransformerLens's own hook points give."""
    m = tiny_model(family, "transformer_lens")
    caps = tl.capture(m, TEXTS, ALL_SITES, progress=False)
    ids, mask = m.tokenize(TEXTS)
    seen: dict[Site, Tensor] = {}
    handles = []
    for s in ALL_SITES:
        path, port, index = m.family.site_module(s)
        module = get_path(m.hf, path)
        if port == "input":
            handles.append(module.register_forward_pre_hook(_keep_input(seen, s), with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(_keep_output(seen, s, index)))
    try:
        from thinklens.backends.base import eager_attention

        with torch.no_grad(), eager_attention(m.trees()):
            m.hf(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    keep = caps.mask.bool()
    for s in ALL_SITES:
        x = seen[s].unflatten(-1, (m.n_heads, -1)) if s.kind == "z" else seen[s]
        if s.kind == "pattern":
            both = (keep[:, None, :, None] & keep[:, None, None, :]).expand_as(x)
            torch.testing.assert_close(x[both], caps[s][both], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(x[keep], caps[s][keep], atol=1e-5, rtol=0)


def test_one_registry_of_backend_names():
    assert BACKENDS == tuple(REGISTRY) == typing.get_args(BackendName)
    assert check_backend("nnsight") == "nnsight"


def test_an_unknown_backend_lists_the_registry():
    listed = ", ".join(REGISTRY)
    with pytest.raises(ValueError, match=f"unknown backend 'vllm'.*{listed}"):
        make_backend("vllm", _bare_parts())
    m = tiny_model("llama", "nnsight")
    with pytest.raises(ValueError, match=f"unknown backend 'hf'.*{listed}"):
        Model(m.hf, m.tokenizer, m.family, name="x", backend_name="hf")
    with pytest.raises(ValueError, match=f"unknown backend 'vllm'.*{listed}"):
        tl.load_model("smollm2-135m-instruct", backend="vllm")


def test_transformer_lens_from_parts_refuses_remote():
    parts = _bare_parts()
    remote = dataclasses.replace(parts, remote=True)
    with pytest.raises(ValueError, match="backend='nnsight'"):
        make_backend("transformer_lens", remote)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_nnsight_logits_unembed_only_the_last_positions_and_match_one_text_at_a_time(family):
    from thinklens.testing import tiny_model

    m = tiny_model(family, backend="nnsight")
    assert m.backend.keeps_logits
    texts = ["Hi", "Name a fruit, please.", "Count to five and then stop."]
    got = m.logits(texts, batch_size=3)
    for i, t in enumerate(texts):  # brute force: each text alone, every position unembedded
        ids = m.tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            alone = m.hf(input_ids=ids).logits[0, -1].float()
        torch.testing.assert_close(got[i], alone, atol=1e-5, rtol=1e-5)

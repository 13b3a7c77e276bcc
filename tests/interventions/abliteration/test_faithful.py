"""The published protocols of DECCP, ErisForge and Heretic, pinned against brute force.

Each expected value is recomputed here from the tool's published formula with plain HF calls
(``output_hidden_states=True``, hand-built chat text, torch ops), never by the code under test.
The tools compute directions in the model's dtype (float32 here; Heretic accumulates its sums
in float64, then goes on in float32); the brute force computes them in float64, as thinklens
does, so the two agree within 1e-6, not bit for bit. Weight edits: ErisForge and DECCP compute
``W - s (d d^T) W`` in float32 and cast to bfloat16, the brute force in float64 then bfloat16,
compared exactly; Heretic's rank-3 change is recomputed with the same seeded ``svd_lowrank``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

from thinklens.data import bundled_prompts
from thinklens.families import family_for
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel
from thinklens.interventions.abliteration.presets import preset_direction
from thinklens.interventions.abliteration.weights import apply
from thinklens.model import Model
from thinklens.testing import tiny_chat_tokenizer, tiny_model

HARMFUL = bundled_prompts("harmful", "train")[:5]
HARMLESS = bundled_prompts("harmless", "train")[:5]
SYSTEM = "You are a helpful assistant."  # Heretic's default system prompt
PREFIX = "<think></think>\n\n"  # a response prefix as Heretic detects it on a <think> model


def biased_llama(n_layers: int = 10, backend: str = "nnsight") -> Model:
    """A tiny Llama whose o_proj and down_proj have (nonzero) biases."""
    tok = tiny_chat_tokenizer()
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        attention_bias=True,
        mlp_bias=True,
        pad_token_id=0,
        architectures=["LlamaForCausalLM"],
    )
    hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    return Model(hf, tok, family_for(hf.config), name="tiny-llama-bias", backend_name=backend)


# --- brute force ------------------------------------------------------------------------------
@torch.no_grad()
def heretic_states(m: Model, prompt: str, prefix: str) -> torch.Tensor:
    """Heretic: system + user chat text, generation prompt, prefix; the tokenizer's default
    special tokens; every hidden_states entry at the last token (the last one final-normed)."""
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    text = m.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc = m.tokenizer(text + prefix, return_tensors="pt")
    hs = m.hf(**enc, output_hidden_states=True).hidden_states
    return torch.stack([h[0, -1] for h in hs]).double()


def heretic_directions(m: Model, prefix: str = PREFIX, q: float | None = None) -> dict:
    """Heretic's per-index refusal directions (raw, unit, and projected), shape [L+1, d]."""

    def mean(prompts: list[str]) -> torch.Tensor:
        x = torch.stack([heretic_states(m, p, prefix) for p in prompts])
        if q is not None:  # winsorisation per (prompt, index) over the components
            t = torch.quantile(x.abs(), q, dim=2, keepdim=True)
            x = torch.clamp(x, -t, t)
        return x.mean(0)

    bad, good = mean(HARMFUL), mean(HARMLESS)
    r = F.normalize(bad - good, p=2, dim=1)
    g = F.normalize(good, p=2, dim=1)
    proj = F.normalize(r - (r * g).sum(1, keepdim=True) * g, p=2, dim=1)
    return dict(unit=r, projected=proj)


@torch.no_grad()
def last_token_direction(m: Model, index: int) -> torch.Tensor:
    """ErisForge / DECCP: user-only chat, one generate step, hidden_states[0][index][:, -1]."""

    def state(prompt: str) -> torch.Tensor:
        msgs = [{"role": "user", "content": prompt}]
        enc = m.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        out = m.hf.generate(
            **enc,
            use_cache=False,
            max_new_tokens=1,
            return_dict_in_generate=True,
            output_hidden_states=True,
            pad_token_id=m.tokenizer.pad_token_id,
        )
        return out.hidden_states[0][index][:, -1:, :].mean(dim=1)[0].double()

    d = torch.stack([state(p) for p in HARMFUL]).mean(0)
    d = d - torch.stack([state(p) for p in HARMLESS]).mean(0)
    return d / d.norm()


def rank1_bf16(w: torch.Tensor, d: torch.Tensor, scale: float) -> torch.Tensor:
    """ErisForge's ``_modify_tensor`` / DECCP's ``modify_tensor``: W - s (d d^T) W, bfloat16."""
    w = w.detach().double()
    return (w - scale * (torch.outer(d, d) @ w)).to(torch.bfloat16)


def heretic_weight(w: torch.Tensor, v: torch.Tensor, lam: float, rank: int | None, seed: int):
    """Heretic's full row normalisation; with ``rank``, its seeded low-rank stored change."""
    w0 = w.detach().double()
    norms = w0.norm(dim=1, keepdim=True)
    wn = F.normalize(w0, p=2, dim=1)
    wn = wn + (-lam * v)[:, None] @ (v @ wn)[None, :]
    delta = F.normalize(wn, p=2, dim=1) * norms - w0
    if rank is None:
        return (w0 + delta).to(w.dtype)
    torch.manual_seed(seed)
    u, s, vv = torch.svd_lowrank(delta.float(), q=2 * rank + 4, niter=6)
    b = u[:, :rank] @ torch.diag(torch.sqrt(s[:rank]))
    a = torch.diag(torch.sqrt(s[:rank])) @ vv[:, :rank].T
    return w.detach() + (b @ a).to(w.dtype)


def kernel_weight(k: Kernel, layer: int) -> float | None:
    distance = abs(layer - k.max_weight_position)
    if distance > k.min_weight_distance:
        return None
    return k.max_weight + (distance / k.min_weight_distance) * (k.min_weight - k.max_weight)


def outputs(m: Model, l: int) -> list:
    layer = m.hf.model.layers[l]
    return [("attn", layer.self_attn.o_proj), ("mlp", layer.mlp.down_proj)]


# --- Heretic ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("backend", ["nnsight", "transformer_lens"])
def test_heretic_directions_equal_brute_force(family, backend):
    m = tiny_model(family, backend=backend)
    d = compute_directions(m, HARMFUL, HARMLESS, reading="heretic", response_prefix=PREFIX)
    brute = heretic_directions(m)
    assert d.positions == [-1] and d.meta["response_prefix"] == PREFIX
    torch.testing.assert_close(d.directions()[0], brute["unit"], atol=1e-6, rtol=0)
    torch.testing.assert_close(d.directions(project=True)[0], brute["projected"], atol=1e-6, rtol=0)
    # A float direction_index d: lerp of indices int(d + 1) and int(d + 1) + 1, renormalised.
    r = brute["projected"]
    lerp = torch.lerp(r[1], r[2], 0.7)
    torch.testing.assert_close(
        d.direction(0.7 + 1, project=True), lerp / lerp.norm(), atol=1e-6, rtol=0
    )
    # The last index is read after the final norm: not what the thinklens reading gives.
    plain = compute_directions(m, HARMFUL, HARMLESS, positions="last", progress=False)
    assert (plain.directions()[0, -1] - brute["unit"][-1]).abs().max() > 1e-2


def test_heretic_winsorised_directions_equal_brute_force():
    m = tiny_model("llama", backend="nnsight")
    d = compute_directions(
        m, HARMFUL, HARMLESS, winsorize_quantile=0.9, reading="heretic", response_prefix=PREFIX
    )
    brute = heretic_directions(m, q=0.9)
    torch.testing.assert_close(d.directions(project=True)[0], brute["projected"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("index", [None, 0.7])
def test_heretic_published_weights_equal_brute_force(index):
    m = biased_llama(n_layers=4)
    d = compute_directions(m, HARMFUL, HARMLESS, reading="heretic", response_prefix=PREFIX)
    brute = heretic_directions(m)["projected"]
    attn, mlp = Kernel(1.2, 1.0, 0.4, 2.0), Kernel(1.0, 2.5, 0.5, 1.5)
    params = HereticParams(attn=attn, mlp=mlp, direction_index=index, seed=7)
    new = apply(m, "heretic", d, params=params, protocol="published")
    exact = apply(m, "heretic", d, params=params)  # thinklens: the exact norm-preserving edit
    if index is None:
        vs = [brute[l + 1] for l in range(m.n_layers)]  # layer l: index l + 1 (last: normed)
    else:
        g = torch.lerp(brute[1], brute[2], 0.7)
        vs = [g / g.norm()] * m.n_layers
    n_edited = 0
    for l in range(m.n_layers):
        triples = zip(outputs(m, l), outputs(new, l), outputs(exact, l), strict=True)
        for (c, mod), (_, got), (_, ex) in triples:
            lam = kernel_weight(attn if c == "attn" else mlp, l)
            torch.testing.assert_close(got.bias, mod.bias, atol=0, rtol=0)  # biases untouched
            if lam is None:
                torch.testing.assert_close(got.weight, mod.weight, atol=0, rtol=0)
                continue
            n_edited += 1
            want = heretic_weight(mod.weight, vs[l], lam, 3, seed=7)
            torch.testing.assert_close(got.weight, want, atol=4e-6, rtol=0)
            want_exact = heretic_weight(mod.weight, vs[l], lam, None, seed=7)
            # float32 weights of size ~1: a few units in the last place apart.
            torch.testing.assert_close(ex.weight, want_exact, atol=4e-6, rtol=0)
            assert (got.weight - ex.weight).abs().max() > 1e-4  # rank 3 is not the exact edit
    assert n_edited == 7  # attn: layers 0-3; mlp: layers 1-3
    assert new.hf.thinklens_edit["low_rank"] == [3] and not new.hf.thinklens_edit["biases_edited"]


def test_heretic_published_needs_heretic_directions():
    m = tiny_model("llama", backend="nnsight")
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    with pytest.raises(ValueError, match="system is None, not 'You are a helpful assistant.'"):
        apply(m, "heretic", d, protocol="published")


# --- ErisForge and DECCP ----------------------------------------------------------------------
def test_erisforge_published_direction_and_weights_equal_brute_force():
    m = biased_llama(n_layers=10)
    # One prompt per pass, as the tools run them: right-padded batches move these float32
    # activations (large biases) enough to shift the unit direction by ~1e-5.
    d = compute_directions(m, HARMFUL, HARMLESS, batch_size=1, progress=False)
    brute = last_token_direction(m, int(10 * 0.6))
    # preset_direction takes the preset's name as well as a Preset.
    r = preset_direction(m, "erisforge", d)
    published = apply(m, "erisforge", d, protocol="published", scale=-0.5)
    got = published.hf.thinklens_edit
    assert got["layers"] == [2, 3, 4, 5, 6] and got["rounded_to"] == ["bfloat16"]
    assert got["parameters"]["direction_pos"] == -1 and got["protocol"] == "published"
    for l in range(m.n_layers):
        for (_, mod), (_, new) in zip(outputs(m, l), outputs(published, l), strict=True):
            torch.testing.assert_close(new.bias, mod.bias, atol=0, rtol=0)
            if l not in range(max(int(0.2 * 10), 2), min(int(0.8 * 10), 10 - 3)):
                assert torch.equal(new.weight, mod.weight)
                continue
            assert new.weight.dtype == torch.float32  # stored in the model's dtype, ...
            assert torch.equal(new.weight.to(torch.bfloat16).float(), new.weight)  # bf16 values
            assert torch.equal(new.weight.to(torch.bfloat16), rank1_bf16(mod.weight, brute, -0.5))
    # The thinklens form averages over the post-instruction positions: another direction.
    assert (r - brute).abs().max() > 1e-3
    from thinklens.interventions.abliteration.presets import PUBLISHED

    torch.testing.assert_close(
        preset_direction(m, PUBLISHED["erisforge"], d), brute, atol=1e-6, rtol=0
    )


def test_erisforge_band_is_empty_below_six_layers():
    m = tiny_model("llama", backend="nnsight")  # 3 layers: range(2, 0)
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    with pytest.raises(ValueError, match=r"layer band \[\] is empty on its 3 layers"):
        apply(m, "erisforge", d, protocol="published")
    assert apply(m, "erisforge", d).hf.thinklens_edit["layers"] == [0, 1]  # thinklens band


@pytest.mark.parametrize("n_layers", [3, 10])
def test_deccp_published_direction_and_weights_equal_brute_force(n_layers):
    m = biased_llama(n_layers=n_layers)
    d = compute_directions(m, HARMFUL, HARMLESS, batch_size=1, progress=False)
    brute = last_token_direction(m, int(n_layers * 0.6))
    torch.testing.assert_close(preset_direction(m, "deccp", d), brute, atol=1e-6, rtol=0)
    new = apply(m, "deccp", d, protocol="published")
    thinklens = apply(m, "deccp", d)
    for l in range(n_layers):
        pairs = zip(outputs(m, l), outputs(new, l), outputs(thinklens, l), strict=True)
        for (_, mod), (_, got), (_, tl_) in pairs:
            torch.testing.assert_close(got.bias, mod.bias, atol=0, rtol=0)
            torch.testing.assert_close(tl_.bias, mod.bias, atol=0, rtol=0)
            if l == 0:  # DECCP skips layer 0
                assert torch.equal(got.weight, mod.weight)
                continue
            assert torch.equal(got.weight.to(torch.bfloat16), rank1_bf16(mod.weight, brute, 1.0))
            assert torch.equal(got.weight.to(torch.bfloat16).float(), got.weight)
            want = mod.weight.double() - torch.outer(brute, brute) @ mod.weight.double()
            torch.testing.assert_close(tl_.weight, want.float(), atol=1e-6, rtol=0)  # unrounded
    with pytest.raises(ValueError, match="at most 1"):
        apply(m, "deccp", d, protocol="published", scale=1.5)

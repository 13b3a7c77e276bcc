"""The reasoning architectures' family rows: every site equals a plain HF forward on both
backends, mixture-of-experts rows name real modules, MLA's heads have the value width, and head
scoring and edited generation run on each tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.families import FAMILIES, family_for
from thinklens.interventions.heads.attribution import ablation_scores, attribution_scores
from thinklens.interventions.heads.metric import HeadMetric
from thinklens.model import Model
from thinklens.sites import SITE_KINDS, Site
from thinklens.testing import SAMPLE_TEXTS as TEXTS
from thinklens.testing import tiny_chat_tokenizer, tiny_model

DENSE = ["smollm3", "olmo2", "olmo3", "glm4"]
MOE = ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v3", "glm4_moe"]
NEW = DENSE + MOE

#: The module whose output each sublayer adds to the residual stream, where it is not the
#: sublayer itself (written here from the modeling code, not read from the family table).
WRITERS = {
    "olmo2": ("post_attention_layernorm", "post_feedforward_layernorm"),
    "olmo3": ("post_attention_layernorm", "post_feedforward_layernorm"),
    "glm4": ("post_self_attn_layernorm", "post_mlp_layernorm"),
}


def _first(x: object) -> Tensor:
    return x[0] if isinstance(x, tuple) else x


def _reference(hf: nn.Module, ids: Tensor, mask: Tensor) -> dict[Site, Tensor]:
    """Every site of every layer from one eager forward of the raw HF module: the attention
    weights from transformers' ``output_attentions``, the rest from hooks set here."""
    cfg = hf.config
    n_heads = cfg.num_attention_heads
    attn_name, mlp_name = WRITERS.get(cfg.model_type, ("self_attn", "mlp"))
    got: dict[Site, Tensor] = {}
    handles = []

    def keep(site: Site, fn):
        def hook(mod, args, *rest):
            got[site] = fn(args, *rest).detach()

        return hook

    for l, layer in enumerate(hf.model.layers):
        handles += [
            layer.register_forward_pre_hook(
                lambda mod, args, kw, l=l: got.__setitem__(
                    Site("resid_pre", l), (args[0] if args else kw["hidden_states"]).detach()
                ),
                with_kwargs=True,
            ),
            layer.register_forward_hook(keep(Site("resid_post", l), lambda a, o: _first(o))),
            layer.self_attn.o_proj.register_forward_pre_hook(
                keep(Site("z", l), lambda a: a[0].unflatten(-1, (n_heads, -1)))
            ),
            getattr(layer, attn_name).register_forward_hook(
                keep(Site("attn_out", l), lambda a, o: _first(o))
            ),
            getattr(layer, mlp_name).register_forward_hook(
                keep(Site("mlp_out", l), lambda a, o: _first(o))
            ),
        ]
    old = cfg._attn_implementation
    cfg._attn_implementation = "eager"  # the weights exist only in eager attention
    try:
        with torch.no_grad():
            out = hf(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False)
    finally:
        cfg._attn_implementation = old
        for h in handles:
            h.remove()
    for l in range(len(hf.model.layers)):
        got[Site("pattern", l)] = out.attentions[l].detach()
        got[Site("resid_mid", l)] = got[Site("resid_pre", l)] + got[Site("attn_out", l)]
    return got


@pytest.fixture(scope="module")
def tiny_new():
    """Each new family's tiny model on each backend (same seed, so the same weights)."""
    cache: dict[tuple[str, str], Model] = {}

    def get(family: str, backend: str) -> Model:
        if (family, backend) not in cache:
            cache[family, backend] = tiny_model(family, backend=backend)
        return cache[family, backend]

    return get


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", NEW)
def test_every_site_equals_a_plain_hf_forward(tiny_new, family, backend):
    m = tiny_new(family, backend)
    assert m.family.name == family
    ids, mask = m.tokenize(TEXTS)
    want = _reference(m.hf, ids, mask)
    keep = mask.bool()
    for l in range(m.n_layers):  # the reference adds up: the writes are what the layer adds
        mid, post = want[Site("resid_mid", l)], want[Site("resid_post", l)]
        torch.testing.assert_close(mid + want[Site("mlp_out", l)], post, atol=1e-5, rtol=0)
    sites = [Site(k, l) for l in range(m.n_layers) for k in SITE_KINDS]
    caps = tl.capture(m, TEXTS, sites, progress=False)
    worst = 0.0
    for s in sites:
        got, ref = caps[s], want[s]
        if s.kind == "pattern":
            both = (keep[:, None, :, None] & keep[:, None, None, :]).expand_as(ref)
            got, ref = got[both], ref[both]
        else:
            got, ref = got[keep], ref[keep]
        assert got.shape == ref.shape, s
        worst = max(worst, float((got - ref).abs().max()))
    assert worst < 1e-5, worst
    logits = m.hf(input_ids=ids, attention_mask=mask).logits.detach()
    last = mask.sum(-1) - 1
    torch.testing.assert_close(
        m.logits(TEXTS), logits[torch.arange(len(ids)), last], atol=1e-5, rtol=0
    )


def test_mla_heads_have_the_value_width(tiny_new):
    m = tiny_new("deepseek_v3", "nnsight")
    cfg = m.config
    assert (
        cfg.head_dim == cfg.qk_rope_head_dim != cfg.v_head_dim
    )  # the config's head_dim is not z's
    assert (m.n_heads, m.d_head) == (4, cfg.v_head_dim)
    caps = tl.capture(m, TEXTS, ["z.1"], progress=False)
    assert caps["z.1"].shape[-2:] == (m.n_heads, m.d_head)
    assert all(tiny_new(f, "nnsight").d_head == 16 for f in ["qwen3_moe", "gpt_oss", "glm4"])


@pytest.mark.parametrize("family", MOE)
def test_moe_rows_name_the_experts_router_and_shared_experts(tiny_new, family):
    m = tiny_new(family, "nnsight")
    spec = m.family.experts
    assert spec is not None and m.family.writes_are_projections
    cfg = m.config
    assert getattr(cfg, spec.n_experts_attr) == 4 and getattr(cfg, spec.top_k_attr) == 2
    moe_layers = []
    for l, layer in enumerate(m.layer_modules()):
        experts = getattr(layer.mlp, "experts", None)
        if experts is None:  # a dense layer: the row's dense down projection writes
            assert isinstance(layer.get_submodule(m.family.mlp_out_proj), nn.Linear)
            continue
        moe_layers.append(l)
        assert layer.get_submodule(spec.path) is experts
        down = getattr(experts, spec.down)
        d_ff = down.shape[1] if spec.transposed else down.shape[2]
        want = (4, d_ff, m.d_model) if spec.transposed else (4, m.d_model, d_ff)
        assert spec.fused and tuple(down.shape) == want
        assert experts.is_transposed == spec.transposed  # transformers' own flag agrees
        assert (spec.down_bias is not None) == experts.has_bias
        assert layer.get_submodule(spec.router).weight.shape == (4, m.d_model)
        if spec.shared:
            assert isinstance(layer.get_submodule(spec.shared), nn.Linear)
    dense_first = family in ("deepseek_v3", "glm4_moe")
    assert moe_layers == ([1, 2] if dense_first else [0, 1, 2])
    assert (m.family.sinks is not None) == (family == "gpt_oss")


def test_gpt_oss_pattern_leaves_mass_on_the_sinks(tiny_new):
    m = tiny_new("gpt_oss", "nnsight")
    caps = tl.capture(m, TEXTS, ["pattern.0"], progress=False)
    keep = caps.mask.bool()
    rows = caps["pattern.0"].sum(-1).transpose(1, 2)[keep]  # [real query, head]
    assert float(rows.max()) < 1.0 and float(rows.min()) > 0.0


def test_post_norm_rows_are_not_projections():
    for name in ["olmo2", "olmo3", "glm4", "gemma3"]:
        assert not FAMILIES[name].writes_are_projections
    for name in ["llama", "smollm3", *MOE]:
        assert FAMILIES[name].writes_are_projections


def test_a_bridge_without_an_adapter_is_a_clear_error(tiny_new):
    import copy

    from transformers import MixtralForCausalLM

    class TinyMoeForCausalLM(MixtralForCausalLM):
        """A causal LM class TransformerBridge has no adapter for."""

    tok = tiny_chat_tokenizer()
    cfg = copy.deepcopy(tiny_new("mixtral", "nnsight").hf.config)
    cfg.architectures = ["TinyMoeForCausalLM"]
    hf = TinyMoeForCausalLM(cfg)
    with pytest.raises(ValueError, match="TinyMoeForCausalLM.*no adapter.*backend='nnsight'"):
        Model(hf, tok, family_for(cfg), name="tiny-moe", backend_name="transformer_lens")
    m = Model(hf, tok, family_for(cfg), name="tiny-moe", backend_name="nnsight")
    assert m.logits(TEXTS[:1]).shape == (1, len(tok))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", NEW)
def test_head_scores_and_edited_generation_run(tiny_new, family, backend):
    m = tiny_new(family, backend)
    metric = HeadMetric("refusal")
    approx = attribution_scores(m, TEXTS, metric, progress=False)
    exact = ablation_scores(m, TEXTS, metric, progress=False)
    assert approx.scores.shape == exact.scores.shape == (m.n_layers, m.n_heads)
    assert bool(torch.isfinite(approx.scores).all()) and float(approx.scores.abs().max()) > 0
    assert exact.meta["replayed"]  # layer replay reproduces these architectures' forwards
    gen = torch.Generator().manual_seed(0)
    push = tl.ActivationAddition(20 * torch.randn(m.d_model, generator=gen), layers=[1])
    prompt = "How do I bake bread?"
    with tl.intervene(m, push):
        out = tl.generate(m, [prompt], max_new_tokens=3, skip_special_tokens=False)
        first = int(m.logits([m.chat(prompt)]).argmax())
    plain = int(m.logits([m.chat(prompt)]).argmax())
    assert first != plain  # the edit moves the next token, and generation follows it
    assert out[0].startswith(m.tokenizer.decode([first]))


def test_gpt_oss_loads_from_a_folder_with_its_own_attention_and_format(tmp_path):
    """``load_model`` leaves the attention to transformers (gpt-oss has no SDPA) and falls
    back to the family's harmony format when the template names none."""
    from thinklens.formats import HARMONY
    from thinklens.testing import tiny_model

    m = tiny_model("gpt_oss", backend="nnsight")
    m.hf.save_pretrained(tmp_path)
    m.tokenizer.save_pretrained(tmp_path)
    loaded = tl.load_model(str(tmp_path), backend="nnsight")
    assert loaded.family.name == "gpt_oss" and loaded.thinking == HARMONY
    assert torch.equal(loaded.logits(["hi there"]), m.logits(["hi there"]))

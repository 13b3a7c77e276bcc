"""Architecture families: where each site lives in a Hugging Face module tree.

What differs between architectures is data, not code: one row per family maps the abstract
sites to module paths (relative to a decoder layer) and says how to read the tensor there.
Adding a family is adding a row. A mixture-of-experts family also says where its experts,
router and shared experts are (``Experts``); its ``mlp_out`` is the whole MoE block's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from thinklens.formats import HARMONY, ThinkingFormat
from thinklens.sites import Site

#: How a site's tensor is read from a module: its first positional input, or its first output.
Port = Literal["input", "output"]


@dataclass(frozen=True)
class Experts:
    """Where a mixture-of-experts MLP keeps its experts (paths relative to a decoder layer).

    Layers without the experts module (DeepSeek-V3's first dense layers) use the family's
    dense ``mlp_out_proj``. Transformers 5 stores the experts of these families fused: one 3-D
    parameter per projection on the experts module, ``[expert, d_model, d_ff]`` (like a stack
    of ``nn.Linear`` weights) or, ``transposed``, ``[expert, d_ff, d_model]``. With ``fused``
    off, the experts module is a list of MLPs, each with a ``down`` ``nn.Linear``.
    """

    path: str = "mlp.experts"  # its output is the routed experts' weighted sum
    down: str = "down_proj"  # the matrix each expert writes its output with
    down_bias: str | None = None  # [expert, d_model] (fused experts only)
    fused: bool = True
    transposed: bool = False
    router: str = "mlp.gate"
    shared: str | None = None  # the shared experts' down projection (an nn.Linear), if any
    n_experts_attr: str = "num_local_experts"
    top_k_attr: str = "num_experts_per_tok"


@dataclass(frozen=True)
class Family:
    """Module paths and conventions of one architecture family."""

    name: str
    model_types: tuple[str, ...]
    layers: str  # path from the top module to the list of decoder layers
    final_norm: str
    embed: str
    unembed: str
    attn: str  # relative to a layer
    o_proj: str  # relative to a layer; its input is the per-head output `z`
    mlp: str
    mlp_out_proj: str  # the matrix that writes the MLP output into the residual stream
    attn_out: tuple[str, Port]  # what the attention sublayer adds to the residual stream
    mlp_out: tuple[str, Port]
    resid_mid: tuple[str, Port]  # residual stream between the attention and MLP sublayers
    n_heads_attr: str = "num_attention_heads"
    n_kv_heads_attr: str = "num_key_value_heads"
    n_layers_attr: str = "num_hidden_layers"
    d_model_attr: str = "hidden_size"
    #: Width of one head's output at ``z`` (MLA: ``v_head_dim``, not the query/key width).
    d_head_attr: str = "head_dim"
    thinking: ThinkingFormat = field(default_factory=ThinkingFormat)
    conv1d: bool = False  # GPT-2 stores projection weights transposed (Conv1D)
    experts: Experts | None = None
    #: Per-head attention sink logits (gpt-oss): a softmax column that takes mass from the
    #: keys, so ``pattern`` rows sum to less than 1.
    sinks: str | None = None

    @property
    def writes_are_projections(self) -> bool:
        """Whether attn_out and mlp_out are the sublayers' own outputs, not normed after them
        (then removing a direction from o_proj and the MLP's writes removes it from both)."""
        return self.attn_out == (self.attn, "output") and self.mlp_out == (self.mlp, "output")

    def site_module(self, site: Site) -> tuple[str, Port, int]:
        """Module path (from the top module), port and tuple index where a site's tensor lives."""
        rel, port, index = {
            "resid_pre": ("", "input", 0),
            "resid_post": ("", "output", 0),
            "z": (self.o_proj, "input", 0),
            "pattern": (self.attn, "output", 1),  # (output, weights, ...)
            "attn_out": (*self.attn_out, 0),
            "mlp_out": (*self.mlp_out, 0),
            "resid_mid": (*self.resid_mid, 0),
        }[site.kind]
        layer = f"{self.layers}.{site.layer}"
        return (f"{layer}.{rel}" if rel else layer), port, index


_LLAMA_LIKE = dict(
    layers="model.layers",
    final_norm="model.norm",
    embed="model.embed_tokens",
    unembed="lm_head",
    attn="self_attn",
    o_proj="self_attn.o_proj",
    mlp="mlp",
    mlp_out_proj="mlp.down_proj",
    attn_out=("self_attn", "output"),
    mlp_out=("mlp", "output"),
    resid_mid=("post_attention_layernorm", "input"),
)

#: OLMo 2 and 3 normalise each sublayer's output (no pre-norms): the MLP reads the stream itself.
_POST_NORM = _LLAMA_LIKE | dict(
    attn_out=("post_attention_layernorm", "output"),
    mlp_out=("post_feedforward_layernorm", "output"),
    resid_mid=("mlp", "input"),
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llama", ("llama",), **_LLAMA_LIKE),
        Family("mistral", ("mistral",), **_LLAMA_LIKE),
        Family("qwen2", ("qwen2",), **_LLAMA_LIKE),
        Family("qwen3", ("qwen3",), **_LLAMA_LIKE),
        Family("phi3", ("phi3",), **_LLAMA_LIKE),
        Family("smollm3", ("smollm3",), **_LLAMA_LIKE),
        Family("olmo2", ("olmo2",), **_POST_NORM),
        Family("olmo3", ("olmo3",), **_POST_NORM),
        Family(
            "glm4",
            ("glm4",),
            # Pre- and post-norms around both sublayers, like Gemma.
            **_LLAMA_LIKE
            | dict(
                attn_out=("post_self_attn_layernorm", "output"),
                mlp_out=("post_mlp_layernorm", "output"),
            ),
        ),
        Family("mixtral", ("mixtral",), **_LLAMA_LIKE, experts=Experts()),
        Family("olmoe", ("olmoe",), **_LLAMA_LIKE, experts=Experts(n_experts_attr="num_experts")),
        Family(
            "qwen2_moe",
            ("qwen2_moe",),
            **_LLAMA_LIKE,
            experts=Experts(shared="mlp.shared_expert.down_proj", n_experts_attr="num_experts"),
        ),
        Family(
            "qwen3_moe",
            ("qwen3_moe",),
            **_LLAMA_LIKE,
            experts=Experts(n_experts_attr="num_experts"),
        ),
        Family(
            "gpt_oss",
            ("gpt_oss",),
            **_LLAMA_LIKE,
            experts=Experts(down_bias="down_proj_bias", transposed=True, router="mlp.router"),
            sinks="self_attn.sinks",
            # The fallback when its chat template is absent: thinking is the analysis channel.
            thinking=HARMONY,
        ),
        Family(
            "deepseek_v3",
            ("deepseek_v3",),
            **_LLAMA_LIKE,
            # Multi-head latent attention: the heads' values are v_head_dim wide.
            d_head_attr="v_head_dim",
            experts=Experts(
                shared="mlp.shared_experts.down_proj", n_experts_attr="n_routed_experts"
            ),
        ),
        Family(
            "glm4_moe",
            ("glm4_moe",),
            **_LLAMA_LIKE,
            experts=Experts(
                shared="mlp.shared_experts.down_proj", n_experts_attr="n_routed_experts"
            ),
        ),
        Family(
            "gemma3",
            ("gemma3_text", "gemma3"),
            # Gemma normalises each sublayer's output before adding it to the residual stream.
            **_LLAMA_LIKE
            | dict(
                attn_out=("post_attention_layernorm", "output"),
                mlp_out=("post_feedforward_layernorm", "output"),
                resid_mid=("pre_feedforward_layernorm", "input"),
            ),
        ),
        Family(
            "gpt2",
            ("gpt2",),
            layers="transformer.h",
            final_norm="transformer.ln_f",
            embed="transformer.wte",
            unembed="lm_head",
            attn="attn",
            o_proj="attn.c_proj",
            mlp="mlp",
            mlp_out_proj="mlp.c_proj",
            attn_out=("attn", "output"),
            mlp_out=("mlp", "output"),
            resid_mid=("ln_2", "input"),
            n_heads_attr="n_head",
            n_kv_heads_attr="n_head",
            n_layers_attr="n_layer",
            d_model_attr="n_embd",
            conv1d=True,
        ),
    ]
}


def family_for(config: object) -> Family:
    """The family row for a transformers config, or a clear error naming the known families."""
    model_type = getattr(config, "model_type", None)
    text_config = getattr(config, "text_config", None)
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    if text_config is not None and text_config is not config:
        return family_for(text_config)
    known = ", ".join(sorted(t for f in FAMILIES.values() for t in f.model_types))
    raise ValueError(
        f"architecture {model_type!r} is not in the family table (known: {known}); "
        "add a row to thinklens.families.FAMILIES with its module paths"
    )

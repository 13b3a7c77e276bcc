"""Architecture families: where each site lives in a Hugging Face module tree.

What differs between architectures is data, not code: one row per family maps the abstract
sites to module paths (relative to a decoder layer) and says how to read the tensor there.
Adding a family is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from thinklens.sites import Site
from thinklens.traces import ThinkingFormat

#: How a site's tensor is read from a module: its first positional input, or its first output.
Port = Literal["input", "output"]


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
    thinking: ThinkingFormat = field(default_factory=ThinkingFormat)
    conv1d: bool = False  # GPT-2 stores projection weights transposed (Conv1D)

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

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llama", ("llama",), **_LLAMA_LIKE),
        Family("mistral", ("mistral",), **_LLAMA_LIKE),
        Family("qwen2", ("qwen2",), **_LLAMA_LIKE),
        Family("qwen3", ("qwen3",), **_LLAMA_LIKE),
        Family("phi3", ("phi3",), **_LLAMA_LIKE),
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

"""TransformerLens 4 backend: TransformerBridge hook points on a weight-sharing clone."""

from __future__ import annotations

import copy

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from thinklens.backends.base import (
    Reader,
    StopForward,
    TraceOp,
    eager_attention,
    forward_order,
    take_positions,
)
from thinklens.sites import POS_DIM, Site


def weight_sharing_clone(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameters and buffers are the original tensors."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def check_bridge_supports(hf: nn.Module, model_name: str) -> None:
    """Nothing if TransformerBridge has an adapter for ``hf``'s architecture, else a clear error."""
    from importlib.metadata import version

    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    names = [*(getattr(hf.config, "architectures", None) or []), type(hf).__name__]
    if not any(n in SUPPORTED_ARCHITECTURES for n in names):
        raise ValueError(
            f"{model_name} is a {names[0]}, which TransformerBridge (transformer-lens "
            f"{version('transformer-lens')}) has no adapter for: load it with backend='nnsight'"
        )


class TransformerLensBackend:
    """Reads sites through TransformerBridge's hook points (``blocks.3.hook_resid_post``).

    Booting a bridge replaces submodules of the HF model in place, and generating through the
    bridged module is unreliable (ENVIRONMENT.md), so the bridge wraps a clone that shares every
    weight: no memory is copied and the original module stays a plain HF model for generation.
    """

    name = "transformer_lens"

    def __init__(self, hf: nn.Module, tokenizer: object, model_name: str, n_heads: int) -> None:
        from transformer_lens.model_bridge import TransformerBridge

        self.hf = hf
        self.n_heads = n_heads
        # Always empty: this backend runs only where the weights are, so edits are torch hooks.
        self.trace_ops: list[TraceOp] = []
        if not getattr(hf.config, "architectures", None):
            hf.config.architectures = [type(hf).__name__]
        check_bridge_supports(hf, model_name)
        weight = next(hf.parameters())
        self.bridge = TransformerBridge.boot_transformers(
            model_name,
            hf_model=weight_sharing_clone(hf),
            tokenizer=tokenizer,
            device=weight.device,
            dtype=weight.dtype,
        )

    def trees(self) -> list[nn.Module]:
        return [self.hf, self.bridge.original_model]

    def run(
        self,
        ids: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        sites: list[Site],
        read: Reader,
        stop_early: bool = True,
        positions: Int[Tensor, "batch sel"] | None = None,
    ) -> None:
        ordered = forward_order(sites)
        last = ordered[-1]
        n_heads = self.n_heads

        def hook_for(site: Site):
            def hook(x: Tensor, hook: object) -> Tensor:
                y = x
                if site.kind == "z":
                    # The bridge splits z by the config's head_dim, which is the query/key
                    # width under MLA (DeepSeek-V3), not the value width: split by heads.
                    y = x.flatten(-2).unflatten(-1, (n_heads, -1))
                read(site, take_positions(y, positions, POS_DIM[site.kind]))
                if stop_early and site == last:
                    raise StopForward
                return x

            return hook

        hooks = [(s.tl_name, hook_for(s)) for s in ordered]
        with eager_attention(self.trees(), any(s.kind == "pattern" for s in sites)):
            with self.bridge.hooks(fwd_hooks=hooks):
                try:
                    self.bridge(ids, attention_mask=mask, return_type=None, use_cache=False)
                except StopForward:
                    pass

    @torch.no_grad()
    def logits(
        self,
        ids: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        positions: Int[Tensor, "batch sel"] | None = None,
    ) -> Float[Tensor, "batch sel vocab"]:
        out = self.bridge(ids, attention_mask=mask, use_cache=False)
        return take_positions(out, positions, 1)

"""nnsight 0.8 backend: reads module inputs and outputs through a trace."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from thinklens.backends.base import (
    Reader,
    eager_attention,
    forward_order,
    module_port,
    to_canonical,
)
from thinklens.sites import Site

if TYPE_CHECKING:
    from thinklens.model import Model


def _envoy(root: object, path: str) -> object:
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


class NNsightBackend:
    """Reads sites as module inputs/outputs in an nnsight trace of the plain HF module."""

    name = "nnsight"

    def __init__(self, model: Model) -> None:
        from nnsight import LanguageModel

        self.model = model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
            self.lm = LanguageModel(model.hf, tokenizer=model.tokenizer)

    def extra_trees(self) -> list[nn.Module]:
        return []

    def run(
        self,
        ids: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        sites: list[Site],
        read: Reader,
        stop_early: bool = True,
    ) -> None:
        n_heads = self.model.n_heads
        ordered = forward_order(sites)
        # Several sites can live on one module port: touch each port once, in forward order.
        ports: dict[tuple[str, str], list[Site]] = {}
        for s in ordered:
            path, port, _ = module_port(self.model, s)
            ports.setdefault((path, port), []).append(s)
        with eager_attention(self.model, any(s.kind == "pattern" for s in sites)):
            # No KV cache: a capture never decodes further, and the cache grows with depth.
            with self.lm.trace(ids, attention_mask=mask, use_cache=False) as tracer:
                for (path, port), group in ports.items():
                    value = getattr(_envoy(self.lm, path), port)
                    for s in group:
                        x = value
                        if isinstance(x, tuple):
                            x = x[module_port(self.model, s)[2]]
                        read(s, to_canonical(s, x, n_heads))
                if stop_early:
                    tracer.stop()

    @torch.no_grad()
    def logits(
        self, ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch pos vocab"]:
        import nnsight

        with self.lm.trace(ids, attention_mask=mask, use_cache=False):
            out = nnsight.save(self.lm.output.logits)
        return out

"""Sites: where to read or write, named as TransformerLens users name them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Int
from torch import Tensor

if TYPE_CHECKING:
    from thinklens.model import Model

#: Site kinds, in the order a layer's forward pass produces them.
SITE_KINDS = ("resid_pre", "z", "pattern", "attn_out", "resid_mid", "mlp_out", "resid_post")

#: Canonical shape of each kind (per batch): z is [pos, head, d_head], pattern [head, q, k].
POS_DIM = {k: 1 for k in SITE_KINDS} | {"pattern": 2}

#: TransformerLens hook names of each kind.
TL_HOOKS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
    "pattern": "blocks.{layer}.attn.hook_pattern",
}


@dataclass(frozen=True, order=True)
class Site:
    """A site kind at a layer, optionally restricted to heads (``z`` and ``pattern`` only)."""

    kind: str
    layer: int
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise ValueError(f"unknown site {self.kind!r}; known sites: {', '.join(SITE_KINDS)}")
        if self.heads is not None and self.kind not in ("z", "pattern"):
            raise ValueError(f"heads can be chosen only for z and pattern, not {self.kind!r}")

    @classmethod
    def parse(cls, spec: SiteLike) -> Site:
        """A Site from ``Site``, ``"resid_post.12"``, ``"z.3.h5"`` or ``("resid_pre", 4)``."""
        if isinstance(spec, Site):
            return spec
        if isinstance(spec, tuple):
            return cls(*spec)
        parts = spec.split(".")
        if len(parts) not in (2, 3) or not parts[1].lstrip("-").isdigit():
            raise ValueError(
                f"cannot read site {spec!r}; write it as KIND.LAYER (e.g. 'resid_post.12') "
                "or KIND.LAYER.hH for one head (e.g. 'z.3.h5')"
            )
        heads = (int(parts[2].lstrip("h")),) if len(parts) == 3 else None
        return cls(parts[0], int(parts[1]), heads)

    def resolved(self, model: Model) -> Site:
        """This site with its layer made non-negative and its heads checked against the model."""
        layer = model.check_layer(self.layer)
        if self.heads is not None:
            bad = [h for h in self.heads if not 0 <= h < model.n_heads]
            if bad:
                raise IndexError(
                    f"head {bad[0]} is out of range: {model.name} has {model.n_heads} heads "
                    f"per layer (use 0..{model.n_heads - 1})"
                )
        return Site(self.kind, layer, self.heads)

    @property
    def tl_name(self) -> str:
        return TL_HOOKS[self.kind].format(layer=self.layer)

    def __str__(self) -> str:
        head = "" if self.heads is None else "." + "+".join(f"h{h}" for h in self.heads)
        return f"{self.kind}.{self.layer}{head}"


SiteLike = Site | str | tuple

#: Positions to keep: "all", "last", an int k (the last k tokens), or per-example spans.
CapturePositions = str | int | Sequence[tuple[int, int]]


def position_index(
    lengths: Int[Tensor, " batch"], positions: CapturePositions
) -> tuple[Int[Tensor, "batch sel"], Bool[Tensor, "batch sel"]]:
    """Token indices to keep per example (right-padded batch) and which of them are real."""
    lengths = lengths.long()
    batch = len(lengths)
    if positions == "last":
        return (lengths - 1)[:, None], torch.ones(batch, 1, dtype=torch.bool)
    if positions == "all":
        starts, ends = torch.zeros_like(lengths), lengths
    elif isinstance(positions, int) and not isinstance(positions, bool):
        if positions < 1:
            raise ValueError(f"positions={positions}: the last-k count must be >= 1")
        starts, ends = (lengths - positions).clamp(min=0), lengths
    elif isinstance(positions, Sequence) and not isinstance(positions, str):
        if len(positions) != batch:
            raise ValueError(f"got {len(positions)} spans for {batch} texts: give one per text")
        spans = torch.tensor([tuple(s) for s in positions], dtype=torch.long).reshape(batch, 2)
        starts, ends = spans[:, 0], spans[:, 1]
        if bool((starts < 0).any() | (ends > lengths).any() | (ends < starts).any()):
            raise IndexError("a span lies outside its text: spans are [start, end) token ranges")
    else:
        raise ValueError(
            f"unknown positions {positions!r}: use 'all', 'last', an int k (last k tokens), "
            "or one (start, end) span per text"
        )
    width = int((ends - starts).max()) if batch else 0
    offs = torch.arange(max(width, 1))[None, :]
    mask = offs < (ends - starts)[:, None]
    if isinstance(positions, int) and not isinstance(positions, bool):
        # Last-k is aligned at the end so column -1 is always each text's last token.
        width = positions
        offs = torch.arange(width)[None, :]
        idx = lengths[:, None] - width + offs
        mask = idx >= 0
        return idx.clamp(min=0), mask
    idx = (starts[:, None] + offs).clamp(max=(lengths - 1).clamp(min=0)[:, None])
    return idx, mask[:, : max(width, 1)]

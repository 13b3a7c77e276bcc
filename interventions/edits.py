"""The edits: head ablation, direction projection and activation addition.

Each edit is a list of (site, function) pairs on the shared hook mechanism
(``thinklens.hooks``), so it acts in captures, logits and generation alike, on both backends
and on remote models. Each takes ``positions=`` (keyword): every token by default, or a
``thinklens.positions.Positions`` (a span per text, a trace's thinking, generated tokens only,
from a position on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from thinklens.hooks import Edit, EditFn
from thinklens.model import Model
from thinklens.positions import Positions
from thinklens.sites import Site

HeadSpec = Mapping[int, Sequence[int]] | Sequence[tuple[int, int]]


def heads_by_layer(model: Model, heads: HeadSpec) -> dict[int, list[int]]:
    """Heads grouped by (checked) layer, or a clear error for an index out of range."""
    pairs = heads.items() if isinstance(heads, Mapping) else [(l, [h]) for l, h in heads]
    out: dict[int, list[int]] = {}
    for layer, hs in pairs:
        layer = model.check_layer(layer)
        for h in hs:
            if not 0 <= h < model.n_heads:
                raise IndexError(
                    f"head {h} is out of range: {model.name} has {model.n_heads} heads per "
                    f"layer (use 0..{model.n_heads - 1})"
                )
        out.setdefault(layer, []).extend(hs)
    return out


@dataclass
class HeadAblation(Edit):
    """Ablate attention heads at the input of the output projection (at ``positions``).

    Modes: ``"zero"``; ``"mean"`` (each head's mean output over a reference set, see
    ``head_means``); ``"scale"``: multiply the heads' outputs by ``scale`` (0 by default) and
    restore a norm. ``restore="position"`` (thinklens's default) rescales the attention output
    (after the output projection) so its norm at each position equals the norm before
    ablation. ``restore="global"`` is the refusal-cliff code's: the per-head outputs (the
    projection's input, every row, position and head of the forward pass at once) are rescaled
    to their one Frobenius norm before ablation; the code scales by 0 while generating and by
    0.001 when it scores single heads. A global norm couples every example of a batch (and
    counts padding), so the position restore is the default; it also couples every position,
    so it acts at all positions only.

    Args:
        heads: ``{layer: [head, ...]}`` or ``[(layer, head), ...]``.
    """

    heads: HeadSpec
    mode: Literal["zero", "mean", "scale"] = "zero"
    means: Mapping[int, Float[Tensor, "head d_head"]] | None = None
    scale: float = 0.0
    restore: Literal["position", "global"] = "position"

    def __post_init__(self) -> None:
        if self.restore not in ("position", "global"):
            raise ValueError(f"unknown restore {self.restore!r}; choose 'position' or 'global'")
        if self.mode == "scale" and self.restore == "global":
            if not Positions.parse(self.positions).is_all:
                raise ValueError(
                    "restore='global' rescales every position of the pass at once, so it "
                    "cannot act at chosen positions: use restore='position' with positions"
                )

    @property
    def restores_norm(self) -> bool:
        return self.mode == "scale" and self.restore == "position"

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        by_layer = heads_by_layer(model, self.heads)
        if self.mode == "mean":
            if self.means is None or any(l not in self.means for l in by_layer):
                raise ValueError("mean ablation needs means for every layer: use head_means()")
        fns = []
        for l, hs in by_layer.items():
            mean = self.means[l][hs] if self.mode == "mean" else None
            fn = _heads_edit(hs, self.mode, mean, self.scale)
            if self.mode == "scale" and self.restore == "global":
                fn = _global_norm(fn)
            fns.append((Site("z", l), fn))
        return fns


def _global_norm(edit: EditFn) -> EditFn:
    """``edit`` followed by a rescale of the whole tensor to its Frobenius norm before it."""

    def fn(z: Tensor) -> Tensor:
        out = edit(z)
        return out * (z.norm() / out.norm().clamp(min=torch.finfo(out.dtype).tiny))

    return fn


def _heads_edit(hs: list[int], mode: str, mean: Tensor | None, scale: float) -> EditFn:
    # Plain values only (no ``self``): the function also ships to a remote server.
    def fn(z: Tensor) -> Tensor:
        z = z.clone()
        if mode == "mean":
            z[..., hs, :] = mean.to(z)
        elif mode == "scale":
            z[..., hs, :] = z[..., hs, :] * scale
        else:
            z[..., hs, :] = 0
        return z

    return fn


@torch.no_grad()
def head_means(
    model: Model, texts: Sequence[str], layers: Iterable[int], batch_size: int = 8
) -> dict[int, Float[Tensor, "head d_head"]]:
    """Each head's mean output (``z``) over every real token of a reference set of texts."""
    from thinklens.capture import capture

    layers = [model.check_layer(l) for l in layers]
    caps = capture(
        model,
        texts,
        [Site("z", l) for l in layers],
        batch_size=batch_size,
        progress=False,
        dtype=torch.float64,
    )
    mask = caps.mask[..., None, None].double()
    return {
        l: ((caps[Site("z", l)] * mask).sum((0, 1)) / mask.sum()).to(model.dtype) for l in layers
    }


def unit_direction(v: Tensor, model: Model) -> Float[Tensor, " d_model"]:
    """``v / |v|`` in float64 on the CPU, or a clear error when it cannot fit ``model``."""
    _check_direction(model, v)
    v = v.detach().to(torch.float64).cpu()
    n = v.norm()
    if not torch.isfinite(n) or n == 0:
        raise ValueError("the direction is zero or not finite: it cannot be removed")
    return v / n


@dataclass
class DirectionProjection(Edit):
    """Remove a direction: ``x <- x - (x . r_hat) r_hat`` at residual-stream sites.

    The default sites are Arditi et al.'s directional ablation: every block input and every
    attention and MLP output, at every layer (``layers=None``), at every position unless
    ``positions`` say otherwise.
    """

    direction: Float[Tensor, " d_model"]
    layers: Sequence[int] | None = None
    kinds: Sequence[str] = ("resid_pre", "attn_out", "mlp_out")

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        r = unit_direction(self.direction, model)

        def fn(x: Tensor) -> Tensor:
            rr = r.to(x.device, x.dtype)
            return x - (x @ rr)[..., None] * rr

        layers = range(model.n_layers) if self.layers is None else self.layers
        return [(Site(k, l), fn) for l in layers for k in self.kinds]


@dataclass
class ActivationAddition(Edit):
    """Add ``coeff * vector`` to a residual-stream site at chosen layers (at ``positions``)."""

    vector: Float[Tensor, " d_model"]
    layers: Sequence[int] = field(default_factory=lambda: [0])
    kind: str = "resid_pre"
    coeff: float = 1.0

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        _check_direction(model, self.vector)
        coeff, vector = self.coeff, self.vector

        def fn(x: Tensor) -> Tensor:
            return x + coeff * vector.to(x.device, x.dtype)

        return [(Site(self.kind, l), fn) for l in self.layers]


def _check_direction(model: Model, v: Tensor) -> None:
    if v.shape != (model.d_model,):
        raise ValueError(
            f"direction has shape {tuple(v.shape)} but {model.name} has d_model {model.d_model}:"
            " it was computed on another model; recompute it on this one"
        )

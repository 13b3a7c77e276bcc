"""Interventions: edits of sites during any forward pass or generation.

One engine for every backend: an edit is a function on a site's canonical tensor, installed as
a torch hook on the module the family table names, in every module tree the model runs through
(the plain HF module, and the bridge's clone for TransformerLens). So the same edit acts in
captures, logits and ``generate`` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from thinklens.backends.base import from_canonical, module_port, to_canonical
from thinklens.model import Model, get_path
from thinklens.sites import Site

EditFn = Callable[[Tensor], Tensor]


def _hook_site(model: Model, tree: nn.Module, site: Site, fn: EditFn) -> RemovableHandle:
    """Install ``fn`` on a site's canonical tensor in one module tree."""
    if site.kind == "pattern":
        raise ValueError("pattern is read-only: edit z or the attention output instead")
    path, port, index = module_port(model, site)
    module = get_path(tree, path)
    n_heads = model.n_heads

    def apply(x: Tensor) -> Tensor:
        return from_canonical(site, fn(to_canonical(site, x, n_heads)))

    if port == "input":

        def pre(mod: nn.Module, args: tuple, kwargs: dict):
            if args:
                return (apply(args[0]), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: apply(kwargs[key])}

        return module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(mod: nn.Module, args: tuple, out: object):
        if isinstance(out, tuple):
            return (*out[:index], apply(out[index]), *out[index + 1 :])
        return apply(out)

    return module.register_forward_hook(post)


class Edit:
    """Base of all edits: a list of (site, function) pairs, or a custom ``install``."""

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        raise NotImplementedError

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        """Hook this edit into one module tree."""
        return [
            _hook_site(model, tree, site.resolved(model), fn) for site, fn in self.site_fns(model)
        ]


class Intervention(AbstractContextManager):
    """Active edits; leave the ``with`` block (or call ``remove``) to undo them all."""

    def __init__(self, model: Model, edits: Sequence[Edit]) -> None:
        self.model = model
        self.edits = list(edits)
        self.handles: list[RemovableHandle] = []
        for tree in model.trees():
            for e in self.edits:
                self.handles.extend(e.install(model, tree))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def intervene(model: Model, *edits: Edit | Iterable[Edit]) -> Intervention:
    """Apply edits (composable, in the order given) until the returned handle is removed."""
    flat: list[Edit] = []
    for e in edits:
        flat.extend([e] if isinstance(e, Edit) else e)
    return Intervention(model, flat)


HeadSpec = Mapping[int, Sequence[int]] | Sequence[tuple[int, int]]


def _heads_by_layer(model: Model, heads: HeadSpec) -> dict[int, list[int]]:
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
    """Ablate attention heads at the input of the output projection, at every position.

    Modes: ``"zero"``; ``"mean"`` (each head's mean output over a reference set, see
    ``head_means``); ``"scale"``, the published refusal-cliff ablation: multiply the heads'
    outputs by ``scale`` (0 by default), then rescale the attention output so its norm at each
    position equals the norm before ablation.

    Args:
        heads: ``{layer: [head, ...]}`` or ``[(layer, head), ...]``.
    """

    heads: HeadSpec
    mode: Literal["zero", "mean", "scale"] = "zero"
    means: Mapping[int, Float[Tensor, "head d_head"]] | None = None
    scale: float = 0.0

    def _edit_z(self, layer: int, hs: list[int]) -> EditFn:
        def fn(z: Tensor) -> Tensor:
            z = z.clone()
            if self.mode == "mean":
                z[..., hs, :] = self.means[layer][hs].to(z)
            elif self.mode == "scale":
                z[..., hs, :] = z[..., hs, :] * self.scale
            else:
                z[..., hs, :] = 0
            return z

        return fn

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        by_layer = _heads_by_layer(model, self.heads)
        if self.mode == "mean":
            if self.means is None or any(l not in self.means for l in by_layer):
                raise ValueError("mean ablation needs means for every layer: use head_means()")
        if self.mode != "scale":
            return [
                _hook_site(model, tree, Site("z", l), self._edit_z(l, hs))
                for l, hs in by_layer.items()
            ]
        return [self._install_norm_restore(model, tree, l, hs) for l, hs in by_layer.items()]

    def _install_norm_restore(
        self, model: Model, tree: nn.Module, layer: int, hs: list[int]
    ) -> RemovableHandle:
        path, _, _ = module_port(model, Site("z", layer))
        module = get_path(tree, path)
        # The bridge wraps the projection; its inner module's forward runs no hooks.
        proj = getattr(module, "_original_component", module)
        edit = self._edit_z(layer, hs)

        def post(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
            z = args[0]
            ablated = proj.forward(
                from_canonical(
                    Site("z", layer), edit(to_canonical(Site("z", layer), z, model.n_heads))
                )
            )
            ratio = out.norm(dim=-1, keepdim=True) / ablated.norm(dim=-1, keepdim=True).clamp(
                min=torch.finfo(out.dtype).tiny
            )
            return ablated * ratio

        return module.register_forward_hook(post)


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


def _unit(direction: Tensor) -> Tensor:
    d = direction.detach().double()
    return d / d.norm()


@dataclass
class DirectionProjection(Edit):
    """Remove a direction: ``x <- x - (x . r_hat) r_hat`` at residual-stream sites.

    The default sites are Arditi et al.'s directional ablation: every block input and every
    attention and MLP output, at every layer (``layers=None``).
    """

    direction: Float[Tensor, " d_model"]
    layers: Sequence[int] | None = None
    kinds: Sequence[str] = ("resid_pre", "attn_out", "mlp_out")

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        _check_direction(model, self.direction)
        r = _unit(self.direction)

        def fn(x: Tensor) -> Tensor:
            rr = r.to(x.device, x.dtype)
            return x - (x @ rr)[..., None] * rr

        layers = range(model.n_layers) if self.layers is None else self.layers
        return [(Site(k, l), fn) for l in layers for k in self.kinds]


@dataclass
class ActivationAddition(Edit):
    """Add ``coeff * vector`` to a residual-stream site at chosen layers, at every position."""

    vector: Float[Tensor, " d_model"]
    layers: Sequence[int] = field(default_factory=lambda: [0])
    kind: str = "resid_pre"
    coeff: float = 1.0

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        _check_direction(model, self.vector)

        def fn(x: Tensor) -> Tensor:
            return x + self.coeff * self.vector.to(x.device, x.dtype)

        return [(Site(self.kind, l), fn) for l in self.layers]


def _check_direction(model: Model, v: Tensor) -> None:
    if v.shape != (model.d_model,):
        raise ValueError(
            f"direction has shape {tuple(v.shape)} but {model.name} has d_model {model.d_model}:"
            " it was computed on another model"
        )

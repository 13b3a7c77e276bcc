"""Interventions: edits of sites during any forward pass or generation.

One engine for every backend: an edit is a function on a site's canonical tensor, installed as
a torch hook on the module the family table names, in every module tree the model runs through
(the plain HF module, and the bridge's clone for TransformerLens). So the same edit acts in
captures, logits and ``generate`` alike. On a remote model (nnsight ``remote=True``) there is no
local module to hook: the nnsight backend applies the same functions as trace operations.
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


def _hook_norm_restore(model: Model, tree: nn.Module, site: Site, fn: EditFn) -> RemovableHandle:
    """Replace the output of the module reading ``z`` with its output on the edited ``z``,
    rescaled at each position to the norm of the real output."""
    module = get_path(tree, module_port(model, site)[0])
    # The bridge wraps the projection; its inner module's forward runs no hooks.
    proj = getattr(module, "_original_component", module)

    def post(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
        edited = proj.forward(from_canonical(site, fn(to_canonical(site, args[0], model.n_heads))))
        norm = edited.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(out.dtype).tiny)
        return edited * (out.norm(dim=-1, keepdim=True) / norm)

    return module.register_forward_hook(post)


class Edit:
    """Base of all edits: a list of (site, function) pairs, or a custom ``install``.

    Edits given by ``site_fns`` also run on remote models; a custom ``install`` (torch hooks)
    runs only where the weights are. ``restores_norm`` makes each function act on ``z`` with
    the output projection's norm kept (see ``HeadAblation``).
    """

    restores_norm: bool = False

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        raise NotImplementedError

    def resolved_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        """``site_fns`` with checked, non-negative sites."""
        out = [(site.resolved(model), fn) for site, fn in self.site_fns(model)]
        for site, _ in out:
            if site.kind == "pattern":
                raise ValueError("pattern is read-only: edit z or the attention output instead")
            if self.restores_norm and site.kind != "z":
                raise ValueError(f"a norm-restoring edit acts on z, not {site.kind}")
        return out

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        """Hook this edit into one module tree."""
        hook = _hook_norm_restore if self.restores_norm else _hook_site
        return [hook(model, tree, site, fn) for site, fn in self.resolved_fns(model)]


#: One edit at one site as a remote trace applies it: (site, function, restores_norm).
TraceOp = tuple[Site, EditFn, bool]


class Intervention(AbstractContextManager):
    """Active edits; leave the ``with`` block (or call ``remove``) to undo them all."""

    def __init__(self, model: Model, edits: Sequence[Edit]) -> None:
        self.model = model
        self.edits = list(edits)
        self.handles: list[RemovableHandle] = []
        self.ops: list[TraceOp] = []
        if model.remote:
            for e in self.edits:
                if type(e).install is not Edit.install:
                    raise NotImplementedError(
                        f"{type(e).__name__} installs its own torch hooks, which cannot act on "
                        f"a remote model ({model.name} runs on NDIF); remote runs apply edits "
                        "defined by site_fns (HeadAblation, DirectionProjection, "
                        "ActivationAddition)"
                    )
                self.ops += [(s, fn, e.restores_norm) for s, fn in e.resolved_fns(model)]
        else:
            for tree in model.trees():
                for e in self.edits:
                    self.handles.extend(e.install(model, tree))
        model.interventions.append(self)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.ops.clear()
        if self in self.model.interventions:
            self.model.interventions.remove(self)

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

    @property
    def restores_norm(self) -> bool:
        return self.mode == "scale"

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        by_layer = _heads_by_layer(model, self.heads)
        if self.mode == "mean":
            if self.means is None or any(l not in self.means for l in by_layer):
                raise ValueError("mean ablation needs means for every layer: use head_means()")
        fns = []
        for l, hs in by_layer.items():
            mean = self.means[l][hs] if self.mode == "mean" else None
            fns.append((Site("z", l), _heads_edit(hs, self.mode, mean, self.scale)))
        return fns


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
        coeff, vector = self.coeff, self.vector

        def fn(x: Tensor) -> Tensor:
            return x + coeff * vector.to(x.device, x.dtype)

        return [(Site(self.kind, l), fn) for l in self.layers]


def _check_direction(model: Model, v: Tensor) -> None:
    if v.shape != (model.d_model,):
        raise ValueError(
            f"direction has shape {tuple(v.shape)} but {model.name} has d_model {model.d_model}:"
            " it was computed on another model"
        )

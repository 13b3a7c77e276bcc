"""The intervention mechanism: edits of sites during any forward pass or generation.

One engine for every backend: an edit is a function on a site's canonical tensor, installed as
a torch hook on the module the family table names, in every module tree the model runs through
(the plain HF module, and the bridge's clone for TransformerLens). So the same edit acts in
captures, logits and ``generate`` alike. On a remote model (nnsight ``remote=True``) there is no
local module to hook: the edits hand the same functions to the backend (``trace_ops``), which
applies them as trace operations.

Every edit acts at every position unless its ``positions`` (``thinklens.positions``) say
otherwise; then a hook on the top module of each tree tells the site hooks which tokens of the
pass to edit, and each edited tensor is ``where(mask, edited, original)`` along its token axis.
"""

# No postponed annotations here: the ``positions`` field's type must be an object, not a name,
# in the ``__init__`` of every edit, whichever module defines the edit (the API docs read it).
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from thinklens.backends.base import TraceOp, from_canonical, to_canonical
from thinklens.model import Model, get_path
from thinklens.positions import Positions, PositionsLike, PositionTracker
from thinklens.sites import Site

EditFn = Callable[[Tensor], Tensor]


def _hook_site(
    model: Model, tree: nn.Module, site: Site, fn: EditFn, where: PositionTracker | None
) -> RemovableHandle:
    """Install ``fn`` on a site's canonical tensor in one module tree (at ``where``'s tokens)."""
    path, port, index = model.family.site_module(site)
    module = get_path(tree, path)
    n_heads = model.n_heads

    def apply(x: Tensor) -> Tensor:
        x = to_canonical(site, x, n_heads)
        out = fn(x)
        if where is not None:
            out = torch.where(where.mask_like(x), out, x)
        return from_canonical(site, out)

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


def _hook_norm_restore(
    model: Model, tree: nn.Module, site: Site, fn: EditFn, where: PositionTracker | None
) -> RemovableHandle:
    """Replace the output of the module reading ``z`` with its output on the edited ``z``,
    rescaled at each position to the norm of the real output (at ``where``'s tokens)."""
    module = get_path(tree, model.family.site_module(site)[0])
    # The bridge wraps the projection; its inner module's forward runs no hooks.
    proj = getattr(module, "_original_component", module)

    def post(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
        edited = proj.forward(from_canonical(site, fn(to_canonical(site, args[0], model.n_heads))))
        norm = edited.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(out.dtype).tiny)
        restored = edited * (out.norm(dim=-1, keepdim=True) / norm)
        return restored if where is None else torch.where(where.mask_like(out), restored, out)

    return module.register_forward_hook(post)


@dataclass
class Edit:
    """Base of all edits: a list of (site, function) pairs, or a custom ``install``.

    Edits given by ``site_fns`` also run on remote models, and act only at ``positions``
    (keyword; every position by default, see ``thinklens.positions.Positions``); a custom
    ``install`` (torch hooks) runs only where the weights are and places itself.
    ``restores_norm`` makes each function act on ``z`` with the output projection's norm kept
    (see ``HeadAblation``).
    """

    restores_norm: ClassVar[bool] = False
    positions: PositionsLike = field(default=None, kw_only=True)

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

    def tracker(self, model: Model) -> PositionTracker | None:
        """A tracker of this edit's positions, or None when it acts at every position."""
        positions = Positions.parse(self.positions)
        return None if positions.is_all else PositionTracker(positions, model.tokenizer)

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        """Hook this edit into one module tree."""
        hook = _hook_norm_restore if self.restores_norm else _hook_site
        fns = self.resolved_fns(model)
        where = self.tracker(model)
        # The tracker's hooks go on the top module, so they run before any site's.
        handles = [] if where is None else where.install(tree)
        return handles + [hook(model, tree, site, fn, where) for site, fn in fns]


class Intervention(AbstractContextManager):
    """Active edits; leave the ``with`` block (or call ``remove``) to undo them all."""

    def __init__(self, model: Model, edits: Sequence[Edit]) -> None:
        self.model = model
        self.edits = list(edits)
        self.handles: list[RemovableHandle] = []
        self.ops: list[TraceOp] = []
        self._check_positions(self.edits)
        if model.remote:
            for e in self.edits:
                if type(e).install is not Edit.install:
                    raise NotImplementedError(
                        f"{type(e).__name__} installs its own torch hooks, which cannot act on "
                        f"a remote model ({model.name} runs on NDIF); remote runs apply edits "
                        "defined by site_fns (HeadAblation, DirectionProjection, "
                        "ActivationAddition)"
                    )
                where = e.tracker(model)
                mask = None if where is None else where.full_mask
                self.ops += [(s, fn, e.restores_norm, mask) for s, fn in e.resolved_fns(model)]
            model.backend.trace_ops.extend(self.ops)
        else:
            for tree in model.trees():
                for e in self.edits:
                    self.handles.extend(e.install(model, tree))
        model.interventions.append(self)

    @staticmethod
    def _check_positions(edits: list[Edit]) -> None:
        """A custom ``install`` places its own hooks: positions given to it would be ignored."""
        for e in edits:
            if type(e).install is not Edit.install and not Positions.parse(e.positions).is_all:
                raise ValueError(
                    f"{type(e).__name__} installs its own torch hooks, which do not read "
                    "positions: leave positions unset, or define the edit by site_fns"
                )

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        # By identity: another intervention may hold an equal op, and order is composition.
        mine = {id(op) for op in self.ops}
        ops = self.model.backend.trace_ops
        ops[:] = [op for op in ops if id(op) not in mine]
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

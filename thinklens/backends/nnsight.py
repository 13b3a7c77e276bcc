"""nnsight 0.8 backend: reads module inputs and outputs in a trace, here or on NDIF.

Every forward pass is one trace whose body uses only nnsight operations, torch and plain data,
so the same body runs locally or, with ``remote=True``, on an NDIF server where thinklens is not
installed: positions are cut inside the trace and only the cut tensors come back. Locally, edits
act through their torch hooks; remotely they are applied in the body as trace operations.
"""

from __future__ import annotations

import inspect
import warnings

import nnsight
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from thinklens.backends.base import (
    Reader,
    TraceOp,
    eager_attention,
    forward_order,
    to_canonical,
)
from thinklens.families import Family
from thinklens.sites import POS_DIM, Site

#: Per module port, in forward order: (envoy, "input" | "output", items), where each item is
#: (tuple index, heads to split (z) or 0, position axis, edit fns, norm-restoring edit fns, read);
#: each edit fn is (fn, positions), its ``TraceOp.positions`` until a trace resolves it to a
#: token mask [batch, pos] (or None: every position).
Plan = list[tuple[object, str, list[tuple[int, int, int, list, list, bool]]]]


def _envoy(root: object, path: str) -> object:
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _with_masks(plan: Plan, ids: Tensor, mask: Tensor) -> Plan:
    """The plan with each edit's positions made this pass's token mask: made here from the
    ids, so the trace body gets plain tensors only."""

    def resolve(fns: list) -> list:
        return [(fn, None if where is None else where(ids, mask)) for fn, where in fns]

    return [
        (env, port, [(i, h, d, resolve(f), resolve(r), read) for i, h, d, f, r, read in entries])
        for env, port, entries in plan
    ]


class NNsightBackend:
    """Reads sites as module inputs/outputs in an nnsight trace of the plain HF module."""

    name = "nnsight"

    def __init__(
        self,
        hf: nn.Module,
        tokenizer: object,
        family: Family,
        n_heads: int,
        remote: bool | str = False,
        lm: object | None = None,
    ) -> None:
        self.hf = hf
        self.family = family
        self.n_heads = n_heads
        self.remote = remote
        self.trace_ops: list[TraceOp] = []
        if lm is None:
            from nnsight import LanguageModel

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
                lm = LanguageModel(hf, tokenizer=tokenizer)
        self.lm = lm
        #: Whether the model's forward computes logits at chosen positions only.
        self.keeps_logits = "logits_to_keep" in inspect.signature(hf.forward).parameters

    def trees(self) -> list[nn.Module]:
        return [self.hf]

    def _plan(self, sites: list[Site]) -> tuple[Plan, list[list[Site]]]:
        """The trace plan for reading ``sites`` and applying ``trace_ops``, and which sites
        each read serves, in the order the trace returns them."""
        ops = self.trace_ops
        items: dict[tuple[str, str], dict[int, tuple]] = {}
        for s in forward_order([*sites, *(op[0] for op in ops)]):
            path, port, index = self.family.site_module(s)
            heads = self.n_heads if s.kind == "z" else 0
            items.setdefault((path, port), {}).setdefault(
                index, (index, heads, POS_DIM[s.kind], [], [], [])
            )
        for op in ops:
            site, fn, restore, where = (*op, None)[:4]  # a 3-tuple acts everywhere
            path, port, index = self.family.site_module(site)
            items[path, port][index][4 if restore else 3].append((fn, where))
        for s in sites:
            path, port, index = self.family.site_module(s)
            items[path, port][index][5].append(s)
        plan, reads = [], []
        for (path, port), by_index in items.items():
            entries = []
            for index, heads, dim, fns, restores, group in by_index.values():
                entries.append((index, heads, dim, fns, restores, bool(group)))
                if group:
                    reads.append(group)
            plan.append((_envoy(self.lm, path), port, entries))
        return plan, reads

    def _trace(
        self,
        ids: Tensor,
        mask: Tensor,
        plan: Plan,
        positions: Tensor | None,
        stop: bool,
        logits: bool = False,
    ) -> dict:
        """Run the plan in one trace; the reads come back as {0: tensor, 1: ..., "logits": ...}.

        The body must stay self-contained (torch, nnsight, envoys and plain data): on NDIF it
        is shipped as source and run where thinklens is not installed.
        """
        lm, remote = self.lm, self.remote
        plan = _with_masks(plan, ids, mask)
        extra, at_logits = {}, positions
        if logits and positions is not None and self.keeps_logits:
            # The unembedding only at the positions read: with right padding rows end at
            # different places, so the set of them, each row's own picked after.
            keep = torch.unique(positions)
            extra["logits_to_keep"] = keep.to(ids.device)
            at_logits = torch.searchsorted(keep, positions)

        def cut(x: Tensor, dim: int, where: Tensor | None = positions) -> Tensor:
            # Defined here, not imported: a nested function ships by value to the server.
            if where is None:
                return x.detach()
            shape, view = list(x.shape), [1] * x.dim()
            shape[dim] = view[dim] = where.shape[1]
            view[0] = where.shape[0]
            return x.gather(dim, where.to(x.device).view(view).expand(shape)).detach()

        with lm.trace(ids, attention_mask=mask, use_cache=False, remote=remote, **extra) as tracer:
            got = nnsight.save({})
            for env, port, entries in plan:
                value = getattr(env, port)
                for index, heads, dim, fns, restores, read in entries:
                    x = value[index] if isinstance(value, tuple) else value
                    if read and port == "output":
                        # As with hooks: an output is read as the module made it, before edits;
                        # an input is read as the module receives it, after them.
                        got[len(got)] = cut(x, dim)
                    for fn, where in fns:
                        y = fn(x.unflatten(-1, (heads, -1))).flatten(-2) if heads else fn(x)
                        if where is not None:  # [batch, pos] -> the raw layout [batch, pos, d]
                            y = torch.where(where[..., None].to(y.device), y, x)
                        x = y
                    if fns and port == "input":
                        env.input = x
                    elif fns:
                        if isinstance(value, tuple):
                            value = (*value[:index], x, *value[index + 1 :])
                        else:
                            value = x
                        env.output = value
                    if read and port == "input":
                        got[len(got)] = cut(x, dim)
                    if restores:
                        # HeadAblation(mode="scale"): the edited heads through the module,
                        # rescaled to the norm of its real output.
                        out = env.output
                        for fn, where in restores:
                            edited = env(fn(x.unflatten(-1, (heads, -1))).flatten(-2))
                            norm = edited.norm(dim=-1, keepdim=True)
                            norm = norm.clamp(min=torch.finfo(out.dtype).tiny)
                            new = edited * (out.norm(dim=-1, keepdim=True) / norm)
                            if where is not None:
                                new = torch.where(where[..., None].to(new.device), new, out)
                            out = new
                        env.output = out
            if logits:
                got["logits"] = cut(lm.output.logits, 1, at_logits)
            elif stop:
                tracer.stop()
        return got

    def run(
        self,
        ids: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        sites: list[Site],
        read: Reader,
        stop_early: bool = True,
        positions: Int[Tensor, "batch sel"] | None = None,
    ) -> None:
        plan, reads = self._plan(sites)
        if stop_early and sites:  # edits past the deepest read cannot change what is read
            last = max(i for i, (_, _, entries) in enumerate(plan) if any(e[5] for e in entries))
            plan = plan[: last + 1]
        with eager_attention(self.trees(), any(s.kind == "pattern" for s in sites)):
            got = self._trace(ids, mask, plan, positions, stop_early)
        for k, group in enumerate(reads):
            for s in group:
                read(s, to_canonical(s, got[k], self.n_heads))

    @torch.no_grad()
    def logits(
        self,
        ids: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        positions: Int[Tensor, "batch sel"] | None = None,
    ) -> Float[Tensor, "batch sel vocab"]:
        plan, _ = self._plan([])
        return self._trace(ids, mask, plan, positions, False, logits=True)["logits"]

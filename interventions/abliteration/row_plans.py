"""Several exact plans in one batch: each row of a forward pass gets its own plan's edit.

A search trial counts refusals by generating answers to the same prompts. On a CPU (and on a
GPU at small batches) a decoding step is bound by reading the weights, so it costs about as
much for 64 rows as for 16: ``RowPlans`` runs the edits of several trials as output hooks on
as many copies of the prompts, in one batch, each row edited by its own trial's plan with
``PlanHooks``'s exact formula (``ablation.hook_terms``). A module that a plan leaves alone
passes that plan's rows through unchanged.

The rows are numbered as given (``rows[i]``: the plan of row ``i``); a decoding loop that drops
finished rows from the batch says which rows remain with ``select`` (``decoding.greedy_continue``
takes it as ``on_rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from thinklens.hooks import Edit
from thinklens.interventions.abliteration.ablation import (
    HookTerms,
    edited_output,
    hook_coefficients,
    hook_terms,
)
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.model import Model, get_path


@dataclass
class _ModuleTerms:
    """One module's edit under every plan as ``hook_coefficients``, stacked: row ``p`` is plan
    ``p``'s (the identity, ``a = 1, b = c = 0``, for a plan that leaves the module alone)."""

    a: Float[Tensor, "plan d_model"]
    b: Float[Tensor, "plan d_model"]
    c: Float[Tensor, "plan d_model"]
    kept: Float[Tensor, " d_model"] | None


@dataclass
class RowPlans(Edit):
    """Plan ``rows[i]`` of ``plans`` edits row ``i`` of every forward pass (see the module).

    Each plan must be exact (``PlanHooks``'s conditions). A forward pass over fewer rows than
    ``rows`` needs ``select`` first.
    """

    plans: Sequence[Sequence[MatrixEdit]] = field(default_factory=list)
    rows: Sequence[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.plans:
            raise ValueError("RowPlans needs at least one plan")
        bad = [p for p in self.rows if not 0 <= p < len(self.plans)]
        if bad:
            raise ValueError(
                f"rows name plans {sorted(set(bad))}, but there are {len(self.plans)} plans "
                f"(0..{len(self.plans) - 1})"
            )
        self._all = torch.tensor(list(self.rows), dtype=torch.long)
        self._current: Int[Tensor, " row"] = self._all
        self._version = 0  # counts selections: each hook gathers its rows' terms once a version

    def select(self, rows: Sequence[int]) -> None:
        """The batch now holds these of the original rows, in this order."""
        self._current = self._all[torch.tensor(list(rows), dtype=torch.long)]
        self._version += 1

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        per_module: dict[str, list[HookTerms | None]] = {}
        for p, edits in enumerate(self.plans):
            for e in edits:
                slots = per_module.setdefault(e.module, [None] * len(self.plans))
                if slots[p] is not None:
                    raise ValueError(f"plan {p} edits {e.module} twice: merge its edits first")
                slots[p] = hook_terms(model, e)
        return [
            get_path(tree, name).register_forward_hook(self._hook(_stack(name, slots)))
            for name, slots in per_module.items()
        ]

    def _hook(self, t: _ModuleTerms):
        def terms(out: Tensor) -> tuple:
            idx = self._current.to(t.a.device)
            shape = (len(idx),) + (1,) * (out.dim() - 2) + (out.shape[-1],)
            abc = tuple(v[idx].view(shape).to(out.device) for v in (t.a, t.b, t.c))
            return abc, None if t.kept is None else t.kept.to(out.device, torch.float64)

        return per_row_hook(lambda: len(self._current), lambda: self._version, terms, "RowPlans")


def per_row_hook(
    rows: Callable[[], int],
    version: Callable[[], int],
    terms: Callable[[Tensor], tuple | None],
    owner: str,
) -> Callable:
    """A forward hook giving each row of a module's output its own edit (``edited_output``):
    ``terms(out)``, the rows' stacked coefficients and kept bias (None: no row is edited, the
    output passes through), gathered once a ``version`` of the batch's rows (a decoding step
    reuses them: the gathers cost as much as the edit itself); ``rows()``: how many rows the
    batch holds, checked against the pass."""
    gathered: dict[tuple, tuple | None] = {}

    def post(mod: nn.Module, args: tuple, out: Tensor) -> Tensor | None:
        if out.shape[0] != rows():
            raise ValueError(
                f"a forward pass over {out.shape[0]} rows, but {owner} holds {rows()}: call "
                "select with the rows the batch holds"
            )
        key = (version(), out.device, out.dim())
        if key not in gathered:
            gathered.clear()
            gathered[key] = terms(out)
        if gathered[key] is None:
            return None
        abc, kept = gathered[key]
        return edited_output(out.double(), abc, kept).to(out.dtype)  # float64, as PlanHooks

    return post


def _stack(name: str, slots: list[HookTerms | None]) -> _ModuleTerms:
    """The plans' terms for one module as tensors indexed by plan."""
    present = [t for t in slots if t is not None]
    if len({t.kept is None for t in present}) > 1:
        raise ValueError(
            f"{name}: some plans edit its bias and some keep it; plan them all with the same bias"
        )
    d = present[0].r.shape[-1]
    identity = (torch.ones(d, dtype=torch.float64), *[torch.zeros(d, dtype=torch.float64)] * 2)
    a, b, c = [], [], []
    for t in slots:
        terms = identity if t is None else edit_coefficients(t)  # None: left alone
        for out, v in zip((a, b, c), terms, strict=True):
            out.append(v)
    return _ModuleTerms(torch.stack(a), torch.stack(b), torch.stack(c), present[0].kept)


def edit_coefficients(t: HookTerms) -> tuple[Tensor, Tensor, Tensor]:
    """One edit's ``hook_coefficients`` in float64 on the CPU, ``a`` as ones without norms."""
    norms = None if t.norms is None else tuple(v.cpu() for v in t.norms)
    a, b, c = hook_coefficients(t.r.cpu(), t.w, norms)
    a = torch.ones_like(b) if a is None else a
    return tuple(v.to(torch.float64) for v in (a, b, c))

"""Exact plans that come and go while their hooks stay installed: each row of a pass is edited by
the plan its key names.

``RowPlans`` fixes its plans when it is installed. A search whose trials join a running decoding
batch (``thinklens.in_flight``) needs a new trial's plan in the batch without stopping it:
``KeyedPlans`` hooks every module a plan may edit once (``modules``), and ``add`` / ``drop`` a
plan under a key at any time; ``select`` says which plan's key each row of the next passes
holds. Each row gets ``PlanHooks``'s exact formula (``ablation.edited_output``) with its own
plan's terms; a pass in which no row's plan edits a module passes that module through.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from thinklens.hooks import Edit
from thinklens.interventions.abliteration.ablation import hook_terms
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.row_plans import edit_coefficients, per_row_hook
from thinklens.model import Model, get_path

Terms = tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"], Float[Tensor, " d_model"]]


@dataclass
class KeyedPlans(Edit):
    """Plans by key, each row of a pass edited by the plan its key names (see the module).

    ``modules``: every module a plan may edit (hooked when installed); a plan that edits
    another is refused by ``add``.
    """

    modules: Sequence[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.modules:
            raise ValueError("KeyedPlans needs the modules its plans may edit")
        self._plans: dict[Hashable, dict[str, Terms]] = {}
        self._kept: dict[str, Tensor | None] = {}
        self._rows: list[Hashable] = []
        self._unique: list[Hashable] = []  # the rows' keys, each once, in order of first row
        self._index = torch.zeros(0, dtype=torch.long)  # each row's place in ``_unique``
        self._version = 0  # counts changes: each hook gathers its rows' terms once a version

    def add(self, model: Model, key: Hashable, plan: Sequence[MatrixEdit]) -> None:
        """Plan ``plan`` under ``key`` (exact edits only, as ``PlanHooks``)."""
        if key in self._plans:
            raise ValueError(f"a plan is already kept under {key!r}: drop it first")
        hooked = set(self.modules)
        terms: dict[str, Terms] = {}
        for e in plan:
            if e.module not in hooked:
                raise ValueError(
                    f"plan {key!r} edits {e.module}, which KeyedPlans does not hook: name it "
                    "in modules"
                )
            if e.module in terms:
                raise ValueError(f"plan {key!r} edits {e.module} twice: merge its edits first")
            t = hook_terms(model, e)
            if e.module in self._kept and (self._kept[e.module] is None) != (t.kept is None):
                raise ValueError(
                    f"{e.module}: some plans edit its bias and some keep it; plan them all with "
                    "the same bias"
                )
            self._kept[e.module] = t.kept
            terms[e.module] = edit_coefficients(t)
        self._plans[key] = terms
        self._version += 1

    def drop(self, key: Hashable) -> None:
        """Forget the plan under ``key``."""
        self._plans.pop(key, None)
        self._version += 1

    def select(self, keys: Sequence[Hashable]) -> None:
        """The rows of the next passes hold these plans' keys, in batch order."""
        unknown = sorted({repr(k) for k in keys if k not in self._plans})
        if unknown:
            raise ValueError(f"no plan is kept under {', '.join(unknown)}: add it first")
        self._rows = list(keys)
        order = {k: i for i, k in enumerate(dict.fromkeys(self._rows))}
        self._unique = list(order)
        self._index = torch.tensor([order[k] for k in self._rows], dtype=torch.long)
        self._version += 1

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        return [get_path(tree, m).register_forward_hook(self._hook(m)) for m in self.modules]

    def _terms(self, name: str, out: Tensor) -> tuple | None:
        """The selected rows' terms for module ``name``, stacked as ``out``'s rows, and its
        kept bias; None if no row's plan edits it."""
        plans = [self._plans[k].get(name) for k in self._unique]
        if all(t is None for t in plans):
            return None
        one = torch.ones(out.shape[-1], dtype=torch.float64)
        identity = (one, torch.zeros_like(one), torch.zeros_like(one))
        # Each plan's terms once, then one gather: a batch holds many rows of few plans.
        plans = [identity if t is None else t for t in plans]
        shape = (len(self._rows),) + (1,) * (out.dim() - 2) + (out.shape[-1],)
        abc = tuple(
            torch.stack([p[j] for p in plans])[self._index].view(shape).to(out.device)
            for j in range(3)
        )
        kept = self._kept.get(name)
        return abc, None if kept is None else kept.to(out.device, torch.float64)

    def _hook(self, name: str):
        return per_row_hook(
            lambda: len(self._rows),
            lambda: self._version,
            lambda out: self._terms(name, out),
            "KeyedPlans",
        )

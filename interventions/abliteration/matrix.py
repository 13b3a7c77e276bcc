"""The matrix edit: which matrix, which unit direction, which weight, and how it is written.

``W <- W - w r r^T W`` for a matrix writing into the residual stream (rows of the embedding:
``E <- E - w E r r^T``), in float64, optionally norm-preserving (Heretic's row form). Presets
(``presets``) make lists of these; ``weights`` applies them to a model.

Three options reproduce what the published tools store, beside the exact edit:

- ``bias``: also remove ``w (b . r) r`` from the matrix's bias. Off by default: none of the
  published tools edits a bias, so with it off a model with output biases keeps writing
  ``b``'s component along ``r`` (on with it, the weight edit equals ablating the whole write).
- ``round_to``: round the edited matrix to this dtype (ErisForge and DECCP store every edited
  matrix in bfloat16); it is stored back in the model's own dtype, so the model still runs.
- ``low_rank``: replace the exact change ``W' - W`` by its rank-``low_rank`` approximation from
  ``torch.svd_lowrank`` (float32, ``q = 2 k + 4``, 6 iterations, the global RNG seeded with
  ``seed`` just before), added to ``W`` in the model's dtype: Heretic keeps its norm-preserving
  edit as such a LoRA adapter (rank 3) and merges it that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from thinklens.model import Model, get_path


@dataclass(frozen=True)
class MatrixEdit:
    """Remove ``weight`` times the unit ``direction`` from what one matrix writes.

    ``module`` is a path from the top module (from the family table); ``kind`` is ``"embed"``
    for the token embedding, ``"write"`` for a projection whose output is the residual stream.
    """

    module: str
    direction: Float[Tensor, " d_model"]
    weight: float = 1.0
    kind: Literal["embed", "write"] = "write"
    norm_preserving: bool = False
    bias: bool = False
    round_to: torch.dtype | None = None
    low_rank: int | None = None
    seed: int = 0

    @property
    def exact(self) -> bool:
        """Whether the written weight is the exact edit (so a forward hook can reproduce it)."""
        return not self.norm_preserving and self.round_to is None and self.low_rank is None


def resolve_module(model: Model, root: nn.Module, path: str) -> nn.Module:
    """The module at a family-table path that owns a dense weight, or a clear error."""
    try:
        module = get_path(root, path)
    except (AttributeError, IndexError, KeyError, TypeError):
        raise ValueError(
            f"{path!r} (from the {model.family.name!r} row of the family table) does not exist "
            f"in {model.name}: its architecture differs from that row; add a row for it to "
            "thinklens.families.FAMILIES"
        ) from None
    if not isinstance(getattr(module, "weight", None), Tensor):
        raise ValueError(
            f"{path} in {model.name} is a {type(module).__name__} without a single weight "
            "matrix (e.g. mixture-of-experts): weight edits support dense projections only"
        )
    return module


def _as_out_in(model: Model, edit: MatrixEdit, weight: Tensor) -> Tensor:
    """The weight as ``[d_model, d_in]`` (write) or ``[vocab, d_model]`` (embed), float64."""
    w = weight.detach().to(torch.float64)
    if edit.kind == "write" and model.family.conv1d:
        w = w.T  # GPT-2 stores Conv1D weights as [in, out]
    dim = 1 if edit.kind == "embed" else 0
    if w.shape[dim] != model.d_model:
        raise ValueError(
            f"{edit.module} has weight shape {tuple(weight.shape)}, which does not write into "
            f"a residual stream of width {model.d_model}: the family row names the wrong matrix"
        )
    return w


def edited_weight(
    w: Float[Tensor, "d_model d_in"], r: Float[Tensor, " d_model"], scale: float, norm: bool
) -> Float[Tensor, "d_model d_in"]:
    """``W - scale r r^T W``; with ``norm``, the norm-preserving form: rows (one per output
    coordinate) are unit-normalised, edited, renormalised and given back their norms."""
    if not norm:
        return w - scale * torch.outer(r, r @ w)
    norms = w.norm(dim=1, keepdim=True)
    unit = w / norms.clamp(min=torch.finfo(w.dtype).tiny)
    unit = unit - scale * torch.outer(r, r @ unit)
    return unit / unit.norm(dim=1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny) * norms


def low_rank_delta(
    delta: Float[Tensor, "d_out d_in"], rank: int, seed: int
) -> Float[Tensor, "d_out d_in"]:
    """The rank-``rank`` approximation ``U S V^T`` of ``delta`` by seeded ``svd_lowrank``
    (float32); the caller's RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        # svd_lowrank draws its random projection from the global RNG: seeding it right
        # before the call makes the same delta always give the same approximation.
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(delta.to(torch.float32), q=2 * rank + 4, niter=6)
    root = torch.sqrt(s[:rank])
    return (u[:, :rank] * root) @ (root[:, None] * v[:, :rank].T)


def new_weight(model: Model, edit: MatrixEdit, weight: Tensor) -> Tensor:
    """The edited weight in ``weight``'s own layout and dtype."""
    r = edit.direction.to(torch.float64).to(weight.device)
    w = _as_out_in(model, edit, weight)
    if edit.kind == "embed":
        new = w - edit.weight * torch.outer(w @ r, r)
    else:
        new = edited_weight(w, r, edit.weight, edit.norm_preserving)
    if edit.low_rank is not None:
        delta = low_rank_delta(new - w, edit.low_rank, edit.seed)
        # Merged like a LoRA adapter: the change is cast to the weight's dtype, then added.
        new = w.to(weight.dtype) + delta.to(weight.dtype)
    if edit.round_to is not None:
        new = new.to(edit.round_to)
    if edit.kind == "write" and model.family.conv1d:
        new = new.T
    return new.to(weight.dtype)


@torch.no_grad()
def write_edit(model: Model, root: nn.Module, edit: MatrixEdit) -> None:
    """Write one edit into the weight (and, with ``edit.bias``, the bias) of its matrix under
    ``root``, in place."""
    module = resolve_module(model, root, edit.module)
    module.weight.copy_(new_weight(model, edit, module.weight))
    bias = getattr(module, "bias", None)
    if edit.bias and edit.kind == "write" and isinstance(bias, Tensor):
        r = edit.direction.to(torch.float64).to(bias.device)
        b = bias.to(torch.float64)
        bias.copy_((b - edit.weight * (b @ r) * r).to(bias.dtype))


def edit_params(model: Model, root: nn.Module, edits: Sequence[MatrixEdit]) -> list[Tensor]:
    """The distinct weight and bias tensors ``edits`` write to."""
    out: dict[int, Tensor] = {}
    for e in edits:
        m = resolve_module(model, root, e.module)
        bias = getattr(m, "bias", None) if e.bias and e.kind == "write" else None
        for t in (m.weight, bias):
            if isinstance(t, Tensor):
                out[id(t)] = t
    return list(out.values())

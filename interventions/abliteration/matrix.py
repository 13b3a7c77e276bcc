"""The matrix edit: which matrix, which unit direction, which weight, and how it is written.

``W <- W - w r r^T W`` for a matrix writing into the residual stream (rows of the embedding:
``E <- E - w E r r^T``), in float64, optionally norm-preserving (Heretic's form). Presets
(``presets``) make lists of these; ``weights`` applies them to a model.
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
    """``W - scale r r^T W``; with ``norm``, Heretic's norm-preserving form: rows (one per
    output coordinate) are unit-normalised, edited, renormalised and given back their norms."""
    if not norm:
        return w - scale * torch.outer(r, r @ w)
    norms = w.norm(dim=1, keepdim=True)
    unit = w / norms.clamp(min=torch.finfo(w.dtype).tiny)
    unit = unit - scale * torch.outer(r, r @ unit)
    return unit / unit.norm(dim=1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny) * norms


@torch.no_grad()
def write_edit(model: Model, root: nn.Module, edit: MatrixEdit) -> None:
    """Write one edit into the weights (and bias) of its matrix under ``root``, in place."""
    module = resolve_module(model, root, edit.module)
    r = edit.direction.to(torch.float64).to(module.weight.device)
    w = _as_out_in(model, edit, module.weight)
    if edit.kind == "embed":
        new = w - edit.weight * torch.outer(w @ r, r)
    else:
        new = edited_weight(w, r, edit.weight, edit.norm_preserving)
        if model.family.conv1d:
            new = new.T
    module.weight.copy_(new.to(module.weight.dtype))
    bias = getattr(module, "bias", None)
    if edit.kind == "write" and isinstance(bias, Tensor):
        b = bias.to(torch.float64)
        bias.copy_((b - edit.weight * (b @ r) * r).to(bias.dtype))


def edit_params(model: Model, root: nn.Module, edits: Sequence[MatrixEdit]) -> list[Tensor]:
    """The distinct weight and bias tensors ``edits`` write to."""
    out: dict[int, Tensor] = {}
    for e in edits:
        m = resolve_module(model, root, e.module)
        for t in (m.weight, getattr(m, "bias", None)):
            if isinstance(t, Tensor):
                out[id(t)] = t
    return list(out.values())

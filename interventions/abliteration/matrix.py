"""The matrix edit: which matrix, which unit direction, which weight, and how it is written.

``W <- W - w r r^T W`` for a matrix writing into the residual stream (rows of the embedding:
``E <- E - w E r r^T``), in float64, optionally norm-preserving (Heretic's row form). Fused
mixture-of-experts matrices (``[expert, ...]``, see ``experts``) get the same edit, expert by
expert. Presets (``presets``) make lists of these; ``weights`` applies them to a model.

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

import torch
from jaxtyping import Float
from torch import Tensor, nn

from thinklens.interventions.abliteration.experts import Kind, fused_experts
from thinklens.model import Model, get_path


@dataclass(frozen=True)
class MatrixEdit:
    """Remove ``weight`` times the unit ``direction`` from what one matrix writes.

    ``module`` is a path from the top module (from the family table); ``kind`` is ``"embed"``
    for the token embedding, ``"write"`` for a projection whose output is the residual stream,
    ``"experts"`` for every expert's down matrix of a fused experts module (and, with
    ``bias``, their biases).
    """

    module: str
    direction: Float[Tensor, " d_model"]
    weight: float = 1.0
    kind: Kind = "write"
    norm_preserving: bool = False
    bias: bool = False
    round_to: torch.dtype | None = None
    low_rank: int | None = None
    seed: int = 0

    @property
    def exact(self) -> bool:
        """Whether the written weight is the exact edit (so a forward hook can reproduce it)."""
        return not self.norm_preserving and self.round_to is None and self.low_rank is None


def stored(value: object) -> Tensor | None:
    """A weight or bias as a float tensor (None if absent): torch.ao's dynamic int8 ``Linear``
    hands them out by method, quantized."""
    if callable(value) and not isinstance(value, Tensor | nn.Module):
        value = value()
    if isinstance(value, Tensor):
        return value.dequantize() if value.is_quantized else value
    return None


def resolve_module(model: Model, root: nn.Module, path: str) -> nn.Module:
    """The module at a family-table path that owns a dense weight or fused expert matrices,
    or a clear error."""
    try:
        module = get_path(root, path)
    except (AttributeError, IndexError, KeyError, TypeError):
        raise ValueError(
            f"{path!r} (from the {model.family.name!r} row of the family table) does not exist "
            f"in {model.name}: its architecture differs from that row; add a row for it to "
            "thinklens.families.FAMILIES"
        ) from None
    if not isinstance(getattr(module, "weight", None), Tensor) and not fused_experts(model, module):
        raise ValueError(
            f"{path} in {model.name} is a {type(module).__name__} with neither a weight matrix "
            f"nor the fused expert matrices the {model.family.name!r} row names: give the row "
            "its Experts (thinklens.families) or point it at the matrix that writes"
        )
    return module


def edit_tensors(model: Model, module: nn.Module, edit: MatrixEdit) -> tuple[Tensor, Tensor | None]:
    """The matrix an edit writes to and its bias (None without one)."""
    if edit.kind != "experts":
        bias = getattr(module, "bias", None)
        return module.weight, bias if isinstance(bias, Tensor) else None
    fused = fused_experts(model, module)
    if fused is None:
        raise ValueError(
            f"{edit.module} in {model.name} holds no fused expert matrices where the "
            f"{model.family.name!r} row says: check its Experts (thinklens.families)"
        )
    return fused


def _transposed(model: Model, edit: MatrixEdit) -> bool:
    """Whether the matrix is stored ``[d_in, d_model]`` (GPT-2's Conv1D, gpt-oss's experts)."""
    if edit.kind == "experts":
        return model.family.experts.transposed
    return edit.kind == "write" and model.family.conv1d


def stream_axis(model: Model, edit: MatrixEdit, weight: Tensor) -> int:
    """The axis of ``weight`` as stored that runs along the residual stream (-1 or -2), or a
    clear error when it is not ``d_model`` long."""
    axis = -1 if edit.kind == "embed" or _transposed(model, edit) else -2
    if weight.shape[axis] != model.d_model:
        raise ValueError(
            f"{edit.module} has weight shape {tuple(weight.shape)}, which does not write into "
            f"a residual stream of width {model.d_model}: the family row names the wrong matrix"
        )
    return axis


def as_out_in(model: Model, edit: MatrixEdit, weight: Tensor) -> Tensor:
    """The weight as ``[(expert,) d_model, d_in]`` (write, experts) or ``[vocab, d_model]``
    (embed), float64."""
    stream_axis(model, edit, weight)
    w = weight.detach().to(torch.float64)
    return w.transpose(-1, -2) if _transposed(model, edit) else w


def _remove(w: Tensor, r: Tensor, scale: float) -> Tensor:
    """``W - scale r r^T W`` for one matrix or a stack of them."""
    return w - scale * r[:, None] * (r @ w)[..., None, :]


def edited_weight(
    w: Float[Tensor, "*expert d_model d_in"], r: Float[Tensor, " d_model"], scale: float, norm: bool
) -> Float[Tensor, "*expert d_model d_in"]:
    """``W - scale r r^T W`` (each matrix of a stack); with ``norm``, the norm-preserving form:
    rows (one per output coordinate) are unit-normalised, edited, renormalised and given back
    their norms."""
    if not norm:
        return _remove(w, r, scale)
    norms = w.norm(dim=-1, keepdim=True)
    unit = _remove(w / norms.clamp(min=torch.finfo(w.dtype).tiny), r, scale)
    return unit / unit.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny) * norms


def low_rank_factors(
    delta: Float[Tensor, "d_out d_in"], rank: int, seed: int
) -> tuple[Float[Tensor, "d_out rank"], Float[Tensor, "rank d_in"]]:
    """``(U S^1/2, S^1/2 V^T)``: the factors of the rank-``rank`` approximation of ``delta`` by
    seeded ``svd_lowrank`` (float32); the caller's RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        # svd_lowrank draws its random projection from the global RNG: seeding it right
        # before the call makes the same delta always give the same approximation.
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(delta.to(torch.float32), q=2 * rank + 4, niter=6)
    root = torch.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * v[:, :rank].T


def low_rank_delta(
    delta: Float[Tensor, "d_out d_in"], rank: int, seed: int
) -> Float[Tensor, "d_out d_in"]:
    """The rank-``rank`` approximation of ``delta``: the product of ``low_rank_factors``."""
    b, a = low_rank_factors(delta, rank, seed)
    return b @ a


def exact_weight(
    edit: MatrixEdit, w: Float[Tensor, "*expert d_out d_in"], r: Float[Tensor, " d_model"]
) -> Float[Tensor, "*expert d_out d_in"]:
    """The edited matrix (``as_out_in`` view, float64) before any low-rank approximation or
    rounding."""
    if edit.kind == "embed":
        return w - edit.weight * torch.outer(w @ r, r)
    return edited_weight(w, r, edit.weight, edit.norm_preserving)


def new_weight(model: Model, edit: MatrixEdit, weight: Tensor) -> Tensor:
    """The edited weight in ``weight``'s own layout and dtype."""
    r = edit.direction.to(torch.float64).to(weight.device)
    w = as_out_in(model, edit, weight)
    new = exact_weight(edit, w, r)
    if edit.low_rank is not None:
        change = new - w
        if change.dim() == 3:  # one adapter per expert
            delta = torch.stack([low_rank_delta(d, edit.low_rank, edit.seed) for d in change])
        else:
            delta = low_rank_delta(change, edit.low_rank, edit.seed)
        # Merged like a LoRA adapter: the change is cast to the weight's dtype, then added.
        new = w.to(weight.dtype) + delta.to(weight.dtype)
    if edit.round_to is not None:
        new = new.to(edit.round_to)
    if _transposed(model, edit):
        new = new.transpose(-1, -2)
    return new.to(weight.dtype)


@torch.no_grad()
def write_edit(model: Model, root: nn.Module, edit: MatrixEdit) -> None:
    """Write one edit into the weight (and, with ``edit.bias``, the bias) of its matrix under
    ``root``, in place."""
    weight, bias = edit_tensors(model, resolve_module(model, root, edit.module), edit)
    weight.copy_(new_weight(model, edit, weight))
    if edit.bias and edit.kind != "embed" and bias is not None:
        r = edit.direction.to(torch.float64).to(bias.device)
        b = bias.to(torch.float64)  # [d_model], or [expert, d_model]
        bias.copy_((b - edit.weight * (b @ r)[..., None] * r).to(bias.dtype))


def edit_params(model: Model, root: nn.Module, edits: Sequence[MatrixEdit]) -> list[Tensor]:
    """The distinct weight and bias tensors ``edits`` write to."""
    out: dict[int, Tensor] = {}
    for e in edits:
        weight, bias = edit_tensors(model, resolve_module(model, root, e.module), e)
        for t in (weight, bias if e.bias and e.kind != "embed" else None):
            if t is not None:
                out[id(t)] = t
    return list(out.values())

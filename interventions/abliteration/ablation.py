"""Inference-time directional ablation: a direction removed from activations by hooks.

``PlanHooks`` runs a weight-edit plan as forward hooks on the same matrices (each output loses
``w (x . r) r``), the independent check of the weight engine; ``directional_ablation`` removes
one direction from every residual write (or a chosen set of layers), or at Arditi et al.'s
sites. Activation addition is ``thinklens.ActivationAddition``. All of these are ``Edit``s:
use them with ``thinklens.intervene`` in any capture, forward pass or generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from thinklens.hooks import Edit
from thinklens.interventions.abliteration.matrix import (
    MatrixEdit,
    as_out_in,
    resolve_module,
    stored,
)
from thinklens.interventions.abliteration.presets import plan
from thinklens.interventions.edits import DirectionProjection, unit_direction
from thinklens.model import Model, get_path


def row_norm_factors(
    w: Float[Tensor, "d_model d_in"], r: Float[Tensor, " d_model"], scale: float
) -> tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]]:
    """``(n, m)`` of the norm-preserving edit of ``w`` (``matrix.edited_weight``): ``n`` the row
    norms of ``w``, ``m`` those of its unit rows after the direction is removed, so that the
    edited matrix is ``diag(n / m) (U - scale r r^T U)`` with ``U = diag(1 / n) w``.

    ``m_i^2 = 1 - 2 scale r_i (U g)_i + scale^2 r_i^2 |g|^2`` with ``g = r^T U``: one pass
    over ``w``, no copy of it edited."""
    tiny = torch.finfo(w.dtype).tiny
    n = w.norm(dim=-1).clamp(min=tiny)
    unit = w / n[:, None]
    g = r @ unit
    m2 = 1 - 2 * scale * r * (unit @ g) + scale**2 * r**2 * (g @ g)
    return n, m2.clamp(min=0).sqrt().clamp(min=tiny)


@dataclass
class HookTerms:
    """What one exact edit does to its module's output ``x``: with ``part = x - kept`` (the
    weight's write) and ``y = part / n``, the output becomes ``(y - w (y . r) r) (n / m) + kept``
    (``n = m = 1`` unless the edit preserves row norms; ``kept`` None: no bias to keep)."""

    module: str
    r: Float[Tensor, " d_model"]
    w: float
    kept: Float[Tensor, " d_model"] | None
    norms: tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]] | None


def hook_terms(model: Model, e: MatrixEdit) -> HookTerms:
    """``e``'s terms as an output hook, or a clear error when it has no hook form."""
    if e.round_to is not None or e.low_rank is not None:
        raise ValueError(
            "a rounded or low-rank edit has no hook form: apply it to weights (or run a "
            "low-rank one as an adapter: adapters.adapted)"
        )
    if e.norm_preserving and e.kind != "write":
        raise ValueError(
            f"{e.module}: a norm-preserving edit of an embedding or of fused experts "
            "has no hook form here: apply it to weights"
        )
    experts = model.family.experts
    if e.kind == "experts" and not e.bias and experts is not None and experts.down_bias:
        # The hook sees the routed sum, biases included; keeping them would need the
        # routing weights of every token.
        raise ValueError(
            f"{model.name}'s experts have biases, which a hook on their routed sum "
            "cannot keep: plan with bias=True, or write the edit into the weights"
        )
    module = get_path(model.hf, e.module)
    if not callable(getattr(module, "weight", None)):  # not torch.ao's int8 Linear
        module = resolve_module(model, model.hf, e.module)  # the engine's clear errors
    bias = stored(getattr(module, "bias", None))
    r = e.direction.to(torch.float64)
    kept = None if e.bias or e.kind != "write" or not isinstance(bias, Tensor) else bias
    norms = None
    if e.norm_preserving:
        if e.bias:
            raise ValueError(
                f"{e.module}: a norm-preserving edit leaves the bias alone: plan with bias=False"
            )
        w = as_out_in(model, e, stored(module.weight)).to(torch.float64)
        norms = row_norm_factors(w, r.to(w.device), e.weight)
    return HookTerms(e.module, r, e.weight, kept, norms)


@dataclass
class PlanHooks(Edit):
    """A plan run at inference: each listed module's output loses ``w (x . r) r``.

    For exact plans (not rounded or low-rank) this is exactly what the weight edit does, so it
    is the independent check of the engine, and a way to try an edit without touching weights.
    A bias the edit leaves alone keeps its component along the direction. A norm-preserving
    edit of a write is exact too: with ``y`` the weight's write divided by ``w``'s row norms
    ``n``, the edited output is ``(n / m) (y - w (y . r) r)`` (``row_norm_factors``). The
    weights are read, dequantized if stored in int8, when the hooks are installed; nothing is
    written.
    """

    edits: Sequence[MatrixEdit] = field(default_factory=list)

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        handles = []
        for e in self.edits:
            t = hook_terms(model, e)
            handles.append(get_path(tree, t.module).register_forward_hook(_remove_hook(t)))
        return handles


Coefficients = tuple[Tensor | None, Tensor, Tensor]


def hook_coefficients(
    r: Float[Tensor, "... d_model"],
    w: float | Float[Tensor, "... 1"],
    norms: tuple[Tensor, Tensor] | None,
) -> Coefficients:
    """``(a, b, c)`` with which ``HookTerms``' formula is ``part * a - (part . b) c``: with
    ``y = part / n``, ``(y - w (y . r) r) (n / m) = part / m - (part . r / n) w r n / m``
    (``a`` None without norms). Computed once an edit, so a hook scales, takes one dot product
    and subtracts, where the formula's own steps divide, dot, subtract and rescale."""
    if norms is None:
        return None, r, w * r
    n, m = norms
    return 1 / m, r / n, w * r * n / m


def edited_output(
    x: Float[Tensor, "... d_model"],
    coefficients: Coefficients,
    kept: Float[Tensor, " d_model"] | None,
) -> Float[Tensor, "... d_model"]:
    """A module's output ``x`` under an exact edit (``HookTerms``' formula, as
    ``hook_coefficients``), which broadcast against ``x``: one edit for every row or one a row
    (``RowPlans``)."""
    a, b, c = coefficients
    part = x if kept is None else x - kept  # only the weight's write
    new = (part if a is None else part * a) - (part * b).sum(-1, keepdim=True) * c
    return new if kept is None else new + kept


def _remove_hook(t: HookTerms):
    """The forward hook of one edit: the direction removed from the weight's write."""

    on: dict[torch.device, Coefficients] = {}  # computed once a device

    def post(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
        # In float64, like the weight engine: float32 rounding of large activations would
        # otherwise dominate the comparison with the edited weights.
        x = out.double()
        if x.device not in on:
            norms = None if t.norms is None else tuple(v.to(x.device) for v in t.norms)
            on[x.device] = hook_coefficients(t.r.to(x.device), t.w, norms)
        kept = None if t.kept is None else t.kept.to(x)
        return edited_output(x, on[x.device], kept).to(out.dtype)

    return post


def directional_ablation(
    model: Model,
    direction: Float[Tensor, " d_model"],
    layers: Sequence[int] | None = None,
    where: Literal["writes", "arditi"] = "writes",
) -> Edit:
    """Inference-time directional ablation of one direction, usable in any forward pass.

    ``"writes"``: the output of the embedding (all layers only) and of every attention output
    and MLP down projection of ``layers`` (all by default): the hook twin of ``arditi``.
    ``"arditi"``: Arditi et al.'s sites (every block input, attention and MLP output), via
    ``thinklens.DirectionProjection``; on Llama-like models the two are equal.
    Activation addition is ``thinklens.ActivationAddition(vector, layers=[l])``.
    """
    r = unit_direction(direction, model)
    if where == "arditi":
        return DirectionProjection(r, layers=layers)
    if where != "writes":
        raise ValueError(f"where={where!r}: use 'writes' or 'arditi'")
    edits = plan(model, "arditi", r, bias=True)  # the whole write, bias included
    if layers is not None:  # the chosen layers' writes only, not the embedding
        prefixes = tuple(f"{model.family.layers}.{model.check_layer(l)}." for l in layers)
        edits = [e for e in edits if e.module.startswith(prefixes)]
    return PlanHooks(edits)

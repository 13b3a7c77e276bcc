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
from thinklens.interventions.abliteration.matrix import MatrixEdit, resolve_module
from thinklens.interventions.abliteration.presets import plan
from thinklens.interventions.edits import DirectionProjection, unit_direction
from thinklens.model import Model, get_path


@dataclass
class PlanHooks(Edit):
    """A plan run at inference: each listed module's output loses ``w (x . r) r``.

    For exact plans (not norm-preserving, rounded or low-rank) this is exactly what the weight
    edit does, so it is the independent check of the engine, and a way to try an edit without
    touching weights. A bias the edit leaves alone keeps its component along the direction.
    """

    edits: Sequence[MatrixEdit] = field(default_factory=list)

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        handles = []
        for e in self.edits:
            if not e.exact:
                raise ValueError(
                    "a norm-preserving, rounded or low-rank edit has no hook form: apply it to "
                    "weights"
                )
            experts = model.family.experts
            if e.kind == "experts" and not e.bias and experts is not None and experts.down_bias:
                # The hook sees the routed sum, biases included; keeping them would need the
                # routing weights of every token.
                raise ValueError(
                    f"{model.name}'s experts have biases, which a hook on their routed sum "
                    "cannot keep: plan with bias=True, or write the edit into the weights"
                )
            module = resolve_module(model, model.hf, e.module)  # the engine's clear errors
            r = e.direction.to(torch.float64)
            bias = getattr(module, "bias", None)
            kept = None if e.bias or e.kind != "write" or not isinstance(bias, Tensor) else bias

            def post(
                mod: nn.Module,
                args: tuple,
                out: Tensor,
                r: Tensor = r,
                w: float = e.weight,
                kept: Tensor | None = kept,
            ):
                # In float64, like the weight engine: float32 rounding of large activations
                # would otherwise dominate the comparison with the edited weights.
                x, rr = out.double(), r.to(out.device)
                part = x if kept is None else x - kept.to(x)  # only the weight's write
                return (x - w * (part @ rr)[..., None] * rr).to(out.dtype)

            handles.append(get_path(tree, e.module).register_forward_hook(post))
        return handles


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

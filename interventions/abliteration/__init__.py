"""Abliteration: refusal directions from activation differences, removed at inference or
written into the weights, with the presets of the published tools (README ideas: Intervention,
Artifact).

``compute_directions`` -> ``select_direction`` (Arditi et al.) -> ``directional_ablation`` at
inference, or ``apply(model, preset, directions)`` for a new model with edited weights
(``arditi``, ``failspy``, ``deccp``, ``erisforge``, ``heretic``), and ``export`` to save it.
"""

from thinklens.interventions.abliteration.ablation import PlanHooks, directional_ablation
from thinklens.interventions.abliteration.directions import RefusalDirections, compute_directions
from thinklens.interventions.abliteration.export import export
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel, heretic_plan
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.presets import PRESETS, Preset, get_preset, plan
from thinklens.interventions.abliteration.selection import (
    DirectionSelection,
    NoCandidate,
    choose,
    select_direction,
)
from thinklens.interventions.abliteration.weights import apply, edited

__all__ = [
    "PRESETS",
    "DirectionSelection",
    "HereticParams",
    "Kernel",
    "MatrixEdit",
    "NoCandidate",
    "PlanHooks",
    "Preset",
    "RefusalDirections",
    "apply",
    "choose",
    "compute_directions",
    "directional_ablation",
    "edited",
    "export",
    "get_preset",
    "heretic_plan",
    "plan",
    "select_direction",
]

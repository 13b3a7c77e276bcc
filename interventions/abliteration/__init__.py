"""Abliteration: refusal directions from activation differences, removed at inference or
written into the weights, with the presets of the published tools (README ideas: Intervention,
Artifact).

``compute_directions`` -> ``select_direction`` (Arditi et al.) -> ``directional_ablation`` at
inference, or ``apply(model, preset, directions)`` for a new model with edited weights
(``arditi``, ``failspy``, ``deccp``, ``erisforge``, ``heretic``), and ``export`` to save it;
``adapted(model, plan(...))`` runs a plan as low-rank adapters (no weight written) and
``save_adapter`` saves it as a PEFT LoRA folder. ``PlanHooks`` runs an exact plan as output
hooks, ``RowPlans`` several plans in one batch, each on its own rows, and ``KeyedPlans`` plans
that come and go while installed (a search's trials in flight).
``protocol="published"`` (``deccp``, ``erisforge``, ``heretic``) reproduces a tool's released
protocol, with directions of its reading (``compute_directions(..., reading="heretic")``);
``detect_response_prefix`` and ``chat_text`` give Heretic's prompt texts to metrics.
"""

from thinklens.interventions.abliteration.ablation import PlanHooks, directional_ablation
from thinklens.interventions.abliteration.adapters import PlanAdapter, adapted, save_adapter
from thinklens.interventions.abliteration.directions import RefusalDirections, compute_directions
from thinklens.interventions.abliteration.export import export
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel, heretic_plan
from thinklens.interventions.abliteration.keyed_plans import KeyedPlans
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.presets import (
    PRESETS,
    PUBLISHED,
    Preset,
    get_preset,
    layer_band,
    plan,
    preset_direction,
)
from thinklens.interventions.abliteration.protocol import (
    HERETIC_SYSTEM,
    READINGS,
    Protocol,
    Reading,
    chat_text,
    common_response_prefix,
    detect_response_prefix,
)
from thinklens.interventions.abliteration.row_plans import RowPlans
from thinklens.interventions.abliteration.selection import (
    DirectionSelection,
    NoCandidate,
    choose,
    select_direction,
)
from thinklens.interventions.abliteration.weights import apply, edited

__all__ = [
    "HERETIC_SYSTEM",
    "PRESETS",
    "PUBLISHED",
    "READINGS",
    "DirectionSelection",
    "HereticParams",
    "Kernel",
    "KeyedPlans",
    "MatrixEdit",
    "NoCandidate",
    "PlanAdapter",
    "PlanHooks",
    "Preset",
    "Protocol",
    "Reading",
    "RefusalDirections",
    "RowPlans",
    "adapted",
    "apply",
    "chat_text",
    "choose",
    "common_response_prefix",
    "compute_directions",
    "detect_response_prefix",
    "directional_ablation",
    "edited",
    "export",
    "get_preset",
    "heretic_plan",
    "layer_band",
    "plan",
    "preset_direction",
    "save_adapter",
    "select_direction",
]

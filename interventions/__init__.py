"""thinklens.interventions: refusal directions, their selection, ablation and weight edits."""

from thinklens.interventions.ablation import PlanHooks, directional_ablation
from thinklens.interventions.directions import RefusalDirections, compute_directions
from thinklens.interventions.export import export
from thinklens.interventions.heretic import HereticParams, Kernel
from thinklens.interventions.selection import NoCandidate, Selection, choose, select_direction
from thinklens.interventions.weight_edits import PRESETS, MatrixEdit, Preset, apply, edited, plan

__all__ = [
    "PRESETS",
    "HereticParams",
    "Kernel",
    "MatrixEdit",
    "NoCandidate",
    "PlanHooks",
    "Preset",
    "RefusalDirections",
    "Selection",
    "apply",
    "choose",
    "compute_directions",
    "directional_ablation",
    "edited",
    "export",
    "plan",
    "select_direction",
]

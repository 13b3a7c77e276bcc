"""Interventions: the edits (head ablation, direction projection, activation addition) and one
sub-package per study that edits: ``heads`` (attribution) and ``abliteration`` (README ideas:
Intervention).

The edits act on the shared hook mechanism (``thinklens.hooks``) and are also exported at the
top level: ``tl.HeadAblation``, ``tl.DirectionProjection``, ``tl.ActivationAddition``; each acts
at the token positions its ``positions=`` names (``tl.Positions``, every token by default).
"""

from thinklens.interventions.edits import (
    ActivationAddition,
    DirectionProjection,
    HeadAblation,
    HeadSpec,
    head_means,
    heads_by_layer,
    unit_direction,
)
from thinklens.positions import Positions

__all__ = [
    "ActivationAddition",
    "DirectionProjection",
    "HeadAblation",
    "HeadSpec",
    "Positions",
    "head_means",
    "heads_by_layer",
    "unit_direction",
]

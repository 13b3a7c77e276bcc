"""Refusal-suppressing heads: score every attention head by what it does to refusal (README ideas:
Intervention, Capture).

``score_heads(model, texts, probe, methods=...)`` ranks heads by direct attribution (published),
exact single-head ablation or attribution patching, and returns ``HeadScores``, whose
``ablation(fraction)`` is the ``HeadAblation`` of the top heads.
"""

from thinklens.interventions.heads.attribution import METHODS, score_heads
from thinklens.interventions.heads.metric import METRICS, HeadMetric
from thinklens.interventions.heads.published import published_ablation_scores
from thinklens.interventions.heads.scores import HeadScores, head_count, random_heads

__all__ = [
    "METHODS",
    "METRICS",
    "HeadMetric",
    "HeadScores",
    "head_count",
    "published_ablation_scores",
    "random_heads",
    "score_heads",
]

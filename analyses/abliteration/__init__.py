"""Abliteration measured: refusal rate, KL divergence and capability of an edited model, and
the parameter search over Heretic's space, a Pareto front of refusals and KL (README ideas:
Intervention). The edits themselves are ``thinklens.interventions.abliteration``.
"""

from thinklens.analyses.abliteration.config import (
    AbliterationApplyConfig,
    AbliterationDirectionsConfig,
    AbliterationEvaluateConfig,
    AbliterationExportConfig,
    AbliterationSearchConfig,
)
from thinklens.analyses.abliteration.fronts import INTENT_WEIGHT, count_front, objective_scores
from thinklens.analyses.abliteration.gsm8k import gsm8k_accuracy, load_gsm8k
from thinklens.analyses.abliteration.intent import AnswerIntent
from thinklens.analyses.abliteration.metrics import AbliterationMetrics, count_refusals
from thinklens.analyses.abliteration.objectives import (
    REFUSAL_OBJECTIVES,
    RefusalCounter,
    RefusalObjective,
)
from thinklens.analyses.abliteration.search import (
    OBJECTIVES,
    SearchResult,
    search,
    trial_params,
)

__all__ = [
    "INTENT_WEIGHT",
    "OBJECTIVES",
    "AnswerIntent",
    "count_front",
    "REFUSAL_OBJECTIVES",
    "AbliterationApplyConfig",
    "AbliterationDirectionsConfig",
    "AbliterationEvaluateConfig",
    "AbliterationExportConfig",
    "AbliterationSearchConfig",
    "AbliterationMetrics",
    "RefusalCounter",
    "RefusalObjective",
    "SearchResult",
    "count_refusals",
    "gsm8k_accuracy",
    "load_gsm8k",
    "objective_scores",
    "search",
    "trial_params",
]

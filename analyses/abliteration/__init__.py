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
from thinklens.analyses.abliteration.gsm8k import gsm8k_accuracy, load_gsm8k
from thinklens.analyses.abliteration.metrics import AbliterationMetrics, count_refusals
from thinklens.analyses.abliteration.objectives import (
    REFUSAL_OBJECTIVES,
    RefusalCounter,
    RefusalObjective,
)
from thinklens.analyses.abliteration.search import (
    OBJECTIVES,
    SearchResult,
    objective_scores,
    search,
    trial_params,
)

__all__ = [
    "OBJECTIVES",
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

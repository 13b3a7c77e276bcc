"""The refusal-cliff study: probe scores over every token of the model's own reasoning traces,
compared between refused harmful, complied harmful and harmless traces (README ideas: Trace,
Capture; the probe itself is ``thinklens.probes``).

``rollout`` the prompts (``thinklens.rollouts``), train a probe from behaviour
(``thinklens.probes.train_from_behaviour``), then ``cliff_by_group``.
"""

from thinklens.analyses.cliff.config import (
    CliffDataConfig,
    CliffScoreConfig,
    CliffSweepLayersConfig,
    CliffTrainConfig,
)
from thinklens.analyses.cliff.study import GROUPS, CliffResult, cliff_by_group, study_group

__all__ = [
    "GROUPS",
    "CliffDataConfig",
    "CliffResult",
    "CliffScoreConfig",
    "CliffSweepLayersConfig",
    "CliffTrainConfig",
    "cliff_by_group",
    "study_group",
]

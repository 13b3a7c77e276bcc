"""Head ablation: the heads that suppress refusal, ablated while the model answers attacks,
against random heads of the same count; resumable sweeps over methods, fractions and seeds
(README ideas: Intervention). Scoring the heads is ``thinklens.interventions.heads``.
"""

from thinklens.analyses.heads.ablation import (
    AblationResult,
    ablation_study,
    evaluate_ablation,
    reference_means,
    scoring_texts,
    summarize_study,
)
from thinklens.analyses.heads.config import HeadsAblateConfig, HeadsReportConfig, HeadsScoreConfig
from thinklens.analyses.heads.plots import plot_asr_vs_fraction, plot_head_heatmap
from thinklens.analyses.heads.sweep import SweepStore, run_sweep
from thinklens.analyses.heads.sweep_config import (
    DataConfig,
    GenerationConfig,
    ProbeConfig,
    SweepConfig,
)

__all__ = [
    "AblationResult",
    "DataConfig",
    "GenerationConfig",
    "HeadsAblateConfig",
    "HeadsReportConfig",
    "HeadsScoreConfig",
    "ProbeConfig",
    "SweepConfig",
    "SweepStore",
    "ablation_study",
    "evaluate_ablation",
    "plot_asr_vs_fraction",
    "plot_head_heatmap",
    "reference_means",
    "run_sweep",
    "scoring_texts",
    "summarize_study",
]

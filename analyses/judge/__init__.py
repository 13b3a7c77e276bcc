"""Cliff-as-a-Judge: rank candidate safety examples by their refusal cliff, select the few
that repair the model, export them for training frameworks, and repair with LoRA (README ideas:
Trace, Artifact).
"""

from thinklens.analyses.judge.config import JudgeRepairConfig, JudgeSelectConfig
from thinklens.analyses.judge.export import (
    FORMATS,
    export_selection,
    load_manifest,
    load_messages,
    read_export,
)
from thinklens.analyses.judge.plots import plot_selection
from thinklens.analyses.judge.pool import build_pool, pool_from_records
from thinklens.analyses.judge.repair import RepairConfig, Repaired, repair, safety_eval
from thinklens.analyses.judge.select import METHODS, Selection, score_pool, select

__all__ = [
    "FORMATS",
    "METHODS",
    "JudgeRepairConfig",
    "JudgeSelectConfig",
    "RepairConfig",
    "Repaired",
    "Selection",
    "build_pool",
    "export_selection",
    "load_manifest",
    "load_messages",
    "plot_selection",
    "pool_from_records",
    "read_export",
    "repair",
    "safety_eval",
    "score_pool",
    "select",
]

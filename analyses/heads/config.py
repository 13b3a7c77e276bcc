"""The configs of ``thinklens heads score``, ``heads ablate`` and ``heads report`` (``heads sweep``
is ``SweepConfig``): their flags, their config-file keys and their defaults, written once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from thinklens.analyses.heads.ablation import Mode, ablation_study, scoring_texts
from thinklens.config import Config, ModelConfig, default_of, option
from thinklens.interventions.heads.attribution import METHODS, Method, score_heads
from thinklens.interventions.heads.metric import MetricName


@dataclass(frozen=True, kw_only=True)
class HeadsScoreConfig(ModelConfig):
    """Score every attention head by what it does to refusal, with one or more methods.

    The texts are prompt + thinking + closing marker: from ``traces``, or from the model's own
    rollouts of ``prompts``.
    """

    probe: str | None = option(None, help="a probe from `thinklens cliff train`")
    traces: str | None = option(None, help="JSONL/CSV of prompt + response to score")
    prompts: str = option("bundled:harmful", help="else: prompts to roll out")
    split: str = option("test", help="bundled/HF split of --prompts")
    frame: bool = option(False, help="wrap the prompts in jailbreak framings")
    limit: int = option(16, help="texts to score")
    max_new_tokens: int = option(
        default_of(scoring_texts, "max_new_tokens"), help="tokens per rollout"
    )
    methods: tuple[Method, ...] = option(METHODS, help="scoring methods")
    metric: MetricName = option(default_of(score_heads, "metric"), help="what scoring reads")
    mode: Literal["zero", "mean"] = option(
        default_of(score_heads, "mode"), help="how scoring ablates one head"
    )
    batch_size: int | None = option(
        default_of(score_heads, "batch_size"), help="texts per pass (default: per method)"
    )
    out: str = option(help="head-score table (.csv, .jsonl or .parquet)")
    plot: str | None = option(None, help="also write heatmaps to this HTML file")


@dataclass(frozen=True, kw_only=True)
class HeadsAblateConfig(ModelConfig):
    """Attack success with the top heads of each ranking ablated, against random heads."""

    scores: str = option(help="a table from `thinklens heads score`")
    fraction: float = option(0.03, help="of all heads, in (0, 1]")
    k: int | None = option(None, help="a head count instead of a fraction")
    mode: Mode = option(default_of(ablation_study, "mode"), help="how the heads are ablated")
    harmful: str = option("bundled:harmful", help="harmful prompts (any data source)")
    harmless: str = option("bundled:harmless", help="harmless prompts")
    split: str = option("test", help="bundled/HF split of both")
    frame: bool = option(False, help="wrap the harmful prompts in framings")
    limit: int = option(16, help="prompts of each kind")
    random_seeds: tuple[int, ...] = option(
        default_of(ablation_study, "random_seeds"), help="one random-head control per seed"
    )
    max_new_tokens: int = option(default_of(ablation_study, "max_new_tokens"))
    batch_size: int = option(default_of(ablation_study, "batch_size"))
    xstest: str | None = option(
        None, help="XSTest's xstest_prompts.csv (or its folder): also measure over-refusal"
    )
    n_xstest: int = option(50, help="XSTest safe prompts, in turn from each type")
    out: str | None = option(None, help="table file (.csv, .jsonl or .parquet)")


@dataclass(frozen=True, kw_only=True)
class HeadsReportConfig(Config):
    """An HTML report of a sweep database: metrics against heads ablated, score heatmaps."""

    db: str = option(help="the sweep's SQLite file", positional=True)
    out: str | None = option(None, help="HTML file (default: next to the database)")
    table: str | None = option(None, help="also export the cells (.csv, .jsonl, .parquet)")

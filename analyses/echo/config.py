"""The configs of ``thinklens echo spans|gap|attention|prompting``: their flags, their
config-file keys and their defaults (those of the functions they call).

A trace record has ``question`` and either ``thinking`` (optionally ``answer``, the text after
the thinking) or ``response`` (the whole generated text), optionally ``prompt`` (default: the
published prompt). Results are written as JSONL, Parquet or CSV, by the suffix of ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinklens.analyses.echo.attention import echo_attention
from thinklens.analyses.echo.gap import echo_gap
from thinklens.analyses.echo.prompting import prompting_study
from thinklens.analyses.echo.spans import Method
from thinklens.analyses.echo.traces import spans_table
from thinklens.config import Config, ModelConfig, default_of, option

_TRACES_HELP = "JSONL/JSON/CSV of traces (question + thinking or response)"
_OUT_HELP = "result table (.jsonl, .parquet or .csv)"


@dataclass(frozen=True, kw_only=True)
class EchoSpansConfig(Config):
    """The echo spans of each trace: where its thinking restates the question."""

    traces: str = option(help=_TRACES_HELP, positional=True)
    out: str = option(help=_OUT_HELP)
    method: Method = option(default_of(spans_table, "method"), help="echo rule")
    limit: int | None = option(None, help="traces read")
    model: str | None = option(None, help="also give token spans in this model's tokenizer")


@dataclass(frozen=True, kw_only=True)
class EchoGapConfig(ModelConfig):
    """The Echo Likelihood Gap of each trace, and its controls."""

    traces: str = option(help=_TRACES_HELP, positional=True)
    out: str = option(help=_OUT_HELP)
    method: Method = option(default_of(echo_gap, "method"), help="echo rule")
    limit: int | None = option(None, help="traces read")
    batch_size: int = option(default_of(echo_gap, "batch_size"), help="traces per pass")


@dataclass(frozen=True, kw_only=True)
class EchoAttentionConfig(ModelConfig):
    """Attention masses from the answer to the question and the echo, per layer; with
    ``group_by``, the groups compared (AUC, Cohen's d)."""

    traces: str = option(help=_TRACES_HELP, positional=True)
    out: str = option(help=_OUT_HELP)
    method: Method = option(default_of(echo_attention, "method"), help="echo rule")
    limit: int | None = option(None, help="traces read")
    ks: tuple[int, ...] = option(default_of(echo_attention, "ks"), help="prefix lengths")
    per_head: bool = option(default_of(echo_attention, "per_head"), help="one row per head")
    batch_size: int = option(default_of(echo_attention, "batch_size"), help="traces per pass")
    group_by: str | None = option(
        None, help="'echo', or a boolean field of the records (e.g. correct)"
    )
    stats: str | None = option(None, help="table of per-layer AUC and Cohen's d")


@dataclass(frozen=True, kw_only=True)
class EchoPromptingConfig(ModelConfig):
    """Generate answers, condition on echo-free thinking, and Echoic Prompting (with causal
    insertion of the echo)."""

    data: str = option(
        help="questions with GSM8K-style gold 'answer' (JSONL/JSON/CSV)", positional=True
    )
    out: str = option(help=_OUT_HELP)
    limit: int | None = option(None, help="questions read")
    budget: int = option(default_of(prompting_study, "budget"), help="new tokens per question")
    method: Method = option(default_of(prompting_study, "method"), help="echo rule")
    batch_size: int = option(default_of(prompting_study, "batch_size"), help="prompts per pass")
    insertion: bool = option(
        default_of(prompting_study, "insertion"), help="run the causal insertion"
    )

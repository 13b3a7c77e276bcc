"""The configs of ``thinklens cliff train``, ``cliff sweep-layers`` and ``cliff score``: their
flags, their config-file keys and their defaults (the probe's own from ``thinklens.probes``)."""

from __future__ import annotations

from dataclasses import dataclass

from thinklens.config import ModelConfig, default_of, option
from thinklens.probes.behaviour import ProbePositions, train_from_behaviour
from thinklens.probes.cliff import cliff_table
from thinklens.probes.probe import RefusalProbe
from thinklens.probes.scoring import score_tokens
from thinklens.probes.training import Method


@dataclass(frozen=True, kw_only=True)
class CliffDataConfig(ModelConfig):
    """The labelled texts a probe trains on: the model's own behaviour on harmful and harmless
    prompts (refused harmful = 1, benign = 0), or a file of texts and labels."""

    harmful: str = option("bundled:harmful", help="harmful prompts (any data source)")
    harmless: str = option("bundled:harmless", help="benign prompts")
    labelled: str | None = option(None, help="JSONL/CSV with text and label instead")
    limit: int | None = option(None, help="prompts per set")
    max_new_tokens: int = option(
        default_of(train_from_behaviour, "max_new_tokens"), help="tokens per rollout"
    )
    method: Method = option(default_of(RefusalProbe.train, "method"), help="probe fitting")
    seed: int = option(default_of(RefusalProbe.train, "seed"), help="of the train/test split")
    positions: ProbePositions = option(
        default_of(train_from_behaviour, "positions"),
        help="train at the last position of prompt + thinking + marker (published) or at "
        "every thinking and marker position of the behaviour-labelled traces",
    )


@dataclass(frozen=True, kw_only=True)
class CliffTrainConfig(CliffDataConfig):
    """Train one refusal probe (default: the last layer, after the final norm)."""

    layer: int = option(default_of(RefusalProbe.train, "layer"), help="residual layer read")
    out: str = option(help="probe path (.safetensors + .json)")
    overwrite: bool = option(False, help="replace a probe at --out")


@dataclass(frozen=True, kw_only=True)
class CliffSweepLayersConfig(CliffDataConfig):
    """Train a probe at every layer from one capture pass: accuracy and AUROC by layer."""

    out: str | None = option(None, help="table file (.csv, .jsonl or .parquet)")


@dataclass(frozen=True, kw_only=True)
class CliffScoreConfig(ModelConfig):
    """Score every token of each trace with a probe: one row of cliff measures per trace."""

    probe: str = option(help="a probe saved by `thinklens cliff train`", positional=True)
    traces: str = option(
        help="records with prompt and response (or thinking, answer)", positional=True
    )
    out: str = option(help="cliff table (.parquet, .jsonl or .csv)")
    tokens: str | None = option(None, help="also write every token's score here")
    k: int = option(default_of(cliff_table, "k"), help="tail length in tokens")
    limit: int | None = option(None, help="traces read")
    batch_size: int | None = option(
        default_of(score_tokens, "batch_size"), help="traces per pass (default: from free memory)"
    )

"""The config of ``thinklens heads sweep``: one YAML or TOML file, parsed strictly, and the grid
of cells it defines.

Example (YAML; the same keys work in TOML)::

    model: organism-cliff
    methods: [direct, ablation, attribution]
    fractions: [0.005, 0.015, 0.03, 0.1]
    modes: [scale]
    seeds: [0, 1, 2]
    data: {n_score: 16, n_eval: 24, frame: true}
    generation: {max_new_tokens: 128}

Every key is also a flag (``--fractions 0.03 0.1``, ``--data.n-eval 24``) that overrides the
file. Unknown keys, wrong types and out-of-range values are errors that name the key. A cell is
one (method, fraction, mode, seed); its key hashes the cell with every setting that changes its
result (``setup``), so a rerun of the same config finds the cells it already finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from thinklens.analyses.heads.ablation import Mode, evaluate_ablation, scoring_texts
from thinklens.config import Config, ModelConfig, default_of, option
from thinklens.interventions.heads.attribution import METHODS, Method, score_heads
from thinklens.interventions.heads.metric import MetricName
from thinklens.interventions.heads.scores import head_count
from thinklens.probes.behaviour import train_from_behaviour


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    """Prompts: harmful ones to score heads on and to attack, harmless ones to measure damage.

    The first ``n_score`` harmful prompts are rolled out to get the thinking heads are scored
    on (or ``traces`` gives that thinking); the next ``n_eval`` harmful and the first ``n_eval``
    harmless prompts measure ASR, refusals and KL.
    """

    harmful: str = option("bundled:harmful", help="harmful prompts (any data source)")
    harmless: str = option("bundled:harmless", help="harmless prompts")
    split: str = option("test", help="bundled/HF split of both")
    n_score: int = option(16, help="harmful prompts whose thinking the heads are scored on")
    n_eval: int = option(16, help="further harmful prompts to attack with, and harmless ones")
    frame: bool = option(True, help="wrap harmful prompts in a jailbreak framing")
    traces: str | None = option(None, help="JSONL/CSV of prompt + response to score on instead")


@dataclass(frozen=True, kw_only=True)
class ProbeConfig(Config):
    """The refusal probe: a saved one, or one trained from the model's behaviour."""

    path: str | None = option(None, help="a saved probe (default: train one, kept with the db)")
    layer: int = option(default_of(train_from_behaviour, "layer"), help="layer of a new probe")
    n_train: int = option(64, help="prompts of each kind (train split) for a new probe")
    max_new_tokens: int = option(96, help="tokens per rollout for a new probe")


@dataclass(frozen=True, kw_only=True)
class GenerationConfig(Config):
    """Answer generation under ablation (greedy unless ``temperature`` > 0)."""

    max_new_tokens: int = option(
        default_of(evaluate_ablation, "max_new_tokens"), help="tokens per answer"
    )
    batch_size: int = option(default_of(evaluate_ablation, "batch_size"), help="prompts per pass")
    temperature: float = option(
        default_of(evaluate_ablation, "temperature"), help="sampling temperature (0: greedy)"
    )
    score_max_new_tokens: int = option(
        default_of(scoring_texts, "max_new_tokens"), help="for the rollouts heads are scored on"
    )


@dataclass(frozen=True, kw_only=True)
class SweepConfig(ModelConfig):
    """A head-ablation sweep into SQLite: every (method, fraction, mode, seed) cell of the grid
    once; a rerun of the same config runs only the cells not finished yet."""

    methods: tuple[Method, ...] = option(METHODS, help="head-scoring methods")
    metric: MetricName = option(default_of(score_heads, "metric"), help="what scoring reads")
    score_mode: Literal["zero", "mean"] = option(
        default_of(score_heads, "mode"), help="how scoring ablates one head"
    )
    fractions: tuple[float, ...] = option((0.005, 0.015, 0.03, 0.1), help="of all heads")
    modes: tuple[Mode, ...] = option(("scale",), help="how generation ablates the chosen heads")
    seeds: tuple[int, ...] = option((0,), help="random-head control sets (and sampling seeds)")
    random_control: bool = option(True, help="also ablate random heads of the same number")
    data: DataConfig = field(default_factory=DataConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    out: str = option(
        "sweep.sqlite", help="the SQLite file (in a config file: next to it)", relative=True
    )
    progress: bool = option(True, help="show a progress bar")

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in self.fractions:
            try:
                head_count(1000, fraction=f)
            except ValueError as err:
                raise ValueError(f"fractions: {err}") from None
        for name, values in (("fractions", self.fractions), ("seeds", self.seeds)):
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name} must be a non-empty list without repeats")
        if self.data.n_score < 1 or self.data.n_eval < 1:
            raise ValueError("data.n_score and data.n_eval must be at least 1")

    def setup(self) -> dict[str, Any]:
        """The settings every cell's result depends on (not the grid, not the output)."""
        d = dataclasses.asdict(self)
        for grid in ("methods", "fractions", "modes", "seeds", "random_control", "out"):
            d.pop(grid)
        d.pop("progress")
        return d

    def setup_key(self) -> str:
        return _hash(self.setup())

    def cells(self) -> list[Cell]:
        """The grid: the unablated model, each method's top heads, and random heads.

        With greedy generation a scored method gives the same heads and answers for every
        seed, so only random heads (drawn per seed) repeat over seeds.
        """
        gen_seeds = self.seeds if self.generation.temperature > 0 else self.seeds[:1]
        out = [Cell("none", 0.0, "none", s) for s in gen_seeds]
        for method in self.methods:
            out += [
                Cell(method, f, m, s) for f in self.fractions for m in self.modes for s in gen_seeds
            ]
        if self.random_control:
            out += [
                Cell("random", f, m, s)
                for f in self.fractions
                for m in self.modes
                for s in self.seeds
            ]
        return out


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: which heads (method, fraction, seed) and how they are ablated."""

    method: str  # "none", a scoring method, or "random"
    fraction: float
    mode: str
    seed: int

    def key(self, setup_key: str) -> str:
        return _hash(dict(setup=setup_key, **dataclasses.asdict(self)))


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

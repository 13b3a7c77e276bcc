"""The configs of ``thinklens abliteration directions|apply|search|export|evaluate``: their
flags, their config-file keys and their defaults (those of the functions they call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from thinklens.analyses.abliteration.metrics import AbliterationMetrics
from thinklens.analyses.abliteration.objectives import REFUSAL_OBJECTIVES
from thinklens.analyses.abliteration.search import search
from thinklens.config import ModelConfig, default_of, option
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.interventions.abliteration.presets import PRESETS
from thinklens.interventions.abliteration.protocol import READINGS
from thinklens.interventions.abliteration.selection import select_direction

_DIRECTIONS = "a directions artifact from `thinklens abliteration directions`"


@dataclass(frozen=True, kw_only=True)
class _Prompts(ModelConfig):
    """The model and its harmful and harmless prompts."""

    harmful: str = option("bundled:harmful", help="harmful prompts (any data source)")
    harmless: str = option("bundled:harmless", help="harmless prompts")


@dataclass(frozen=True, kw_only=True)
class AbliterationDirectionsConfig(_Prompts):
    """Difference-of-means refusal directions at every layer (train split), and optionally
    Arditi et al.'s selection of one on validation prompts taken off the end."""

    out: str = option(help="artifact path (.safetensors + .json)")
    n: int = option(128, help="prompts of each kind for the means")
    positions: int | str = option(
        default_of(compute_directions, "positions"), help="post_instruction, last, or k"
    )
    winsorize_quantile: float | None = option(
        default_of(compute_directions, "winsorize_quantile"), help="e.g. 0.995"
    )
    reading: str = option(
        default_of(compute_directions, "reading"),
        choices=tuple(READINGS),
        help="how prompts are read: thinklens, answer (at the answer start), or a published "
        "tool's texts and positions (heretic: the better for a search on a thinking model)",
    )
    response_prefix: str | None = option(
        default_of(compute_directions, "response_prefix"),
        help="the heretic reading's response prefix (default: detected on the model)",
    )
    select: bool = option(False, help="run Arditi et al.'s selection")
    n_val: int = option(32, help="validation prompts of each kind for the selection")
    select_layers: tuple[int, ...] | None = option(None, help="layers the selection tries")
    select_positions: tuple[int, ...] | None = option(None, help="positions it tries")
    refusal_words: tuple[str, ...] = option(
        default_of(select_direction, "refusal_words"), help="first words of a refusal"
    )
    thinking: Literal["auto", "on", "off"] = option(
        "auto", help="whether the model thinks first (auto: detect)"
    )
    kl_threshold: float = option(default_of(select_direction, "kl_threshold"))
    induce_refusal_threshold: float = option(
        default_of(select_direction, "induce_refusal_threshold"), help="steering bar"
    )
    batch_size: int = option(default_of(compute_directions, "batch_size"))
    overwrite: bool = option(False, help="replace the artifact at --out")


@dataclass(frozen=True, kw_only=True)
class _Evaluation(_Prompts):
    """The test-split prompts an edit is measured on."""

    n_eval: int = option(
        40, help="evaluation prompts of each kind (test split, held out from the directions)"
    )
    max_new_tokens: int = option(default_of(AbliterationMetrics.prepare, "max_new_tokens"))
    xstest: str | None = option(
        None, help="XSTest's xstest_prompts.csv (or its folder): also measure over-refusal"
    )
    n_xstest: int = option(50, help="XSTest safe prompts, in turn from each type")


@dataclass(frozen=True, kw_only=True)
class _Measured(_Evaluation):
    """Evaluation prompts and the protocol they are measured with."""

    metrics_protocol: Literal["thinklens", "published"] = option(
        default_of(AbliterationMetrics.prepare, "protocol"),
        help="published: Heretic's system prompt, response prefix, markers and first-token KL",
    )


@dataclass(frozen=True, kw_only=True)
class _Edit(_Measured):
    """A weight edit: a preset of a published tool at a direction's layer and position."""

    directions: str | None = option(None, help=_DIRECTIONS)
    preset: str = option("arditi", choices=tuple(PRESETS), help="the published tool's edit")
    params: str | None = option(None, help="heretic parameters: JSON text or a JSON file")
    layer: float | None = option(None, help="stream point of the direction")
    pos: int | None = option(None, help="position of the direction (e.g. -1)")
    scale: float | None = option(None, help="edit weight (erisforge: -1..1)")
    protocol: Literal["thinklens", "published"] | None = option(
        None, help="published: the tool's released edit (positions, bf16 cast); default: preset's"
    )
    bias: bool = option(False, help="also edit the biases of edited matrices (no tool does)")


@dataclass(frozen=True, kw_only=True)
class AbliterationApplyConfig(_Edit):
    """Write a preset's edit into a copy of the model and export it (optionally measured)."""

    directions: str = option(help=_DIRECTIONS)
    out: str = option(help="new model folder (must not exist)")
    evaluate: bool = option(False, help="measure, and put the metrics in the card")
    overwrite: bool = option(False, help="replace the folder at --out")


@dataclass(frozen=True, kw_only=True)
class AbliterationSearchConfig(_Evaluation):
    """Heretic's Optuna search over edit parameters: the Pareto front of refusals and KL."""

    directions: str = option(help=_DIRECTIONS)
    storage: str = option(help="SQLite file of the study; run again to resume")
    study_name: str = option(default_of(search, "study_name"), help="the study in --storage")
    n_trials: int = option(default_of(search, "n_trials"), help="finished trials to reach")
    n_startup_trials: int = option(default_of(search, "n_startup_trials"), help="random first")
    seed: int = option(default_of(search, "seed"), help="of the sampler")
    n_ei_candidates: int = option(
        default_of(search, "n_ei_candidates"), help="TPE candidates per trial (Heretic: 128)"
    )
    kl_target: float | None = option(
        default_of(search, "kl_target"), help="Heretic's KL shaping below this KL (it uses 0.01)"
    )
    protocol: Literal["thinklens", "published"] = option(
        default_of(search, "protocol"),
        help="published: Heretic 1.4.0's space, edit, KL and refusal counting",
    )
    space: Literal["thinklens", "published"] | None = option(
        default_of(search, "space"),
        help="the space sampled, if not the protocol's (published: Heretic 1.4.0's)",
    )
    refusal_objective: str = option(
        default_of(search, "refusal_objective"),
        choices=("auto", *REFUSAL_OBJECTIVES),
        help="how a trial counts refusals (auto: early_stop when the model thinks, else full; "
        "heretic: Heretic's own count, batched)",
    )
    answer_tokens: int = option(
        default_of(search, "answer_tokens"),
        help="answer tokens judged (answer, early_stop, draft)",
    )
    think_tokens: int = option(
        default_of(search, "think_tokens"), help="thinking tokens generated (short_thinking)"
    )
    parallel_trials: int | None = option(
        default_of(search, "parallel_trials"),
        help="trials whose refusals are counted in one batch (thinklens protocol; early_stop, "
        "heretic or full); unset: 8 for a model that thinks first with early_stop or "
        "heretic, as memory allows, else 1",
    )
    schedule: Literal["batches", "in_flight"] = option(
        default_of(search, "schedule"),
        help="batches: parallel trials counted batch after batch; in_flight: each new trial "
        "joins the running batch as soon as another is done",
    )


@dataclass(frozen=True, kw_only=True)
class AbliterationExportConfig(_Measured):
    """Export one trial of a search as a new model folder, or as a PEFT adapter of MODEL."""

    directions: str = option(help=_DIRECTIONS)
    layer: float | None = option(None, help="stream point of the direction")
    pos: int | None = option(None, help="position of the direction (e.g. -1)")
    scale: float | None = option(None, help="edit weight")
    storage: str = option(help="the search's SQLite file")
    study_name: str = option(default_of(search, "study_name"), help="the study in --storage")
    trial: int = option(help="the trial's number (see the Pareto front)")
    out: str = option(help="new model folder (must not exist)")
    format: Literal["merged", "peft"] = option(
        "merged", help="merged: the edit in the weights; peft: a LoRA adapter folder for MODEL"
    )
    lora_rank: int | None = option(
        None, help="keep a norm-preserving edit as its rank-k change (Heretic: 3; peft needs it)"
    )
    evaluate: bool = option(False, help="measure again, and put the metrics in the card")
    overwrite: bool = option(False, help="replace the folder at --out")


@dataclass(frozen=True, kw_only=True)
class AbliterationEvaluateConfig(_Edit):
    """Refusal rate, KL and (optionally) GSM8K accuracy of an edit against its base model."""

    edited: str | None = option(None, help="an exported model folder to compare with MODEL")
    gsm8k: str | None = option(None, help="GSM8K test JSONL for the capability check")
    n_gsm8k: int = option(20, help="GSM8K questions")

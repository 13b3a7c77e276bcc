"""Direction selection after Arditi et al. (refusal score, KL and steering filters), with the
whole candidate table.

Every (position, layer) candidate is scored three ways on validation prompts: the refusal
score on harmful prompts with the direction ablated everywhere (lower is better), the KL
divergence of harmless next-token distributions under that ablation, and the refusal score
on harmless prompts when the raw direction is added at its own layer (the steering check).
Candidates with KL > 0.1, a steering score < 0, or in the last 20% of layers are discarded;
the lowest refusal score wins.

The refusal score is ``log p(R) - log(1 - p(R))`` at the position where the answer starts,
``p(R)`` summing the probabilities of refusal-opening tokens. For a model that thinks first,
the answer does not start at the end of the prompt: with ``thinking`` on, the model first
writes its own greedy thinking under the intervention being scored, and the score is read at
the first answer token after it. The KL filter compares the two models on the same text: the
base model's own thinking on the harmless prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from thinklens.evaluation import REFUSAL_WORDS, kl_divergence, refusal_scores, refusal_token_ids
from thinklens.hooks import intervene
from thinklens.interventions.abliteration.directions import RefusalDirections
from thinklens.interventions.edits import ActivationAddition, DirectionProjection
from thinklens.model import Model
from thinklens.rollouts import model_thinks, prompt_texts


class NoCandidate(ValueError):
    """Every candidate failed a filter; ``table`` holds their scores."""

    def __init__(self, message: str, table: pd.DataFrame) -> None:
        super().__init__(message)
        self.table = table


@dataclass
class DirectionSelection:
    """The chosen candidate and the table of every candidate's scores."""

    pos: int
    layer: int
    direction: Float[Tensor, " d_model"]
    table: pd.DataFrame
    baseline_harmful: float
    baseline_harmless: float


def _discard_reason(
    row: dict, n_layers: int, kl_threshold: float, steer_threshold: float, prune: float
) -> str:
    if any(math.isnan(row[k]) for k in ("refusal_score", "steering_score", "kl")):
        return "nan"
    if row["layer"] >= int(n_layers * (1.0 - prune)):
        return "last layers"
    if row["kl"] > kl_threshold:
        return "kl"
    if row["steering_score"] < steer_threshold:
        return "steering"
    return ""


@torch.no_grad()
def select_direction(
    model: Model,
    directions: RefusalDirections,
    harmful: Sequence[str],
    harmless: Sequence[str],
    kl_threshold: float = 0.1,
    induce_refusal_threshold: float = 0.0,
    prune_layer_percentage: float = 0.2,
    positions: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    refusal_words: Sequence[str] = REFUSAL_WORDS,
    thinking: bool | None = None,
    thinking_tokens: int = 64,
    batch_size: int = 8,
    progress: bool = True,
) -> DirectionSelection:
    """Arditi et al.'s selection over (position, layer) candidates of ``directions``.

    Args:
        harmful, harmless: validation user prompts (the paper: 32 each).
        positions, layers: restrict the candidates (default: every captured position and
            every layer; candidate layer l is the block input ``resid_pre.l``).
        refusal_words: words whose first token opens a refusal.
        thinking: read scores where the answer starts after the model's own thinking
            (None: on when the model opens its thinking by itself).
        thinking_tokens: the most tokens of thinking written per prompt (then closed).
    The choice is also recorded in ``directions.meta["selected"]``.
    """
    directions.check(model)
    if thinking is None:
        thinking = model_thinks(model, harmful)
    ids = refusal_token_ids(model, refusal_words)

    def score(prompts: Sequence[str]) -> Tensor:
        """Refusal scores where the answer starts, thinking (if any) written by the model."""
        texts = prompt_texts(model, prompts, thinking, thinking_tokens)
        return refusal_scores(model.logits(texts, batch_size), ids)

    base_h = score(harmful)
    s_texts = prompt_texts(model, harmless, thinking, thinking_tokens)  # fixed text for KL
    base_s_logits = model.logits(s_texts, batch_size)
    base_s = refusal_scores(base_s_logits, ids)  # what score(harmless) would generate again
    cands = [
        (p, l)
        for p in (positions or directions.positions)
        for l in (layers if layers is not None else range(model.n_layers))
    ]
    raw = directions.directions(normalize=False)
    rows = []
    for p, l in tqdm(cands, desc="select direction", unit="candidate", disable=not progress):
        r = raw[directions.positions.index(p), model.check_layer(l)]
        if r.norm() == 0:  # e.g. layer 0: the same template token for every prompt
            nan = float("nan")
            rows.append(dict(pos=p, layer=l, refusal_score=nan, steering_score=nan, kl=nan))
            continue
        with intervene(model, DirectionProjection(r.float())):
            refusal = score(harmful).mean()
            kl = kl_divergence(base_s_logits, model.logits(s_texts, batch_size))
        with intervene(model, ActivationAddition(r.float(), layers=[l])):
            steer = score(harmless).mean()
        rows.append(
            dict(
                pos=p,
                layer=l,
                refusal_score=float(refusal),
                steering_score=float(steer),
                kl=float(kl),
            )
        )
    table = pd.DataFrame(rows)
    table.attrs = dict(
        baseline_harmful=float(base_h.mean()),
        baseline_harmless=float(base_s.mean()),
        thinking=thinking,
        refusal_words=list(refusal_words),
    )
    return choose(directions, table, kl_threshold, induce_refusal_threshold, prune_layer_percentage)


def choose(
    directions: RefusalDirections,
    table: pd.DataFrame,
    kl_threshold: float = 0.1,
    induce_refusal_threshold: float = 0.0,
    prune_layer_percentage: float = 0.2,
) -> DirectionSelection:
    """Apply the published filters to a scored candidate table and pick the lowest refusal
    score (again with other thresholds, e.g. on the table of a ``NoCandidate`` error).

    The choice is recorded in ``directions.meta["selected"]``.
    """
    table = table.copy()
    table["discarded"] = [
        _discard_reason(
            row, directions.n_layers, kl_threshold, induce_refusal_threshold, prune_layer_percentage
        )
        for row in table.to_dict("records")
    ]
    kept = table[table.discarded == ""].sort_values("refusal_score")
    if kept.empty:
        why = ", ".join(f"{n} by {k}" for k, n in table.discarded.value_counts().items())
        raise NoCandidate(
            f"every candidate was discarded ({why}): use more layers or positions, or loosen "
            "kl_threshold / induce_refusal_threshold (the scores are in this error's .table)",
            table,
        )
    best = kept.iloc[0]
    pos, layer = int(best.pos), int(best.layer)
    directions.meta["selected"] = dict(
        pos=pos,
        layer=layer,
        refusal_score=float(best.refusal_score),
        steering_score=float(best.steering_score),
        kl=float(best.kl),
        kl_threshold=kl_threshold,
        induce_refusal_threshold=induce_refusal_threshold,
        **table.attrs,
    )
    return DirectionSelection(
        pos,
        layer,
        directions.directions(normalize=False)[directions.positions.index(pos), layer].clone(),
        table,
        table.attrs.get("baseline_harmful", float("nan")),
        table.attrs.get("baseline_harmless", float("nan")),
    )

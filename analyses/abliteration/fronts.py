"""How a search trial is scored and which trials make the front.

The sampler minimises two objectives a trial: a KL score and the refusal ratio
(``objective_scores``, Heretic's). The front a search returns is the trials no other beats on
both; when the ratio also reads the refusal intent (``search(..., refusal_intent=True)``), the
front is taken by whole refusals instead (``count_front``), so a trial is not kept for its
intent alone.
"""

from __future__ import annotations

from typing import Any

#: How much of one refusal the refusal intent (in [0, 1]) can add: less than one, so it only
#: orders trials of the same count.
INTENT_WEIGHT = 0.5


def objective_scores(
    kl: float,
    refusals: int,
    base_refusals: int,
    kl_target: float | None = None,
    intent: float | None = None,
) -> tuple[float, float]:
    """The two minimised objectives of a trial: (KL score, refusal ratio).

    The refusal ratio is ``refusals / base_refusals`` (the count itself when the base refuses
    nothing), as in Heretic. With ``kl_target``, a KL below it scores ``ratio * kl_target``
    instead (Heretic 1.4.0's shaping, with its ``kl_divergence_scale`` of 1). ``intent`` (the
    mean refusal-probe score at the answers' starts, ``search(..., refusal_intent=True)``)
    adds ``INTENT_WEIGHT * intent`` to the count, which only orders trials of equal counts.
    """
    if intent is not None:
        if not 0.0 <= intent <= 1.0:
            raise ValueError(f"intent={intent}: a probe score lies in [0, 1]")
        refusals = refusals + INTENT_WEIGHT * intent
    ratio = refusals / base_refusals if base_refusals > 0 else float(refusals)
    if kl_target is not None and kl < kl_target:
        return ratio * kl_target, ratio
    return kl, ratio


def count_front(trials: list) -> list:
    """The trials no other beats on both the first objective and the refusal count (the
    Pareto front by whole refusals, when the sampler's second objective also reads the
    refusal intent)."""

    def beats(a: Any, b: Any) -> bool:
        (ka, na), (kb, nb) = [(t.values[0], t.user_attrs["refusals"]) for t in (a, b)]
        return ka <= kb and na <= nb and (ka < kb or na < nb)

    return [t for t in trials if not any(beats(o, t) for o in trials)]

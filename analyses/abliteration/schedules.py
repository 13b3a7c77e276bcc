"""How a search's trials share the model: one at a time, batch after batch, or in flight
(``in_flight``); the checks and defaults of each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from thinklens.analyses.abliteration.metrics import AbliterationMetrics
from thinklens.analyses.abliteration.objectives import GENERATING, PARALLEL_DEFAULT
from thinklens.interventions.abliteration.protocol import Protocol
from thinklens.model import Model

#: ``search``'s schedules of several trials: batch after batch, or in one running batch.
SCHEDULES = ("batches", "in_flight")


def check_parallel(
    parallel_trials: int,
    protocol: Protocol,
    objective: str,
    reload: Callable | None,
    schedule: str = "batches",
) -> None:
    """A clear error when trials cannot be counted several at a time (or in flight)."""
    if parallel_trials < 1:
        raise ValueError(f"parallel_trials={parallel_trials}: give 1 or more")
    if parallel_trials == 1 and schedule == "batches":
        return
    alone = "parallel_trials=1 and schedule='batches'"
    if protocol == "published":
        raise ValueError(
            "protocol='published' writes Heretic's rounded rank-3 edit, which has no exact "
            f"hook form for parallel trials: use {alone} with it"
        )
    if objective not in GENERATING:
        raise ValueError(
            f"refusal_objective={objective!r} counts one trial at a time: use one of "
            f"{GENERATING} to count several at a time, or {alone}"
        )
    if reload is not None:
        raise ValueError(f"reload loads a model for each trial: use {alone} with it")


def resolve_parallel(
    asked: int | None,
    model: Model,
    metrics: AbliterationMetrics,
    protocol: Protocol,
    objective: str,
    reload: Callable | None,
) -> int:
    """The trials a batch ``asked`` resolves to (None: see ``search``)."""
    if asked is not None:
        return asked
    thinks = metrics.answer_texts is not None
    cheap = objective in ("early_stop", "heretic")
    if not thinks or protocol != "thinklens" or not cheap or reload is not None:
        return 1
    return plans_that_fit(model, metrics.harmful, metrics.batch_size, metrics.max_new_tokens)


def plans_that_fit(
    model: Model,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    most: int = PARALLEL_DEFAULT,
) -> int:
    """How many plans ``RefusalCounter.verdicts_many`` can count at once (1..``most``) for
    ``prompts`` in batches of ``batch_size``: the key-value caches of ``most`` copies of a batch
    (each row through ``max_new_tokens``) in the share of free memory that automatic batches
    plan to fill (``thinklens.batching``)."""
    from thinklens.batching import Footprint, batch_for, free_bytes

    rows = min(len(prompts), batch_size)
    longest = max(len(ids) for ids in model.chat_ids(prompts))
    row = Footprint.of(model).row_bytes(longest, cache_len=longest + max_new_tokens)
    fit = batch_for(free_bytes(model), row, most * rows, most * rows)
    return max(1, min(most, fit // rows))


def trial_batches(done: int, todo: int, n_startup: int, most: int) -> list[int]:
    """The sizes of a parallel search's batches: the start-up trials left, then the sampled
    ones, each part in as few batches of at most ``most`` as it takes, sized as evenly as
    possible. So no sampled trial is asked before every start-up trial is told: a batch that
    mixed them would sample on fewer results, the missing ones counted as the worst seen
    (Optuna's constant liar)."""
    startup = min(max(n_startup - done, 0), todo)
    sizes = []
    for n in (startup, todo - startup):
        if n:
            parts = -(-n // most)
            sizes += [n // parts + (i < n % parts) for i in range(parts)]
    return sizes


def fail_stale(study: Any) -> None:
    """Trials left running by an interrupted run of this study are failed, so the sampler
    does not wait on them (one process runs a study at a time)."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)

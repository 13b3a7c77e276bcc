"""Trials in flight: a search's trials count their refusals in one decoding batch that each new
trial joins as soon as another is done, rather than batch after batch.

Counted batch after batch (``search(..., schedule="batches")``), ``k`` trials wait for the
slowest row of their batch, and the sampler learns from them only when all ``k`` are done: over
20 sampled trials at 8 a batch, TPE fits its model 3 times. In flight
(``schedule="in_flight"``), a trial is told as soon as its own rows stop and the next is asked
then, so TPE fits once a trial, each new trial sampled beside the ``k - 1`` still running (which
Optuna's constant liar counts as the worst seen). The rows of every trial keep their own plan's
edit as exact hooks (``KeyedPlans``); a new trial's KL is measured with its edit written when it
is asked, between two decoding steps, with no hook installed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from thinklens.analyses.abliteration.metrics import AbliterationMetrics
from thinklens.analyses.abliteration.objectives import GENERATING, RefusalCounter
from thinklens.hooks import intervene
from thinklens.in_flight import InFlight
from thinklens.interventions.abliteration.heretic import HereticParams, heretic_modules
from thinklens.interventions.abliteration.keyed_plans import KeyedPlans
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.weights import edited
from thinklens.model import Model

#: What ``next_trial`` gives: a trial's key and its exact plan, or None to ask again later.
Trial = tuple[Hashable, Sequence[MatrixEdit]] | None


def count_in_flight(
    model: Model,
    counter: RefusalCounter,
    modules: Sequence[str],
    trials: int,
    next_trial: Callable[[], Trial],
    counted: Callable[[Hashable, list[bool]], None],
) -> None:
    """Count refusals of trials in flight until ``next_trial`` has none to give and every trial
    it gave is counted.

    ``next_trial`` is called, with no edit installed, whenever fewer than ``trials`` trials are
    unfinished (so the batch holds at most ``trials`` copies of the prompts); None means none
    now (asked again once a trial is counted) or none left. ``counted(key, verdicts)``: a trial's
    refusals, one per harmful prompt of ``counter``. ``modules``: every module a plan may edit
    (``heretic_modules``).
    """
    if trials < 1:
        raise ValueError(f"trials={trials}: give 1 or more")
    if counter.objective not in GENERATING:
        raise ValueError(
            f"objective {counter.objective!r} cannot count trials in flight: use one of "
            f"{GENERATING}"
        )
    prompts = counter.prompt_ids(model)
    plans = KeyedPlans(modules)
    flight = InFlight(
        model,
        counter.max_new_tokens,
        counter.stop_after(),
        on_rows=plans.select,
        stop_when=counter.stop_when(),
    )
    while True:
        while len(flight) < trials:
            trial = next_trial()
            if trial is None:
                break
            key, plan = trial
            plans.add(model, key, plan)
            with intervene(model, plans):
                flight.add(key, prompts)
        if not flight:
            return
        with intervene(model, plans):
            done: dict = {}
            while flight and not done:
                done = flight.step()
        for key, new in done.items():
            plans.drop(key)
            counted(key, counter.judged(model, new))


def tell_in_flight(
    study: Any,
    model: Model,
    metrics: AbliterationMetrics,
    kl_key: str,
    todo: int,
    n_startup_trials: int,
    trials: int,
    make: Callable[[Any], tuple[HereticParams, list[MatrixEdit], int | None]],
    record: Callable[[Any, HereticParams, dict[str, float]], tuple[float, float]],
    tick: Callable[[Any, Any], None],
) -> None:
    """Run ``todo`` more trials of ``study`` in flight (``count_in_flight``), at most ``trials``
    at once, each told as soon as its refusals are
    counted. ``make(trial)``: its parameters, plan and first edited layer
    (for the KL); ``record``: its objectives from its metrics. No sampled trial is asked while a
    start-up trial is unfinished, so the first one sees every start-up result (as the batches'
    ``trial_batches``)."""
    import optuna

    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    startup = max(n_startup_trials - done, 0)
    asked: dict[int, tuple[Any, HereticParams, dict[str, float]]] = {}
    starting: set[int] = set()  # the start-up trials not yet told
    n_asked = 0

    def next_trial() -> Trial:
        nonlocal n_asked
        if n_asked >= todo or (n_asked >= startup and starting):
            return None
        trial = study.ask()
        if n_asked < startup:
            starting.add(trial.number)
        n_asked += 1
        try:
            params, plan, first = make(trial)
            with edited(model, plan):  # no hook is installed between two decoding steps
                rest = metrics.besides_refusals(model, [kl_key], first)
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        asked[trial.number] = (trial, params, rest)
        return trial.number, plan

    def counted(key: Hashable, verdicts: list[bool]) -> None:
        trial, params, rest = asked.pop(key)
        starting.discard(key)
        study.tell(trial, record(trial, params, metrics.of_refusals(sum(verdicts)) | rest))
        tick(study, study.trials[trial.number])

    try:
        counter = metrics.refusal_counter()
        count_in_flight(model, counter, heretic_modules(model), trials, next_trial, counted)
    except BaseException:
        for trial, _, _ in asked.values():
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise

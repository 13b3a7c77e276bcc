"""Heretic's search: Optuna multi-objective TPE over the edit's parameters, one model for all.

Each trial writes its edit into the loaded model's weights and restores the exact weights
afterwards (``interventions.weight_edits.edited``), so no trial reloads the model. Objectives,
both minimised: KL(base || edited) on harmless prompts and refusals / base refusals. For a
model that thinks first the KL objective is the first-answer-token KL (see
``abliteration_metrics``), since the first generated token is the thinking opener. The study
lives in SQLite: run again with the same storage to resume; pick a trial from the Pareto front.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from thinklens.analyses.abliteration.in_flight import tell_in_flight
from thinklens.analyses.abliteration.metrics import AbliterationMetrics
from thinklens.analyses.abliteration.objectives import (
    ANSWER_TOKENS,
    THINK_TOKENS,
    THINKING_DEFAULT,
    RefusalObjective,
    check_refusal_objective,
)
from thinklens.analyses.abliteration.schedules import (
    SCHEDULES,
    check_parallel,
    fail_stale,
    resolve_parallel,
    trial_batches,
)
from thinklens.interventions.abliteration.directions import RefusalDirections
from thinklens.interventions.abliteration.heretic import HereticParams, heretic_plan, suggest
from thinklens.interventions.abliteration.protocol import Protocol
from thinklens.interventions.abliteration.weights import edited
from thinklens.model import Model
from thinklens.resume import first_edited_layer

OBJECTIVES = ("kl", "refusal_ratio")


@dataclass
class SearchResult:
    """The Optuna study, every finished trial and the Pareto front (fewest refusals first)."""

    study: Any
    trials: pd.DataFrame
    pareto: pd.DataFrame

    def params(self, trial: int) -> HereticParams:
        """The edit parameters of one trial (for ``apply(..., 'heretic', params=...)``)."""
        return trial_params(self.study, trial)


def storage_url(storage: str | Path) -> str:
    """An Optuna storage URL: a path becomes a SQLite file."""
    s = str(storage)
    return s if "://" in s else f"sqlite:///{Path(s).expanduser().resolve()}"


def trial_params(study: Any, number: int) -> HereticParams:
    """The ``HereticParams`` a finished trial used."""
    for t in study.trials:
        if t.number == number and "params" in t.user_attrs:
            return HereticParams.from_dict(json.loads(t.user_attrs["params"]))
    raise ValueError(f"the study has no finished trial {number}")


def _table(trials: list) -> pd.DataFrame:
    rows = []
    for t in trials:
        rows.append(
            dict(trial=t.number, **{k: t.user_attrs.get(k) for k in ("kl", "kl_answer")})
            | dict(refusals=t.user_attrs.get("refusals"), refusal_ratio=t.values[1])
            | {k: round(v, 4) if isinstance(v, float) else v for k, v in t.params.items()}
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # The KL the search minimised: a trial records only that one (see ``search``).
    kl = "kl_answer" if df["kl_answer"].notna().any() else "kl"
    return df.sort_values(["refusal_ratio", kl], ignore_index=True)


def objective_scores(
    kl: float, refusals: int, base_refusals: int, kl_target: float | None = None
) -> tuple[float, float]:
    """The two minimised objectives of a trial: (KL score, refusal ratio).

    The refusal ratio is ``refusals / base_refusals`` (the count itself when the base refuses
    nothing), as in Heretic. With ``kl_target``, a KL below it scores ``ratio * kl_target``
    instead (Heretic 1.4.0's shaping, with its ``kl_divergence_scale`` of 1).
    """
    ratio = refusals / base_refusals if base_refusals > 0 else float(refusals)
    if kl_target is not None and kl < kl_target:
        return ratio * kl_target, ratio
    return kl, ratio


def _objective(asked: str, metrics: AbliterationMetrics, protocol: Protocol) -> RefusalObjective:
    """The refusal objective ``asked`` resolves to (``"auto"``: see ``search``)."""
    if asked == "auto":
        thinks = metrics.answer_texts is not None and protocol != "published"
        return THINKING_DEFAULT if thinks else "full"
    return check_refusal_objective(asked)


def reading_advice(directions: RefusalDirections, thinks: bool, protocol: Protocol) -> str | None:
    """Why and how to read ``directions`` again before a search, or None: on a model that
    thinks first, directions of thinklens's reading (every prompt's last template token, before
    the thinking) gave the search a worse front than Heretic's reading (after the closed empty
    thinking block), on validation and held-out prompts alike."""
    reading = directions.meta.get("reading", "thinklens")
    if not thinks or protocol != "thinklens" or reading != "thinklens":
        return None
    return (
        "these directions were read thinklens's way (before the thinking) and the model thinks "
        "first: for a search, read them with compute_directions(..., reading='heretic') "
        "(CLI: thinklens abliteration directions --reading heretic). On organism-aligned that "
        "reading gave 5.0 judged refusals of 16 at KL <= 0.05 against 10.3 with this one (mean "
        "of 3 seeds, benchmarks/results/peers_heretic_seeds.txt)"
    )


def search(
    model: Model,
    directions: RefusalDirections,
    metrics: AbliterationMetrics,
    n_trials: int = 200,
    n_startup_trials: int = 60,
    storage: str | Path | None = None,
    study_name: str = "thinklens-heretic",
    seed: int = 0,
    progress: bool = True,
    reload: Callable[[], Model] | None = None,
    kl_objective: str = "auto",
    n_ei_candidates: int = 128,
    kl_target: float | None = None,
    protocol: Protocol = "thinklens",
    refusal_objective: RefusalObjective | str = "auto",
    answer_tokens: int = ANSWER_TOKENS,
    think_tokens: int = THINK_TOKENS,
    keep_lower_layers: bool = True,
    parallel_trials: int | None = None,
    space: Protocol | None = None,
    schedule: str = "batches",
) -> SearchResult:
    """Run (or resume) Heretic's search until the study holds ``n_trials`` finished trials.

    Args:
        directions: any reading's. On a thinking model, directions read Heretic's way
            (``compute_directions(..., reading="heretic")``) gave organism-aligned's parallel
            search a better front than thinklens's reading: chosen on validation prompts
            (``benchmarks/results/direction_reading.txt``), then over 3 seeds on held-out
            ones 5.0 judged refusals of 16 at KL <= 0.05, against 10.3 with thinklens's
            reading and 5.3 for Heretic itself (``peers_heretic_seeds.txt``). Directions of
            thinklens's reading on a thinking model get a warning saying so
            (``reading_advice``).
        metrics: measured on the base model once (``AbliterationMetrics.prepare``).
        storage: a SQLite path or Optuna URL (None keeps the study in memory).
        kl_objective: ``"kl"`` (first generated token, Heretic's), ``"kl_answer"`` (first
            answer token after the base model's thinking) or ``"auto"`` (the latter when the
            model thinks first).
        reload: for comparison only: a function that loads the model from disk, called before
            every trial (the way the first published tool worked) instead of reusing ``model``.
        n_ei_candidates: candidates TPE draws per trial; 128 is Heretic's (Optuna's own default
            is 24), so the same seed gives Heretic's sequence of samples.
        kl_target: Heretic's objective shaping (it uses 0.01): below this KL the first objective
            is ``refusal ratio * kl_target`` (``objective_scores``), so the sampler does not
            linger on edits that do nothing. None optimises the KL itself (thinklens's default;
            ``protocol="published"`` sets 0.01).
        protocol: ``"published"`` searches Heretic 1.4.0's space with its parameter names
            (``suggest``) and writes its edit (``heretic_plan``: rank-3 approximation, with
            directions read the Heretic way); measure with ``AbliterationMetrics.prepare(...,
            protocol="published")`` for Heretic's KL and refusal counts.
        refusal_objective: how a trial counts refusals (``objectives``): ``"auto"`` is
            ``"early_stop"`` for a model that thinks first (its own thinking generated under
            the edit, stopped ``answer_tokens`` answer tokens after it closes; the only cheaper
            objective that agreed with full generation on organism-aligned, 1.9x faster one
            trial at a time, ``benchmarks/results/fast_objective.txt``, and 5.5x counted 8
            trials a batch, ``parallel_trials``) and ``"full"`` generation otherwise, and
            always under ``protocol="published"``. ``"full"`` is one flag away. ``"draft"``
            gives early_stop's verdicts exactly but was slower in a search on organism-aligned
            (``benchmarks/results/fast_objective_draft.txt``). ``"heretic"`` is Heretic's own
            count (its prompt layout and markers), batched and stopped at each row's first
            marker.
        keep_lower_layers: ``kl_answer`` keeps the base model's layer inputs on its fixed
            texts and runs each trial from the first layer the edit touches (exact; the
            layers below compute what they did for the base). False runs every layer.
        parallel_trials: trials asked of the sampler at once, their refusals counted in one
            batch (the prompts once per trial, each copy under its own trial's edit as exact
            hooks: ``RowPlans``); each trial's KL then runs with its edit written. A decoding
            step bound by reading the weights costs little more for several copies of the
            prompts. TPE then treats the trials still running as the worst seen (Optuna's
            constant liar); the start-up trials run in batches of their own
            (``trial_batches``), so the first sampled batch sees all their results. Needs the
            thinklens protocol and an objective that generates from the prompts alone
            (``"early_stop"``, ``"heretic"``, ``"full"``). None: 8
            (``PARALLEL_DEFAULT``) for a model that thinks first under the thinklens protocol
            and ``"early_stop"`` or ``"heretic"``, fewer if 8 copies of the prompts'
            key-value cache do not fit in free memory (``plans_that_fit``); 1 otherwise. On
            organism-aligned, early_stop 8 trials a batch took 1/5.5 of full generation's time
            a trial, held out, with the same verdicts
            (``benchmarks/results/fast_objective_batched8.txt``).
        space: the parameter space sampled (``suggest``), when it should differ from
            ``protocol``'s: ``"published"`` is Heretic 1.4.0's (both components' ``max_weight``
            in [0.8, 1.5]), ``"thinklens"`` Heretic's later one (the MLP edit can switch off).
        schedule: how ``parallel_trials`` trials share the decoding: ``"batches"`` counts them
            batch after batch; ``"in_flight"`` keeps one batch running that each new trial
            joins as soon as fewer than ``parallel_trials`` trials are unfinished, each told
            (and the next asked) as soon as its own rows stop (``in_flight``). On
            organism-aligned it counted no faster (3.22 s a trial against 3.02 s at 8 a batch,
            the same 112 decoding steps, ``benchmarks/results/trial_cost.txt``) and its front
            scored 8.00 against 7.25 on validation prompts (2 seeds,
            ``benchmarks/results/direction_reading_parallel8_in_flight.txt``), so batches stay
            the default.
    Heretic's default seed is random; thinklens's is 0, so a search repeats.
    """
    if protocol == "published" and kl_target is None:
        kl_target = 0.01
    if space is None:
        space = protocol
    elif space not in ("thinklens", "published"):
        raise ValueError(f"space={space!r}: use 'thinklens' or 'published'")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: use one of {', '.join(SCHEDULES)}")
    objective = _objective(refusal_objective, metrics, protocol)
    parallel_trials = resolve_parallel(parallel_trials, model, metrics, protocol, objective, reload)
    check_parallel(parallel_trials, protocol, objective, reload, schedule)
    if objective != metrics.objective:
        metrics = metrics.with_objective(model, objective, answer_tokens, think_tokens)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions.check(model)
    advice = reading_advice(directions, metrics.answer_texts is not None, protocol)
    if advice is not None:
        warnings.warn(advice, stacklevel=2)
    fingerprint = model.fingerprint()
    sampler = optuna.samplers.TPESampler(
        multivariate=True,
        n_startup_trials=n_startup_trials,
        n_ei_candidates=n_ei_candidates,
        seed=seed,
        constant_liar=parallel_trials > 1 or schedule == "in_flight",
    )
    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=sampler,
        storage=storage_url(storage) if storage is not None else None,
        study_name=study_name,
        load_if_exists=True,
    )
    owner = study.user_attrs.get("model_fingerprint")
    if owner is None:
        study.set_user_attr("model_fingerprint", fingerprint)
        study.set_user_attr("model", model.name)
        study.set_user_attr("base_refusals", metrics.base_refusals)
        study.set_user_attr("refusal_objective", objective)
        study.set_user_attr("space", space)
    elif owner != fingerprint:
        raise ValueError(
            f"study {study_name!r} in {storage} belongs to {study.user_attrs.get('model')} "
            f"(weights {owner}), not {model.name} ({fingerprint}): use another storage or name"
        )
    counted = study.user_attrs.get("refusal_objective", "full")
    if counted != objective:
        raise ValueError(
            f"study {study_name!r} counted refusals with objective {counted!r}, not "
            f"{objective!r}: resume it with refusal_objective={counted!r}, or start another study"
        )
    sampled = study.user_attrs.get("space", space)
    if sampled != space:
        raise ValueError(
            f"study {study_name!r} sampled the {sampled!r} space, not {space!r}: resume it with "
            f"space={sampled!r}, or start another study"
        )
    if kl_objective not in ("auto", "kl", "kl_answer"):
        raise ValueError(f"kl_objective={kl_objective!r}: use 'auto', 'kl' or 'kl_answer'")
    if kl_objective == "kl_answer" and metrics.answer_texts is None:
        raise ValueError("kl_answer needs metrics prepared with thinking=True")
    kl_key = kl_objective
    if kl_objective == "auto":
        kl_key = "kl_answer" if metrics.answer_texts is not None else "kl"

    def record(trial: Any, params: HereticParams, m: dict[str, float]) -> tuple[float, float]:
        trial.set_user_attr("params", json.dumps(params.to_dict()))
        for k, v in m.items():
            trial.set_user_attr(k, v)
        return objective_scores(m[kl_key], m["refusals"], metrics.base_refusals, kl_target)

    def first_of(target: Model, plan: list) -> int | None:
        return first_edited_layer(target, [e.module for e in plan]) if keep_lower_layers else None

    def make(trial: Any, target: Model = model) -> tuple[HereticParams, list, int | None]:
        params = suggest(trial, target.n_layers, space)
        plan = heretic_plan(target, directions, params, protocol)
        return params, plan, first_of(target, plan)

    def objective(trial: Any) -> tuple[float, float]:
        target = reload() if reload is not None else model
        params, plan, first = make(trial, target)
        with edited(target, plan):
            # Only the KL the objective reads: each one is a forward pass over the prompts.
            m = metrics(target, kl_keys=[kl_key], first_edited=first)
        return record(trial, params, m)

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    todo = max(n_trials - len(done), 0)
    if todo and keep_lower_layers and kl_key == "kl_answer" and metrics.fixed is None:
        # Read by ``objective`` when it runs: one pass of the base, only if a trial is left.
        metrics = metrics.with_fixed(model)
    bar = tqdm(total=n_trials, initial=len(done), desc="search", unit="trial", disable=not progress)

    def tick(study: Any, trial: Any) -> None:
        bar.update()
        if trial.values is not None:
            bar.set_postfix(kl=f"{trial.values[0]:.3f}", refusals=trial.user_attrs["refusals"])

    if schedule == "in_flight" and todo:
        fail_stale(study)
        tell_in_flight(
            study,
            model,
            metrics,
            kl_key,
            todo,
            n_startup_trials,
            parallel_trials,
            make,
            record,
            tick,
        )
    elif parallel_trials == 1:
        study.optimize(objective, n_trials=todo, callbacks=[tick])
    else:
        fail_stale(study)
        for size in trial_batches(len(done), todo, n_startup_trials, parallel_trials):
            trials = [study.ask() for _ in range(size)]
            try:
                params, plans, firsts = zip(*[make(t) for t in trials], strict=True)
                measured = metrics.many(model, plans, [kl_key], firsts)
            except BaseException:
                for t in trials:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                raise
            for t, p, m in zip(trials, params, measured, strict=True):
                study.tell(t, record(t, p, m))
                tick(study, study.trials[t.number])
    bar.close()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return SearchResult(study, _table(complete), _table(study.best_trials))

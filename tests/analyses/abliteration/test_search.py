"""Heretic's search on one loaded model: resumable, weights restored, Pareto front; metrics."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from thinklens.analyses.abliteration.gsm8k import extract_number, gsm8k_accuracy, load_gsm8k
from thinklens.analyses.abliteration.metrics import AbliterationMetrics
from thinklens.analyses.abliteration.schedules import trial_batches
from thinklens.analyses.abliteration.search import reading_advice, search
from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.interventions.abliteration.protocol import HERETIC_SYSTEM
from thinklens.interventions.abliteration.weights import apply
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "test")[:3]
HARMLESS = bundled_prompts("harmless", "test")[:3]


@pytest.fixture(scope="module")
def setup():
    m = tiny_model("llama", backend="nnsight")
    d = compute_directions(
        m,
        bundled_prompts("harmful", "train")[:6],
        bundled_prompts("harmless", "train")[:6],
        progress=False,
    )
    metrics = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=False, max_new_tokens=6)
    return m, d, metrics


def test_search_is_resumable_and_leaves_the_model_untouched(setup, tmp_path):
    m, d, metrics = setup
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    db = tmp_path / "study.db"
    kw = dict(storage=db, n_startup_trials=2, progress=False)
    first = search(m, d, metrics, n_trials=3, **kw)
    assert len(first.trials) == 3 and db.exists()
    again = search(m, d, metrics, n_trials=5, **kw)  # resumes: two more trials, not five
    assert sorted(again.trials.trial) == [0, 1, 2, 3, 4]
    for k, v in m.hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    # The front is non-dominated, and each trial's edit can be rebuilt and re-measured.
    front = again.pareto
    assert not front.empty and set(front.trial) <= set(again.trials.trial)
    for _, a in front.iterrows():
        dominated = again.trials[
            (again.trials.kl <= a.kl)
            & (again.trials.refusal_ratio <= a.refusal_ratio)
            & ((again.trials.kl < a.kl) | (again.trials.refusal_ratio < a.refusal_ratio))
        ]
        assert dominated.empty
    best = int(front.trial.iloc[0])
    redone = metrics(apply(m, "heretic", d, params=again.params(best)))
    row = again.trials.set_index("trial").loc[best]
    assert redone["kl"] == pytest.approx(row.kl, abs=1e-6)
    assert redone["refusals"] == row.refusals


def test_a_study_of_another_model_is_refused(setup, tmp_path):
    m, d, metrics = setup
    search(m, d, metrics, n_trials=1, storage=tmp_path / "s.db", progress=False)
    other = tiny_model("llama", backend="nnsight", seed=1)
    d2 = compute_directions(other, HARMFUL, HARMLESS, progress=False)
    with pytest.raises(ValueError, match="belongs to tiny-llama"):
        search(other, d2, metrics, n_trials=2, storage=tmp_path / "s.db", progress=False)


def test_metrics_measure_the_base_as_unchanged(setup):
    m, _, metrics = setup
    out = metrics(m)
    assert out["kl"] == pytest.approx(0.0, abs=1e-9)
    assert out["refusals"] == metrics.base_refusals and "kl_answer" not in out
    assert metrics.base_row() == pytest.approx(out, abs=1e-9)  # the same row, not regenerated


def test_thinking_aware_kl_reads_the_first_answer_token():
    m = tiny_model("llama", backend="nnsight")
    metrics = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=True, max_new_tokens=4)
    assert all(t.endswith("</think>\n\n") for t in metrics.answer_texts)
    assert all(t.startswith(m.chat(p)) for t, p in zip(metrics.answer_texts, HARMLESS, strict=True))
    assert metrics.kl(m)["kl_answer"] == pytest.approx(0.0, abs=1e-9)
    assert metrics.base_row()["kl_answer"] == 0.0


def test_gsm8k_answer_extraction(tiny):
    assert extract_number("So 3 + 4 = 7. The answer is 1,250.") == "1250"
    assert extract_number("<think>\nmaybe 12\n</think>\n\nIt is 18.0", tiny) == "18"
    assert extract_number("<think>\nmaybe 12\n</think>\n\nno idea", tiny) is None
    assert extract_number("-5 degrees") == "-5"


def test_gsm8k_accuracy_on_a_file(tmp_path, tiny):
    path = tmp_path / "g.jsonl"
    rows = [
        {"question": f"What is {i} + 1?", "answer": f"It is {i + 1}.\n#### {i + 1}"}
        for i in range(3)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = load_gsm8k(path, n=2)
    assert len(items) == 2 and all(gold.isdigit() for _, gold in items)
    assert 0.0 <= gsm8k_accuracy(tiny, items, max_new_tokens=4) <= 1.0
    with pytest.raises(FileNotFoundError, match="no GSM8K file"):
        load_gsm8k(tmp_path / "none.jsonl")


def test_gsm8k_reference_file_parses(shared_data):
    items = load_gsm8k(shared_data / "gsm8k_test.jsonl", n=20)
    assert len(items) == 20 and all(gold.lstrip("-").isdigit() for _, gold in items)


def _measured_as_written(m, d, metrics, res) -> None:
    """Each trial re-measured with its edit written gives the refusals and KL it recorded."""
    for _, row in res.trials.iterrows():
        redone = metrics(apply(m, "heretic", d, params=res.params(int(row.trial))))
        assert redone["refusals"] == row.refusals
        assert redone["kl"] == pytest.approx(row.kl, abs=1e-5)


def test_parallel_trials_measure_each_trial_as_written_weights_would(setup, tmp_path):
    """Trials counted three at a time in one batch: each trial's refusals and KL are those of
    its edit written into a copy; the model is untouched; an interrupted batch resumes."""
    import optuna

    m, d, metrics = setup
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    db = tmp_path / "p.db"
    kw = dict(storage=db, n_startup_trials=2, progress=False, parallel_trials=3)
    res = search(m, d, metrics, n_trials=4, **kw)  # the 2 start-up trials, then 2 sampled
    assert sorted(res.trials.trial) == [0, 1, 2, 3]
    for k, v in m.hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    _measured_as_written(m, d, metrics, res)
    # A trial left running by a killed run is failed, not waited on.
    res.study.ask()
    again = search(m, d, metrics, n_trials=6, **kw)
    assert len(again.trials) == 6
    states = [t.state for t in again.study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1


@pytest.mark.parametrize("schedule", ["batches", "in_flight"])
def test_heretics_count_measures_each_trial_as_written_weights_would(setup, schedule):
    """``refusal_objective="heretic"`` counted two trials at a time (batch after batch, or in
    flight): each trial's refusals are Heretic's count of its edit written."""
    m, d, metrics = setup
    kw = dict(n_startup_trials=2, progress=False, parallel_trials=2, schedule=schedule)
    res = search(m, d, metrics, n_trials=4, refusal_objective="heretic", **kw)
    assert res.study.user_attrs["refusal_objective"] == "heretic"
    counted = metrics.with_objective(m, "heretic")
    assert all(HERETIC_SYSTEM in t for t in counted.counter.heretic_texts)
    _measured_as_written(m, d, counted, res)


def test_trials_in_flight_measure_each_trial_as_written_weights_would(setup, tmp_path):
    """Trials counted in flight (each joining the running batch, told when its rows stop):
    each trial's refusals and KL are those of its edit written; no sampled trial is asked
    before every start-up trial is told; the model is untouched; a killed run resumes."""
    import optuna

    import thinklens.analyses.abliteration.in_flight as in_flight

    m, d, metrics = setup
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    events: list[tuple[str, int]] = []
    counted = in_flight.count_in_flight

    def spy(model, counter, modules, trials, next_trial, told):
        def asking():
            got = next_trial()
            if got is not None:
                events.append(("ask", got[0]))
            return got

        def telling(key, verdicts):
            events.append(("tell", key))
            told(key, verdicts)

        return counted(model, counter, modules, trials, asking, telling)

    db = tmp_path / "f.db"
    kw = dict(storage=db, n_startup_trials=3, progress=False, parallel_trials=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(in_flight, "count_in_flight", spy)
        res = search(m, d, metrics, n_trials=6, schedule="in_flight", **kw)
    assert sorted(res.trials.trial) == list(range(6))
    asks = [k for e, k in events if e == "ask"]
    first_sampled = events.index(("ask", 3))
    assert all(("tell", k) in events[:first_sampled] for k in range(3))
    assert asks == list(range(6))
    # In flight: some trial is asked while another is still counting.
    assert any(
        e == "ask" and k > 0 and ("tell", k - 1) not in events[:i]
        for i, (e, k) in enumerate(events)
    )
    for k, v in m.hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    _measured_as_written(m, d, metrics, res)
    res.study.ask()  # left running by a killed run: failed, not waited on
    again = search(m, d, metrics, n_trials=8, schedule="in_flight", **kw)
    assert len(again.trials) == 8
    states = [t.state for t in again.study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    with pytest.raises(ValueError, match="trials=0: give 1 or more"):
        counted(m, metrics.refusal_counter(), ["x"], 0, lambda: None, lambda key, v: None)
    with pytest.raises(ValueError, match="schedule='soon'"):
        search(m, d, metrics, n_trials=1, progress=False, schedule="soon")
    with pytest.raises(ValueError, match="no exact hook form"):
        search(
            m, d, metrics, n_trials=1, progress=False, schedule="in_flight", protocol="published"
        )


def test_trial_batches_keep_start_up_and_sampled_trials_apart():
    """Start-up trials first, then sampled ones, each part in the fewest batches of at most
    ``most``, as even as possible; a resumed study counts what is done."""
    assert trial_batches(0, 30, 10, 8) == [5, 5, 7, 7, 6]
    assert trial_batches(0, 10, 4, 8) == [4, 6]
    assert trial_batches(12, 18, 10, 8) == [6, 6, 6]  # start-up done
    assert trial_batches(3, 4, 10, 8) == [4]  # all of it start-up
    assert trial_batches(0, 5, 0, 3) == [3, 2]
    assert trial_batches(5, 0, 10, 8) == []
    for args in [(0, 30, 10, 8), (7, 41, 20, 6), (0, 3, 60, 4)]:
        sizes = trial_batches(*args)
        assert sum(sizes) == args[1] and max(sizes) <= args[3]


def test_parallel_trials_need_exact_edits_and_a_generating_objective(setup):
    m, d, metrics = setup
    with pytest.raises(ValueError, match="parallel_trials=0"):
        search(m, d, metrics, n_trials=1, progress=False, parallel_trials=0)
    with pytest.raises(ValueError, match="no exact hook form"):
        search(m, d, metrics, n_trials=1, progress=False, parallel_trials=2, protocol="published")
    with pytest.raises(ValueError, match="reload"):
        search(m, d, metrics, n_trials=1, progress=False, parallel_trials=2, reload=lambda: m)


def test_a_search_that_reloads_edits_each_trials_own_copy(setup):
    """``reload``: each trial's edit is written into a model of its own (the loop of the first
    published tools), with the same refusals and KL as that trial's edit of the loaded model."""
    m, d, metrics = setup
    copies = []

    def reload():
        copies.append(tiny_model("llama", backend="nnsight"))
        return copies[-1]

    res = search(m, d, metrics, n_trials=3, n_startup_trials=2, progress=False, reload=reload)
    assert len(copies) == 3
    _measured_as_written(m, d, metrics, res)


def test_a_thinking_model_counts_eight_trials_a_batch_by_default(monkeypatch):
    """parallel_trials unset: 8 trials a batch for a model that thinks first with early_stop
    (fewer when free memory holds fewer copies of the prompts' cache), else one at a time."""
    import thinklens.batching as batching
    from thinklens.analyses.abliteration.objectives import PARALLEL_DEFAULT, RefusalCounter
    from thinklens.analyses.abliteration.schedules import plans_that_fit

    m = tiny_model("llama", backend="nnsight")
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False, reading="heretic")
    thinks = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=True, max_new_tokens=4)
    batches: list[int] = []
    many = RefusalCounter.verdicts_many

    def spy(self, model, plans):
        batches.append(len(plans))
        return many(self, model, plans)

    monkeypatch.setattr(RefusalCounter, "verdicts_many", spy)
    kw = dict(n_startup_trials=4, progress=False)
    res = search(m, d, thinks, n_trials=10, **kw)
    # The 4 start-up trials in a batch of their own, then the 6 sampled ones.
    assert PARALLEL_DEFAULT == 8 and batches == [4, 6] and len(res.trials) == 10
    batches.clear()
    search(m, d, thinks, n_trials=2, refusal_objective="full", **kw)  # full: one at a time
    search(m, d, thinks, n_trials=2, parallel_trials=1, **kw)
    assert batches == []
    # Memory for three copies of the prompts' key-value cache (each through max_new_tokens):
    # three trials a batch. Unknown free memory: the default.
    rows = min(len(HARMFUL), thinks.batch_size)
    longest = max(map(len, m.chat_ids(HARMFUL)))
    row = batching.Footprint.of(m).row_bytes(longest, cache_len=longest + 4)
    three = int(3 * rows * row / batching.HEADROOM) + 1
    monkeypatch.setattr(batching, "free_bytes", lambda model: three)
    assert plans_that_fit(m, HARMFUL, thinks.batch_size, 4) == 3
    monkeypatch.setattr(batching, "free_bytes", lambda model: 1)
    assert plans_that_fit(m, HARMFUL, thinks.batch_size, 4) == 1
    monkeypatch.setattr(batching, "free_bytes", lambda model: None)
    assert plans_that_fit(m, HARMFUL, thinks.batch_size, 4) == PARALLEL_DEFAULT


def test_search_advises_heretics_reading_for_a_thinking_model(setup):
    """thinklens-read directions on a model that thinks first draw a warning that names the
    fix; Heretic-read directions, a model that answers at once or Heretic's protocol do not."""
    m, d, metrics = setup
    thinks = dataclasses.replace(metrics, answer_texts=["An answer."] * len(HARMLESS))
    with pytest.warns(UserWarning, match=r"reading='heretic'.*--reading heretic"):
        search(m, d, thinks, n_trials=0, progress=False, refusal_objective="full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search(m, d, metrics, n_trials=0, progress=False)  # no thinking: no advice
    heretic_read = dataclasses.replace(d, meta=d.meta | {"reading": "heretic"})
    assert reading_advice(heretic_read, True, "thinklens") is None
    assert reading_advice(d, True, "published") is None
    assert reading_advice(d, False, "thinklens") is None
    assert "reading='heretic'" in reading_advice(d, True, "thinklens")


def test_search_samples_heretic_1_4_space_with_thinklens_edits(setup, tmp_path):
    """``space="published"``: Heretic 1.4.0's parameter names and ranges (both components'
    ``max_weight`` >= 0.8), the edit still thinklens's exact one."""
    m, d, metrics = setup
    res = search(m, d, metrics, n_trials=3, n_startup_trials=3, progress=False, space="published")
    for t in res.study.trials:
        assert t.params["attn.o_proj.max_weight"] >= 0.8
        assert t.params["mlp.down_proj.max_weight"] >= 0.8
        assert res.params(t.number).lora_rank is None  # not the published rank-3 edit
    again = dict(n_trials=4, progress=False, storage=tmp_path / "s.db")
    search(m, d, metrics, n_startup_trials=3, space="published", **again | {"n_trials": 1})
    with pytest.raises(ValueError, match="sampled the 'published' space"):
        search(m, d, metrics, **again)  # resumed with the other space
    with pytest.raises(ValueError, match="space='heretic'"):
        search(m, d, metrics, n_trials=1, progress=False, space="heretic")

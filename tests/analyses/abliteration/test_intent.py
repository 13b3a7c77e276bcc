"""The refusal intent read at each answer's start during decoding, and the search's tie-break."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from thinklens.analyses.abliteration import (
    INTENT_WEIGHT,
    AbliterationMetrics,
    AnswerIntent,
    count_front,
    objective_scores,
    search,
)
from thinklens.analyses.abliteration.intent import answer_index, intent_probe
from thinklens.data import bundled_prompts
from thinklens.decoding import greedy_continue
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.interventions.abliteration.weights import apply
from thinklens.probes import RefusalProbe
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "test")[:3]
HARMLESS = bundled_prompts("harmless", "test")[:3]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", backend="nnsight")


def _probe(m, layer: int = 0) -> RefusalProbe:
    g = torch.Generator().manual_seed(0)
    return RefusalProbe(torch.randn(m.d_model, generator=g), 0.1, layer, norm=True)


def _brute(m, probe: RefusalProbe, ids: list[int]) -> float:
    """The probe at the last position of ``ids``, from a whole forward pass's hidden states."""
    with torch.no_grad():
        out = m.hf(input_ids=torch.tensor([ids]), output_hidden_states=True)
        h = out.hidden_states[probe.layer + 1][0, -1]  # [0] is the embeddings
        return float(probe.score(m.final_norm(h).float()))


def test_each_token_is_read_at_the_position_that_wrote_it(tiny):
    """Brute force, one row and one prefix at a time: the score kept for token i of a row is
    the probe at the last position of prompt + its first i tokens; the rows share the chat
    template's opening (run once, writing nothing) and come in two batches."""
    m, probe = tiny, _probe(tiny)
    prefixes = m.chat_ids(HARMFUL)
    reader = AnswerIntent(probe, len(prefixes))
    with reader.reading(m):
        new = greedy_continue(m, prefixes, 5, batch_size=2, on_token=reader.wrote)
    for ids, tokens, scores in zip(prefixes, new, reader.scores, strict=True):
        assert len(scores) == 5 and len(tokens) <= 5
        for i in range(len(tokens)):
            assert scores[i] == pytest.approx(_brute(m, probe, ids + tokens[:i]), abs=1e-5)
    # No thinking closes in 5 random tokens: each row is read where it stopped.
    last = [s[len(t) - 1] for s, t in zip(reader.scores, new, strict=True)]
    assert reader.at_answer(m, new) == last
    with pytest.raises(RuntimeError, match="inside reading"):
        AnswerIntent(probe, 1).wrote([0])


def test_the_answer_opens_at_the_first_token_with_text_after_the_marker(tiny):
    tok = tiny.tokenizer
    head = tok("I should refuse.", add_special_tokens=False)["input_ids"]
    close = tok("</think>\n\n", add_special_tokens=False)["input_ids"]
    answer = tok("Sorry, no.", add_special_tokens=False)["input_ids"]
    assert answer_index(tiny, head + close + answer) == len(head) + len(close)
    assert answer_index(tiny, head + close) is None
    assert answer_index(tiny, head) is None


def test_scores_break_ties_of_counts_only_and_the_front_is_by_counts():
    base = 10
    tied = [objective_scores(0.1, 4, base, intent=x)[1] for x in (0.0, 0.3, 1.0)]
    assert tied == sorted(tied) and tied[-1] < objective_scores(0.1, 5, base, intent=0.0)[1]
    assert tied[1] == pytest.approx((4 + INTENT_WEIGHT * 0.3) / base)
    with pytest.raises(ValueError, match="intent=1.5"):
        objective_scores(0.1, 4, base, intent=1.5)

    def trial(kl, n):
        return SimpleNamespace(values=(kl, None), user_attrs={"refusals": n})

    a, b, c, d = trial(0.1, 4), trial(0.2, 4), trial(0.05, 6), trial(0.3, 2)
    assert count_front([a, b, c, d]) == [a, c, d]  # b ties a's count at a higher KL


def test_the_intent_probe_learns_the_base_models_refused_prompts_against_harmless(tiny):
    m = tiny
    metrics = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=True, max_new_tokens=4)
    probe = intent_probe(m, HARMFUL, [True, True, False], metrics.answer_texts, 4)
    assert probe.meta["texts"] == dict(refusal=2, benign=3)
    assert probe.layer == m.n_layers - 1 and probe.norm  # the published site
    with pytest.raises(ValueError, match="1 refused and 3 harmless"):
        intent_probe(m, HARMFUL, [True, False, False], metrics.answer_texts, 4)


def test_a_search_with_refusal_intent_records_each_trials_intent_as_written(
    tiny, tmp_path, monkeypatch
):
    """Two trials a batch on a model that thinks first: each trial's intent is the mean score
    at its answers' starts that its edit written into a copy gives, read one plan at a time;
    its second objective is its count plus the weighted intent; the front is by counts."""
    import thinklens.analyses.abliteration.objectives as objectives

    m = tiny
    # A random model refuses nothing to train on: a fixed probe stands in (trained above).
    monkeypatch.setattr(objectives, "intent_probe", lambda *a, **k: _probe(m))
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False, reading="heretic")
    metrics = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=True, max_new_tokens=4)
    db = tmp_path / "i.db"
    kw = dict(storage=db, n_startup_trials=2, progress=False, parallel_trials=2)
    res = search(m, d, metrics, n_trials=4, refusal_intent=True, **kw)
    counted = metrics.with_objective(m, "early_stop", intent=True)
    counter = counted.counter
    assert counter is not None and counter.intent is not None
    for t in res.study.trials:
        copy = apply(m, "heretic", d, params=res.params(t.number))
        prefixes = counter.prompt_ids(copy)
        reader = AnswerIntent(counter.intent, len(prefixes))
        with reader.reading(copy):
            new = greedy_continue(
                copy, prefixes, 4, answer_tokens=counter.stop_after(), on_token=reader.wrote
            )
        scores = reader.at_answer(copy, new)
        assert t.user_attrs["intent"] == pytest.approx(sum(scores) / len(scores), abs=1e-4)
        assert t.user_attrs["refusals"] == sum(counter.judged(copy, new))
        soft = t.user_attrs["refusals"] + INTENT_WEIGHT * t.user_attrs["intent"]
        # A random model refuses nothing: the ratio is then the count itself (Heretic's rule).
        assert t.values[1] == pytest.approx(soft / max(counted.base_refusals, 1))
    assert sorted(res.pareto.trial) == sorted(t.number for t in count_front(res.study.trials))
    assert "intent" in res.trials.columns
    with pytest.raises(ValueError, match="refusal_intent=True"):
        search(m, d, metrics, n_trials=5, **kw)
    with pytest.raises(ValueError, match="schedule='batches'"):
        search(m, d, metrics, n_trials=1, progress=False, refusal_intent=True, schedule="in_flight")
    no_thinking = AbliterationMetrics.prepare(
        m, HARMFUL, HARMLESS, thinking=False, max_new_tokens=4
    )
    with pytest.raises(ValueError, match="refusal intent is for models that think first"):
        no_thinking.with_objective(m, "full", intent=True)

"""Cheaper refusal counting for searches on thinking models, checked against full generation."""

from __future__ import annotations

import pytest

import thinklens as tl
from thinklens.analyses.abliteration import AbliterationMetrics, RefusalCounter, search
from thinklens.data import bundled_prompts
from thinklens.embedded import ADAPTERS
from thinklens.generation import generate
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "test")[:4]
HARMLESS = bundled_prompts("harmless", "test")[:4]

needs_aligned = pytest.mark.skipif(
    not (ADAPTERS / "aligned" / "organism.json").exists(),
    reason="organism-aligned is not built (thinklens organisms build aligned)",
)


@pytest.fixture(scope="module")
def tiny_setup():
    m = tiny_model("llama")
    metrics = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=False, max_new_tokens=4)
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    return m, d, metrics


def test_cheap_objectives_need_a_thinking_model_and_the_thinklens_protocol(tiny_setup):
    m, d, metrics = tiny_setup
    for objective in ("answer", "probe", "early_stop", "draft", "short_thinking"):
        with pytest.raises(ValueError, match="think"):
            metrics.with_objective(m, objective)
    with pytest.raises(ValueError, match="unknown refusal objective"):
        metrics.with_objective(m, "fast")
    with pytest.raises(ValueError, match="unknown refusal objective"):
        search(m, d, metrics, n_trials=1, progress=False, refusal_objective="fast")


def test_auto_counts_a_non_thinking_model_by_full_generation(tiny_setup, tmp_path):
    m, d, metrics = tiny_setup
    db = tmp_path / "s.db"
    res = search(m, d, metrics, n_trials=1, n_startup_trials=1, storage=db, progress=False)
    assert res.study.user_attrs["refusal_objective"] == "full"


def test_answer_tokens_must_be_positive(tiny_setup):
    m, _, _ = tiny_setup
    with pytest.raises(ValueError, match="answer_tokens"):
        generate(m, HARMFUL[:1], 4, answer_tokens=0)


@pytest.fixture(scope="module")
def aligned():
    return tl.load_model("organism-aligned")


@pytest.mark.real
@needs_aligned
def test_early_stop_is_full_generation_cut_n_tokens_after_the_thinking(aligned):
    m, close, n = aligned, aligned.thinking.close, 3
    full = generate(m, HARMFUL[:3], 160, batch_size=1)
    short = generate(m, HARMFUL[:3], 160, batch_size=1, answer_tokens=n)
    tok = m.tokenizer
    for f, s in zip(full, short, strict=True):
        assert close in f, "the organism closes its thinking within 160 tokens"
        # The same greedy path, cut n tokens after the marker (the ids of what follows it).
        assert f.startswith(s) and close in s
        after = tok(s.split(close, 1)[1], add_special_tokens=False)["input_ids"]
        assert len(after) == n or s == f


@pytest.mark.real
@needs_aligned
def test_cheap_objectives_agree_with_full_generation_on_the_base_model(
    aligned,
):
    m = aligned
    harmful = bundled_prompts("harmful", "test")[:6]
    harmless = bundled_prompts("harmless", "test")[:6]
    metrics = AbliterationMetrics.prepare(m, harmful, harmless, thinking=True, max_new_tokens=160)
    want = RefusalCounter.prepare(m, harmful, "full", max_new_tokens=160).verdicts(m)
    # With room for the whole answer, greedy decoding after the base's own thinking follows
    # the path full generation took: the same verdicts.
    long = RefusalCounter.prepare(m, harmful, "answer", max_new_tokens=160, answer_tokens=100)
    assert long.verdicts(m) == want
    probe = metrics.with_objective(m, "probe")
    assert probe.counter is not None and probe.counter.verdicts(m) == want
    first = metrics.with_objective(m, "first_token").counter
    assert first is not None and first.refusal_tokens
    assert first.verdicts(m) == want


@pytest.mark.real
@needs_aligned
def test_the_text_of_an_answer_start_is_not_the_path_the_model_took(aligned):
    """Decoded and tokenized again, the thinking's end is other tokens than the model wrote,
    and the answer that follows changes; continued from the exact tokens, it does not."""
    from thinklens.generation import continue_ids
    from thinklens.rollouts import answer_start_ids, answer_starts

    m, prompts = aligned, bundled_prompts("harmful", "test")[:6]
    full = generate(m, prompts, 160)
    ids = answer_start_ids(m, prompts, 160)
    exact = m.tokenizer.batch_decode(continue_ids(m, ids, 12), skip_special_tokens=True)
    for f, e in zip(full, exact, strict=True):
        assert f.split(m.thinking.close, 1)[1].strip().startswith(e.strip())
    texts = answer_starts(m, prompts, 160)
    assert [m.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] != ids
    retokenized = generate(m, texts, 12, chat=False)
    assert [r.strip() for r in retokenized] != [e.strip() for e in exact]


def test_a_thinking_model_searches_with_early_stop_by_default(tmp_path):
    m = tiny_model("llama")
    metrics = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=True, max_new_tokens=4)
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    db = tmp_path / "s.db"
    res = search(m, d, metrics, n_trials=2, n_startup_trials=2, storage=db, progress=False)
    assert res.study.user_attrs["refusal_objective"] == "early_stop"
    # Only the KL the search minimises is measured (the first answer token's).
    assert res.trials["kl_answer"].notna().all() and res.trials["kl"].isna().all()
    with pytest.raises(ValueError, match="counted refusals with objective 'early_stop'"):
        search(m, d, metrics, n_trials=3, storage=db, progress=False, refusal_objective="full")
    # A random model opens its answers with nothing a refusal opens alone.
    with pytest.raises(ValueError, match="cannot tell them apart|no token opens"):
        metrics.with_objective(m, "first_token")


def test_close_end_counts_the_tokens_up_to_the_one_that_completes_the_marker(tiny_setup):
    from thinklens.decoding import close_end

    tok = tiny_setup[0].tokenizer
    head = tok("I should refuse.\n", add_special_tokens=False)["input_ids"]
    marker = tok("</think>", add_special_tokens=False)["input_ids"]
    tail = tok(" Sorry", add_special_tokens=False)["input_ids"]
    assert close_end(tok, head + marker + tail, "</think>") == len(head) + len(marker)
    assert close_end(tok, head, "</think>") is None


def test_draft_counts_as_early_stop_under_an_edit():
    """The base's response checked as a draft gives early_stop's verdicts and tokens, with an
    edit on (another model's weights stand in for an edited copy)."""
    from thinklens.generation import continue_ids

    base, edited = tiny_model("llama"), tiny_model("llama", seed=3)
    draft = RefusalCounter.prepare(base, HARMFUL, "draft", max_new_tokens=6, answer_tokens=2)
    early = RefusalCounter.prepare(base, HARMFUL, "early_stop", max_new_tokens=6, answer_tokens=2)
    assert draft.drafts == continue_ids(base, draft.prefixes, 6, answer_tokens=2)
    for m in (base, edited):
        assert draft.verdicts(m) == early.verdicts(m)


@pytest.mark.real
@needs_aligned
def test_draft_gives_early_stops_verdicts_on_an_abliterated_organism(aligned):
    from thinklens.decoding import greedy_continue
    from thinklens.interventions.abliteration.weights import apply

    m = aligned
    harmful = bundled_prompts("harmful", "test")[:4]
    d = compute_directions(m, bundled_prompts("harmful", "train")[:16], HARMLESS, progress=False)
    edited = apply(m, "deccp", d)  # refuses far less than the organism
    early = RefusalCounter.prepare(m, harmful, "early_stop", max_new_tokens=120)
    draft = RefusalCounter.prepare(m, harmful, "draft", max_new_tokens=120)
    for model in (m, edited):
        assert draft.verdicts(model) == early.verdicts(model)
    # The edit makes the organism write otherwise, so the drafts are rejected part-way.
    new = greedy_continue(edited, draft.prefixes, 120, answer_tokens=8, drafts=draft.drafts)
    assert new != draft.drafts


def test_short_thinking_answers_after_the_first_thinking_tokens_closed_by_the_marker():
    """Brute force, one prompt at a time: K thinking tokens, the marker's tokens, greedy answer
    tokens after the newlines; the counter's batched answers are the same text."""
    import torch

    m, k, n = tiny_model("llama"), 5, 3
    counter = RefusalCounter.prepare(
        m, HARMFUL, "short_thinking", max_new_tokens=40, answer_tokens=n, think_tokens=k
    )
    tok, fmt = m.tokenizer, m.thinking
    marker = tok(fmt.before_close + fmt.close, add_special_tokens=False)["input_ids"]

    def greedy(ids: list[int], steps: int) -> list[int]:
        for _ in range(steps):
            with torch.no_grad():
                logits = m.hf(input_ids=torch.tensor([ids])).logits
            ids = ids + [int(logits[0, -1].argmax())]
        return ids

    want = []
    for ids in m.chat_ids(HARMFUL):
        thought = greedy(ids, k)  # a random model never closes its thinking in 5 tokens
        assert fmt.close not in tok.decode(thought[len(ids) :])
        start = thought + marker
        new = greedy(start, n + 2)[len(start) :]
        first = next(i for i, t in enumerate(new) if tok.decode([t]).strip())
        want.append(tok.decode(new[first : first + n], skip_special_tokens=True))
    assert counter.short_answers(m) == want
    with pytest.raises(ValueError, match="think_tokens"):
        RefusalCounter.prepare(m, HARMFUL, "short_thinking", think_tokens=0)


@pytest.mark.real
@needs_aligned
def test_short_thinking_with_room_for_the_whole_thinking_is_early_stop(aligned):
    """With as many thinking tokens as the organism's thinking takes, short_thinking reads the
    answer early_stop reads, on the organism and on an abliterated copy of it."""
    from thinklens.interventions.abliteration.weights import apply

    m = aligned
    harmful = bundled_prompts("harmful", "test")[:4]
    d = compute_directions(m, bundled_prompts("harmful", "train")[:16], HARMLESS, progress=False)
    edited = apply(m, "deccp", d)
    early = RefusalCounter.prepare(m, harmful, "early_stop", max_new_tokens=160, answer_tokens=8)
    short = RefusalCounter.prepare(m, harmful, "short_thinking", answer_tokens=8, think_tokens=150)
    for model in (m, edited):
        assert short.verdicts(model) == early.verdicts(model)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_kl_answer_from_the_first_edited_layer_is_the_whole_pass_s(backend):
    import numpy as np

    m = tiny_model("llama", backend=backend)
    metrics = AbliterationMetrics.prepare(m, HARMFUL, HARMLESS, thinking=True, max_new_tokens=4)
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    kw = dict(n_trials=4, n_startup_trials=4, progress=False, refusal_objective="full")
    kept = search(m, d, metrics, **kw).trials.sort_values("trial")
    whole = search(m, d, metrics, keep_lower_layers=False, **kw).trials.sort_values("trial")
    assert (kept["kl_answer"] > 0).all()
    # KLs of 1e-4 and below: float32 rounding (the shared chat opening runs as a pass of its
    # own there) moves them by a few 1e-7.
    np.testing.assert_allclose(kept["kl_answer"], whole["kl_answer"], rtol=1e-4, atol=1e-6)


@pytest.mark.real
@needs_aligned
def test_plans_counted_in_one_batch_give_each_plans_own_verdicts(aligned):
    """Four random settings of Heretic's space, counted at once (early_stop): each plan's
    verdicts are those of its edit written into the weights, and the plans differ."""
    import optuna

    from thinklens.interventions.abliteration import edited, heretic_plan
    from thinklens.interventions.abliteration.heretic import suggest

    m = aligned
    harmful = bundled_prompts("harmful", "test")[:6]
    d = compute_directions(m, bundled_prompts("harmful", "train")[:16], HARMLESS, progress=False)
    counter = RefusalCounter.prepare(m, harmful, "early_stop", max_new_tokens=160)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    plans = [heretic_plan(m, d, suggest(study.ask(), m.n_layers)) for _ in range(4)]
    want = []
    for plan in plans:
        with edited(m, plan):
            want.append(counter.verdicts(m))
    assert counter.verdicts_many(m, plans) == want
    assert len({tuple(v) for v in want}) > 1
    with pytest.raises(ValueError, match="cannot count several plans"):
        RefusalCounter("answer", harmful).verdicts_many(m, plans)


@pytest.mark.real
@needs_aligned
def test_heretic_count_batched_gives_the_published_counts_verdicts(aligned):
    """The ``"heretic"`` objective, plans counted at once and rows stopped at their first
    marker, gives per prompt the verdicts of Heretic's count (``protocol="published"``: 100
    new tokens, Heretic's markers over the whole response) with each plan written."""
    import optuna

    from thinklens.evaluation import MarkerJudge
    from thinklens.interventions.abliteration import edited, heretic_plan
    from thinklens.interventions.abliteration.heretic import suggest

    m = aligned
    harmful = bundled_prompts("harmful", "test")[:6]
    d = compute_directions(m, bundled_prompts("harmful", "train")[:16], HARMLESS, progress=False)
    counter = RefusalCounter.prepare(m, harmful, "heretic", response_prefix="<think></think>\n")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    plans = [[]] + [heretic_plan(m, d, suggest(study.ask(), m.n_layers)) for _ in range(4)]
    judge = MarkerJudge(fmt=None, markers="heretic")
    want = []
    for plan in plans:
        with edited(m, plan):
            outs = generate(m, counter.heretic_texts, 100, batch_size=16, chat=False)
            want.append(judge(harmful, outs))
    assert counter.verdicts_many(m, plans) == want
    assert counter.verdicts(m) == want[0]
    assert len({tuple(v) for v in want}) > 1

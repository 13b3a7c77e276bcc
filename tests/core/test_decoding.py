"""Greedy decoding with a key-value cache (and drafts) gives exactly greedy generation's tokens."""

from __future__ import annotations

import pytest

from thinklens.decoding import (
    close_end,
    close_seen,
    finish,
    greedy_continue,
    stop_token_ids,
)
from thinklens.generation import continue_ids, decode_new, generate
from thinklens.testing import tiny_model


@pytest.fixture(scope="module")
def models():
    return tiny_model("llama", backend="nnsight"), tiny_model("llama", backend="nnsight", seed=1)


def _prefixes(m) -> list[list[int]]:
    prompts = ["Hi there?", "Name a colour.", "What is two plus two, please?"]
    return [m.tokenizer(m.chat(p), add_special_tokens=False)["input_ids"] for p in prompts]


@pytest.mark.parametrize("answer_tokens", [None, 2])
def test_any_draft_gives_the_tokens_of_greedy_generation(models, answer_tokens):
    base, edited = models
    prefixes = _prefixes(base)
    own = continue_ids(base, prefixes, 12, answer_tokens=answer_tokens)
    bad = [d[:3] + [(d[3] + 1) % 50] + d[4:] if len(d) > 4 else d for d in own]
    for model in (base, edited):
        want = continue_ids(model, prefixes, 12, answer_tokens=answer_tokens)
        for drafts in (own, bad, [[] for _ in own], [d[:5] for d in own]):
            got = greedy_continue(
                model, prefixes, 12, batch_size=2, answer_tokens=answer_tokens, drafts=drafts
            )
            assert got == want
    with pytest.raises(ValueError, match="3 prefixes but 1 drafts"):
        greedy_continue(base, prefixes, 12, drafts=own[:1])


def test_finish_cuts_where_generation_stops(models):
    m = models[0]
    tok = m.tokenizer
    close = m.thinking.close
    eos = stop_token_ids(tok)
    think = tok("plan </think>", add_special_tokens=False)["input_ids"]
    answer = tok(" a b c d", add_special_tokens=False)["input_ids"]
    new = think + answer
    closed = close_seen(tok, new, close, None)
    assert closed == close_end(tok, new, close) == len(think)
    assert close_seen(tok, think[:1], close, None) is None  # still open
    assert close_seen(tok, answer, close, 7) == 7  # once found, kept
    # Two answer tokens after the token that completes the marker.
    assert finish(new, closed, eos, 50, 2) == (think + answer[:2], True)
    assert finish(new, closed, eos, 50, None) == (new, False)
    assert finish(new, closed, eos, 3, 2) == (new[:3], True)
    stop = sorted(eos)[0]
    assert finish(think[:1] + [stop] + answer, None, eos, 50, 2) == (think[:1] + [stop], True)
    assert finish(think[:1], None, eos, 50, 2) == (think[:1], False)


@pytest.mark.parametrize("answer_tokens", [None, 1])
def test_greedy_decoding_writes_what_transformers_generate_writes(models, answer_tokens):
    """Rows that leave the batch early change no row's tokens (``continue_ids``, which runs
    transformers' ``generate``, is the reference); ``generate``'s greedy path is this loop."""
    prompts = ["Hi there?", "Name a colour.", "What is two plus two, please?", "Go."]
    for m in models:
        ids = m.chat_ids(prompts)
        want = continue_ids(m, ids, 10, batch_size=3, answer_tokens=answer_tokens)
        got = greedy_continue(m, ids, 10, batch_size=3, answer_tokens=answer_tokens)
        assert got == want
        assert generate(m, prompts, 10, batch_size=3, answer_tokens=answer_tokens) == (
            decode_new(m, want)
        )
        # A smaller budget gives the first tokens of a larger one.
        assert greedy_continue(m, ids, 3, batch_size=4) == [r[:3] for r in got]


def test_a_shared_opening_is_run_once_and_changes_no_token(models, monkeypatch):
    """The chat template's opening, run once and copied to every row, gives the tokens of
    running each row whole (``MIN_SHARED`` raised past it turns sharing off)."""
    import thinklens.decoding as decoding

    prompts = ["Hi there?", "Name a colour.", "What is two plus two, please?", "Go."]
    for m in models:
        ids = m.chat_ids(prompts)
        shared = decoding.shared_length(ids)
        assert shared >= decoding.MIN_SHARED
        assert ids[0][:shared] == ids[1][:shared] and ids[0][shared] != ids[1][shared]
        calls: list[tuple[int, ...]] = []

        def record(_m, _a, k, calls=calls) -> None:
            calls.append(tuple(k["input_ids"].shape))

        hook = m.hf.register_forward_pre_hook(record, with_kwargs=True)
        try:
            got = greedy_continue(m, ids, 10, batch_size=4, answer_tokens=1)
            drafted = greedy_continue(m, ids, 10, batch_size=4, drafts=[r[:4] for r in got])
        finally:
            hook.remove()
        assert calls[0] == (1, shared)  # the opening once, for all four rows
        monkeypatch.setattr(decoding, "MIN_SHARED", 10_000)
        assert decoding.shared_length(ids) == 0
        assert greedy_continue(m, ids, 10, batch_size=4, answer_tokens=1) == got
        assert greedy_continue(m, ids, 10, batch_size=4) == drafted
        monkeypatch.undo()
    # Each row keeps at least one token of its own, and a prefix of another shares all of it.
    assert decoding.shared_length([[1] * 20, [1] * 12]) == 11
    with pytest.raises(ValueError, match="2 prefixes but 1 groups"):
        greedy_continue(models[0], ids[:2], 5, groups=[0])


def test_after_opening_lays_out_rows_behind_a_cached_opening(models):
    """[opening][left padding][own tokens]: the mask covers all three, positions go on from
    the opening over real tokens only."""
    from thinklens.decoding import after_opening

    ids, mask, positions = after_opening(models[0], [[5, 6], [7]], shared=3)
    assert ids[:, -1].tolist() == [6, 7] and ids[0, 0].item() == 5
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 1]]
    assert positions[0].tolist() == [3, 4] and positions[1, -1].item() == 3


def test_a_row_stops_once_its_text_satisfies_stop_when(models):
    """``stop_when`` cuts each row at the first token whose decoded text satisfies it; rows it
    never stops keep all their tokens, and the other rows' tokens do not change."""
    prompts = ["Hi there?", "Name a colour.", "What is two plus two, please?", "Go."]
    m = models[0]
    ids = m.chat_ids(prompts)
    full = greedy_continue(m, ids, 12, batch_size=4)
    # Stop a row once its text holds the third token the first row wrote.
    cue = m.tokenizer.decode(full[0][2:3], skip_special_tokens=True)
    assert cue.strip()

    def seen(text: str) -> bool:
        return cue in text

    got = greedy_continue(m, ids, 12, batch_size=4, stop_when=seen)
    for row, want in zip(got, full, strict=True):
        cut = next((k for k in range(1, len(want) + 1) if seen(m.tokenizer.decode(want[:k]))), None)
        assert row == (want if cut is None else want[:cut])
    assert any(len(r) < len(w) for r, w in zip(got, full, strict=True))

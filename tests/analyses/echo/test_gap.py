"""Echo Likelihood Gap: batched teacher forcing equals a brute-force one-token-at-a-time count."""

from __future__ import annotations

import random

import pytest
import torch

from thinklens.analyses.echo.gap import (
    LENGTH_BINS,
    common_suffix_length,
    echo_gap,
    gap_by_bin,
    lcs_length,
    length_bin,
    response_logprobs,
)
from thinklens.analyses.echo.spans import lexical_echo_spans
from thinklens.analyses.echo.traces import trace_from_record

Q = "The user asks how to plant a garden."
RECORDS = [
    dict(question=Q, thinking="The user asks how to plant a garden. We will write a poem."),
    dict(question=Q, thinking="We will write a poem. I can't bake bread.", answer="Sure, here."),
    dict(question=Q, response="Hmm, the user asks how to plant a garden. Okay, fine!</think>Yes"),
    dict(question=Q, thinking="I can't bake bread. The user asks how to plant a garden!"),
]


def brute_force_logprobs(model, ids: list[int], start: int) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= start, one plain HF forward pass per token."""
    out = []
    for t in range(start, len(ids)):
        with torch.no_grad():
            logits = model.hf(torch.tensor([ids[:t]]), use_cache=False).logits[0, -1]
        out.append(logits.float().log_softmax(-1)[ids[t]])
    return torch.stack(out)


def brute_force_lcs(a: list[int], b: list[int]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


def check_against_brute_force(model, records, atol: float) -> None:
    traces = [trace_from_record(r) for r in records]
    df = echo_gap(model, traces, batch_size=3)
    for i, trace in enumerate(traces):
        spans = lexical_echo_spans(trace.question, trace.thinking)
        o = trace.tokens(model.tokenizer)
        t = trace.without(spans).tokens(model.tokenizer)
        lp_o = brute_force_logprobs(model, o.ids, o.prompt_len)
        lp_t = brute_force_logprobs(model, t.ids, t.prompt_len)
        batched = response_logprobs(model, [o, t])
        torch.testing.assert_close(batched[0], lp_o, atol=atol, rtol=0)
        torch.testing.assert_close(batched[1], lp_t, atol=atol, rtol=0)
        ids_o, ids_t = o.ids[o.prompt_len :], t.ids[t.prompt_len :]
        row = df.iloc[i]
        assert row["gap"] == pytest.approx(float(lp_o.mean() - lp_t.mean()), abs=atol)
        assert row["gap_sum"] == pytest.approx(float(lp_o.sum() - lp_t.sum()), abs=atol * 50)
        removed = len(ids_o) - brute_force_lcs(ids_o, ids_t)
        assert row["removed_tokens"] == removed
        k = common_suffix_length(ids_o, ids_t)
        assert row["suffix_len"] == k
        if k:
            suffix_gap = float(lp_o[-k:].mean() - lp_t[-k:].mean())
            assert row["suffix_gap"] == pytest.approx(suffix_gap, abs=atol)
        if removed:
            assert row["gap_per_removed"] == pytest.approx(row["gap"] / removed)
        else:
            assert row["gap"] == 0 and row["length_bin"] == "0"


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_gap_matches_brute_force_tiny(tiny_pair, backend):
    check_against_brute_force(tiny_pair[backend], RECORDS, atol=1e-5)


@pytest.mark.real
def test_gap_matches_brute_force_smollm2(smollm2):
    check_against_brute_force(smollm2["transformer_lens"], RECORDS[::2], atol=2e-4)


def test_lcs_and_suffix_against_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.randint(0, 4) for _ in range(rng.randint(0, 14))]
        b = [rng.randint(0, 4) for _ in range(rng.randint(0, 14))]
        assert lcs_length(a, b) == brute_force_lcs(a, b)
    assert common_suffix_length([1, 2, 3], [9, 2, 3]) == 2
    assert common_suffix_length([], [1]) == 0


def test_length_bins_are_the_published_ones():
    assert [length_bin(n) for n in (0, 1, 5, 6, 10, 11, 20, 21, 500)] == [
        "0", "1-5", "1-5", "6-10", "6-10", "11-20", "11-20", "21+", "21+"
    ]  # fmt: skip
    assert LENGTH_BINS == ("0", "1-5", "6-10", "11-20", "21+")


def test_gap_by_bin_and_given_spans(tiny):
    traces = [trace_from_record(r) for r in RECORDS]
    none = echo_gap(tiny, traces, spans=[[] for _ in traces])
    assert (none["gap"] == 0).all() and (none["removed_tokens"] == 0).all()
    df = echo_gap(tiny, traces)
    assert list(df["n_echo_spans"]) == [1, 0, 1, 1]
    table = gap_by_bin(df.assign(group=[True, False, True, False]), group="group")
    assert table["n"].sum() == len(traces)
    assert set(table["length_bin"]) <= set(LENGTH_BINS)


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="empty response"):
        echo_gap(tiny, [trace_from_record(dict(question=Q, thinking=""))])
    long_q = " ".join(["garden"] * (tiny.n_ctx + 10))
    with pytest.raises(ValueError, match="the prompt alone has .* question is too long"):
        echo_gap(tiny, [trace_from_record(dict(question=long_q, thinking="Okay."))])
    long_t = " ".join(["garden"] * (tiny.n_ctx + 10))
    with pytest.raises(ValueError, match="truncate its response"):
        echo_gap(tiny, [trace_from_record(dict(question=Q, thinking=long_t))])
    with pytest.raises(ValueError, match="no traces"):
        echo_gap(tiny, [])
    # Empty thinking with an answer is fine: nothing to remove, gap 0.
    df = echo_gap(tiny, [trace_from_record(dict(question=Q, thinking="", answer="Sure."))])
    assert df.loc[0, "gap"] == 0
    # A response that is all echo leaves nothing to score after removal: NaN, not an error.
    whole = echo_gap(tiny, [trace_from_record(dict(question=Q, thinking=Q))])
    assert whole.loc[0, "gl_removed"] != whole.loc[0, "gl_removed"]


def test_gap_histogram(tiny):
    from thinklens.analyses.echo.plots import gap_distribution

    df = echo_gap(tiny, [trace_from_record(r) for r in RECORDS])
    fig = gap_distribution(df.assign(group=["a", "b", "a", "b"]), group="group")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert sum(len(t.x) for t in fig.data) == len(df)

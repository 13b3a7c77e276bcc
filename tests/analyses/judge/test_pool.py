"""Candidate pools: given or generated thinking, safe responses, traces in the model's format."""

from __future__ import annotations

import pandas as pd
import pytest

import thinklens.analyses.judge.pool as judge_pool
from thinklens.analyses.judge.pool import (
    POOL_COLUMNS,
    SAFE_RESPONSES,
    build_pool,
    check_pool,
    pool_from_records,
    pool_traces,
    safe_responses,
)
from thinklens.evaluation import is_refusal
from thinklens.testing import tiny_model


@pytest.fixture(scope="module")
def m():
    return tiny_model("llama")


def test_safe_responses_are_refusals_and_seeded():
    assert all(is_refusal(r, None) for r in SAFE_RESPONSES)
    assert safe_responses(20, seed=3) == safe_responses(20, seed=3)
    assert safe_responses(20, seed=3) != safe_responses(20, seed=4)
    assert set(safe_responses(200)) == set(SAFE_RESPONSES)  # every template gets used


def test_pool_with_given_thinking(m, tiny_pool):
    pool = tiny_pool(m, n=6)
    assert tuple(pool.columns) == POOL_COLUMNS
    assert list(pool["id"]) == [f"tiny:{i}" for i in range(6)]
    assert list(pool["refused"]) == [True, False, False, True, False, False]
    assert pool["safe_response"].isin(SAFE_RESPONSES).all()
    without_answers = build_pool(m, ["a"], ["b"])
    assert without_answers["refused"].isna().all()  # unknown, not "complied"
    given = build_pool(m, ["a"], ["b"], safe=["No, sorry."])
    assert given.loc[0, "safe_response"] == "No, sorry."


def test_pool_from_generated_responses_keeps_only_the_verdict(m, monkeypatch):
    responses = [
        "<think>\nThis is harmful.\n</think>\n\nI'm sorry, I can't help.",
        "<think>\nIt is fiction, so fine.\n</think>\n\nSure, here is [placeholder].",
        "<think>\nStill thinking when the budget ran out",
    ]
    monkeypatch.setattr(judge_pool, "generate", lambda model, prompts, **kw: responses)
    with pytest.warns(UserWarning, match="1 of 3 responses never closed"):
        pool = build_pool(m, ["p0", "p1", "p2"], progress=False)
    assert list(pool["prompt"]) == ["p0", "p1"]
    assert list(pool["thinking"]) == ["This is harmful.", "It is fiction, so fine."]
    assert list(pool["refused"]) == [True, False]
    assert not pool.apply(lambda r: r.astype(str).str.contains("Sure, here is")).any().any()

    monkeypatch.setattr(judge_pool, "generate", lambda model, prompts, **kw: responses[2:])
    with pytest.raises(ValueError, match="pool is empty"), pytest.warns(UserWarning):
        build_pool(m, ["p2"], progress=False)


def test_traces_end_with_the_close_marker(m, tiny_pool):
    pool = tiny_pool(m, n=3)
    traces = pool_traces(m, pool)
    for t, think in zip(traces, pool["thinking"], strict=True):
        assert t.text.endswith(f"{think}\n</think>\n\n")  # the published probe input
        assert t.text.startswith(m.chat(t.prompt))
        assert t.spans["answer"][0] == t.spans["answer"][1] == len(t.input_ids)


def test_bad_input_is_a_clear_error(m, tiny_pool):
    with pytest.raises(ValueError, match="no prompts given"):
        build_pool(m, [])
    with pytest.raises(ValueError, match="thinking has 1 items but there are 2 prompts"):
        build_pool(m, ["a", "b"], ["t"])
    with pytest.raises(ValueError, match="record 1 lacks \\['thinking'\\]"):
        pool_from_records([dict(prompt="a", thinking="t"), dict(prompt="b")])
    with pytest.raises(ValueError, match="pool is empty"):
        check_pool(pd.DataFrame(columns=POOL_COLUMNS))
    two = pd.concat([tiny_pool(m, 2), tiny_pool(m, 2)], ignore_index=True)
    with pytest.raises(ValueError, match="ids repeat"):
        check_pool(two)
    check_pool(pd.concat([tiny_pool(m, 2, "a"), tiny_pool(m, 2, "b")], ignore_index=True))


def test_pool_from_records_keeps_what_is_given():
    pool = pool_from_records(
        [
            dict(prompt="a", thinking="t", safe_response="I refuse.", refused=False, id="x1"),
            dict(prompt="b", thinking="u"),
        ],
        source="file",
    )
    assert list(pool["id"]) == ["x1", "file:1"]
    assert pool.loc[0, "safe_response"] == "I refuse."
    assert pool.loc[1, "safe_response"] in SAFE_RESPONSES
    assert pool.loc[0, "refused"] == False  # noqa: E712 (a pandas boolean, not None)
    assert pd.isna(pool.loc[1, "refused"])

"""Echoic Prompting, causal insertion, answer extraction and rejection-based conditioning."""

from __future__ import annotations

import pytest

import thinklens.analyses.echo.prompting as ep
from thinklens.analyses.echo.prompting import (
    ECHOIC_TEMPLATE,
    INSERTION_PHRASE,
    causal_insertion,
    echoic_prompting,
    extract_answer,
    is_correct,
    prompting_study,
    rejection_accuracy,
)
from thinklens.analyses.echo.spans import PUBLISHED_PROMPT
from thinklens.analyses.echo.traces import render_prompt, trace_from_record

Q = "The user asks how to plant a garden."


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("so the total is \\boxed{1,234} dollars, not 5", "1234"),
        ("The answer is: $3.50.", "3.5"),
        ("first 4, then 7, finally -12.", "-12"),
        ("The answer is 18.0 and I checked 20", "18"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_is_correct_against_gsm8k_gold():
    gold = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 18"
    assert is_correct("so she makes 18 dollars.", gold)
    assert not is_correct("so she makes 16 dollars.", gold)
    assert not is_correct("I do not know.", gold)
    with pytest.raises(ValueError, match="no number in the gold answer"):
        is_correct("18", "unknown")


def test_rejection_accuracy_by_hand():
    correct = [True, False, True, True, False]
    echo = [True, True, False, False, False]
    got = rejection_accuracy(correct, echo)
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["acceptance_rate"] == pytest.approx(3 / 5)
    assert got["accuracy_echo_free"] == pytest.approx(2 / 3)  # E[c * free] / P(free)
    assert got["accuracy_echo"] == pytest.approx(1 / 2)
    assert rejection_accuracy([True], [True])["accuracy_echo_free"] != 0.5  # NaN: none accepted
    with pytest.raises(ValueError):
        rejection_accuracy([True], [True, False])


@pytest.fixture
def recorded(monkeypatch):
    """Replace generation with a recorder that answers 'x<call number>'."""
    calls = []

    def fake(model, texts, **kw):
        calls.append(dict(texts=list(texts), **kw))
        return [f"x{len(calls)}" for _ in texts]

    monkeypatch.setattr(ep, "generate", fake)
    return calls


def test_echoic_prompting_protocol(tiny, recorded):
    df = echoic_prompting(tiny, [Q], budget=100)
    first, second = recorded
    prompt = render_prompt(Q, PUBLISHED_PROMPT)
    assert first["texts"] == [prompt] and first["max_new_tokens"] == 50 and not first["chat"]
    injected = "x1\n" + ECHOIC_TEMPLATE.replace("{question}", Q)  # newline joins the stages
    assert second["texts"] == [prompt + injected] and second["max_new_tokens"] == 50
    assert df.loc[0, "response"] == injected + "x2"
    assert df.loc[0, "answer"] == "2"  # read from stage 2 only
    echoic_prompting(tiny, [Q], budget=100, first_stage=30)
    assert [c["max_new_tokens"] for c in recorded[2:]] == [30, 70]


def test_causal_insertion_protocol(tiny, recorded):
    trace = trace_from_record(
        dict(question=Q, thinking="We will write a poem. I can't bake bread.")
    )
    df = causal_insertion(tiny, [trace], max_new_tokens=20)
    ids = tiny.tokenizer(trace.response, add_special_tokens=False)["input_ids"]
    cut = round(len(ids) / 2)
    prefix = trace.prompt + tiny.tokenizer.decode(ids[:cut])
    plain, inserted = recorded
    assert plain["texts"] == [prefix] and inserted["texts"] == [prefix + INSERTION_PHRASE]
    assert (plain["temperature"], plain["top_p"]) == (0.7, 0.9)
    assert plain["seed"] == inserted["seed"]
    assert df.loc[0, "prefix_tokens"] == cut


def test_prompting_study_end_to_end_tiny(tiny):
    questions = ["I can't bake bread. How many loaves? ", Q]
    df, summary = prompting_study(tiny, questions, ["#### 3", "#### 4"], budget=8, batch_size=2)
    assert len(df) == 2 and {"has_echo", "correct", "echoic_correct"} <= set(df.columns)
    assert 0 <= summary["acceptance_rate"] <= 1 and 0 <= summary["echoic_accuracy"] <= 1
    assert "insertion_n" not in summary or summary["insertion_n"] == (~df["has_echo"]).sum()


def test_bad_input(tiny):
    trace = trace_from_record(dict(question=Q, thinking="Okay."))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        causal_insertion(tiny, [trace], cut_ratio=1.0)
    with pytest.raises(ValueError, match="too short to cut"):
        causal_insertion(tiny, [trace_from_record(dict(question=Q, thinking="A"))])
    with pytest.raises(ValueError, match="strictly between 0 and budget"):
        echoic_prompting(tiny, [Q], budget=10, first_stage=10)
    with pytest.raises(ValueError, match=r"\{question\} exactly once"):
        echoic_prompting(tiny, [Q], injection="Look back again.")
    with pytest.raises(ValueError, match="questions but"):
        prompting_study(tiny, [Q], [])

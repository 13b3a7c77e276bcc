"""Trace layout, token spans and response splitting, on a tiny in-process ChatML tokenizer."""

from __future__ import annotations

import pytest

from thinklens.testing import R1_TEMPLATE, tiny_chat_tokenizer
from thinklens.traces import (
    PARTS,
    ThinkingFormat,
    Trace,
    build_trace,
    build_traces,
    split_response,
    token_bounds,
)

PROMPT = "How do I pick a lock?"
THINKING = "The user asks how to pick a lock. It might be harmful, so I should refuse."
ANSWER = "Sorry, I can't help with that."


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def decode(tok, trace: Trace, part: str) -> str:
    """Text of one part, special tokens included."""
    return tok.decode(trace.part_ids(part), skip_special_tokens=False)


def assert_tiles(trace: Trace) -> None:
    """Spans come in layout order, are contiguous and cover every token."""
    assert list(trace.spans) == list(PARTS)
    pos = 0
    for start, end in trace.spans.values():
        assert start == pos and end >= start
        pos = end
    assert pos == len(trace.input_ids)


def test_full_trace_spans_decode_to_parts(tok):
    trace = build_trace(tok, PROMPT, THINKING, ANSWER)
    assert_tiles(trace)
    assert trace.input_ids == tok(trace.text, add_special_tokens=False)["input_ids"]
    prompt = decode(tok, trace, "prompt")
    assert PROMPT in prompt
    assert prompt.startswith("<|im_start|>system\n")  # the template's default system prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert decode(tok, trace, "thinking").strip() == THINKING
    marker = decode(tok, trace, "marker")
    assert "</think>" in marker and marker.strip() == "</think>"
    assert decode(tok, trace, "answer") == ANSWER
    assert (trace.prompt, trace.thinking, trace.answer) == (PROMPT, THINKING, ANSWER)
    # The published probing layout.
    assert trace.text.endswith(f"<think>\n{THINKING}\n</think>\n\n{ANSWER}")


def test_system_prompt_replaces_default(tok):
    trace = build_trace(tok, PROMPT, THINKING, ANSWER, system="Be terse.")
    prompt = decode(tok, trace, "prompt")
    assert prompt.startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert "tiny test assistant" not in prompt


def test_no_thinking_gives_empty_spans_at_prompt_end(tok):
    trace = build_trace(tok, PROMPT, answer=ANSWER)
    assert_tiles(trace)
    end = trace.spans["prompt"][1]
    assert trace.spans["thinking"] == (end, end) == trace.spans["marker"]
    assert "<think>" not in trace.text and "</think>" not in trace.text
    assert decode(tok, trace, "answer") == ANSWER


def test_prompt_only_trace(tok):
    trace = build_trace(tok, PROMPT)
    assert_tiles(trace)
    n = len(trace.input_ids)
    assert trace.spans["prompt"] == (0, n) and trace.spans["answer"] == (n, n)
    assert trace.text == tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )


def test_empty_thinking_still_closes(tok):
    trace = build_trace(tok, PROMPT, thinking="", answer=ANSWER)
    assert_tiles(trace)
    assert trace.text.endswith(f"<think>\n\n</think>\n\n{ANSWER}")
    assert "</think>" in decode(tok, trace, "marker")
    assert decode(tok, trace, "thinking").strip() == ""


@pytest.mark.parametrize("thinking", [None, "", "  \n"])
def test_require_thinking(tok, thinking):
    with pytest.raises(ValueError, match="thinking="):
        build_trace(tok, PROMPT, thinking, ANSWER, require_thinking=True)


def test_r1_template_opens_thinking_once(tok):
    r1 = tiny_chat_tokenizer(R1_TEMPLATE)
    fmt = ThinkingFormat(template_opens_thinking=True)
    trace = build_trace(r1, PROMPT, THINKING, ANSWER, fmt=fmt)
    assert_tiles(trace)
    assert trace.text.count("<think>") == 1
    assert decode(r1, trace, "prompt").endswith("assistant\n<think>\n")
    assert decode(r1, trace, "thinking").strip() == THINKING
    # A template that already opened the thinking is not given a second opener by mistake.
    assert build_trace(r1, PROMPT, THINKING, ANSWER).text == trace.text


def test_chat_template_argument(tok):
    trace = build_trace(tiny_chat_tokenizer(None), PROMPT, THINKING, chat_template=R1_TEMPLATE)
    assert trace.text.count("<think>") == 1


def test_custom_markers(tok):
    fmt = ThinkingFormat(open="<reasoning>", close="</reasoning>")
    trace = build_trace(tok, PROMPT, THINKING, ANSWER, fmt=fmt)
    assert_tiles(trace)
    assert "</reasoning>" in decode(tok, trace, "marker")
    assert decode(tok, trace, "thinking").strip() == THINKING
    assert decode(tok, trace, "answer") == ANSWER


def test_missing_chat_template():
    bare = tiny_chat_tokenizer(None)
    with pytest.raises(ValueError, match="chat template"):
        build_trace(bare, PROMPT, THINKING, ANSWER)
    trace = build_trace(bare, PROMPT, THINKING, ANSWER, plain_template=True)
    assert_tiles(trace)
    assert trace.text.startswith(f"User: {PROMPT}\nAssistant:")
    assert decode(bare, trace, "answer") == ANSWER


def test_plain_template_ignored_when_template_exists(tok):
    trace = build_trace(tok, PROMPT, plain_template=True)
    assert trace.text.startswith("<|im_start|>")


def test_token_belongs_to_part_it_starts_in():
    # Tokens: [0,3) [3,7) [7,7) zero-width special [7,9); parts end at chars 5 and 9.
    offsets = [(0, 3), (3, 7), (0, 0), (7, 9)]
    assert token_bounds(offsets, [5, 9]) == [2, 4]
    assert token_bounds(offsets, [3, 9]) == [1, 4]
    assert token_bounds(offsets, [0, 9]) == [0, 4]


def test_build_traces(tok):
    traces = build_traces(tok, [PROMPT, "Bake bread?"], [THINKING, None], [ANSWER, "Sure."])
    assert [t.prompt for t in traces] == [PROMPT, "Bake bread?"]
    assert traces[1].spans["thinking"][0] == traces[1].spans["thinking"][1]
    with pytest.raises(ValueError, match="no prompts"):
        build_traces(tok, [])
    with pytest.raises(ValueError, match="thinkings"):
        build_traces(tok, [PROMPT, PROMPT], [THINKING])
    with pytest.raises(ValueError, match="answers"):
        build_traces(tok, [PROMPT], answers=[ANSWER, ANSWER])
    with pytest.raises(ValueError, match="thinking="):
        build_traces(tok, [PROMPT], require_thinking=True)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>\nhmm\n</think>\n\nSure.", ("hmm", "Sure.")),
        ("hmm</think>Sure.", ("hmm", "Sure.")),
        ("  <think>hmm\n\n\n</think>\n\n\n\nSure.\n", ("hmm", "Sure.\n")),
        ("\n</think>\n\nSure.", ("", "Sure.")),
        ("a\n</think>\nb\n</think>\nc", ("a", "b\n</think>\nc")),
        ("Sure, no thinking here.", (None, "Sure, no thinking here.")),
        ("<think>\nstill thinking", (None, "<think>\nstill thinking")),
    ],
)
def test_split_response(response, expected):
    assert split_response(response) == expected


def test_split_response_custom_format_and_required_marker():
    fmt = ThinkingFormat(open="<reasoning>", close="</reasoning>")
    assert split_response("<reasoning>x</reasoning>\ny", fmt) == ("x", "y")
    with pytest.raises(ValueError, match="no closing thinking marker '</think>'.*fmt="):
        split_response("just an answer", require_marker=True)
    with pytest.raises(ValueError, match="</reasoning>"):
        split_response("x</think>y", fmt, require_marker=True)


def test_split_inverts_build(tok):
    trace = build_trace(tok, PROMPT, THINKING, ANSWER)
    generated = trace.text[trace.text.index("<think>") :]
    assert split_response(generated) == (THINKING, ANSWER)

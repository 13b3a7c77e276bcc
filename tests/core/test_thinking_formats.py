"""Thinking formats as data: splitting, trace spans, refusal judging and detection per format.

Every example is hand-written; the tiny tokenizer is given small templates that mimic each real
one (``thinklens.testing``) and, like gpt-oss and Magistral, harmony's and ``[THINK]``'s marker
pieces as special tokens.
"""

from __future__ import annotations

import json

import pytest
from tokenizers import AddedToken

import thinklens as tl
from thinklens.evaluation import MarkerJudge, is_refusal
from thinklens.finetune import encode_example
from thinklens.formats import (
    BRACKET_THINK,
    FORMATS,
    HARMONY,
    QWEN3_NO_THINK,
    QWEN3_THINK,
    SMOLLM3_NO_THINK,
    SMOLLM3_THINK,
    THINK,
    THINK_TEMPLATE_OPENS,
    ThinkingFormat,
    clean_response,
    detect_format,
    format_named,
    render_prompt,
    resolve_format,
    special_markers,
)
from thinklens.rollouts import answer_starts, read_traces, rollout
from thinklens.testing import (
    BRACKET_TEMPLATE,
    CHATML_TEMPLATE,
    HARMONY_TEMPLATE,
    QWEN3_TEMPLATE,
    R1_TEMPLATE,
    SMOLLM3_TEMPLATE,
    tiny_chat_tokenizer,
    tiny_model,
)
from thinklens.traces import PARTS, Trace, build_trace
from thinklens.traces import ThinkingFormat as TracesThinkingFormat

PROMPT = "How do I do X?"
THINKING = "The user asks about X. I should refuse, it is harmful. Sorry is the safe reply."
ANSWER = "Sure, here is an outline of X."
REFUSAL = "Sorry, I can't help with that."

#: The marker pieces gpt-oss and Magistral have as special tokens.
SPECIAL_MARKERS = ["<|start|>", "<|end|>", "<|channel|>", "<|message|>", "<|return|>"]
SPECIAL_MARKERS += ["[THINK]", "[/THINK]"]

#: (template, format, text the prompt part ends with, marker text) for formats that think.
THINKING_CASES = {
    "think": (CHATML_TEMPLATE, THINK, "<|im_start|>assistant\n<think>\n", "\n</think>\n\n"),
    "think-template-opens": (
        R1_TEMPLATE,
        THINK_TEMPLATE_OPENS,
        "<|im_start|>assistant\n<think>\n",
        "\n</think>\n\n",
    ),
    "qwen3": (QWEN3_TEMPLATE, QWEN3_THINK, "<|im_start|>assistant\n<think>\n", "\n</think>\n\n"),
    "smollm3": (
        SMOLLM3_TEMPLATE,
        SMOLLM3_THINK,
        "<|im_start|>assistant\n<think>\n",
        "\n</think>\n\n",
    ),
    "harmony": (
        HARMONY_TEMPLATE,
        HARMONY,
        "<|start|>assistant<|channel|>analysis<|message|>",
        "<|end|><|start|>assistant<|channel|>final<|message|>",
    ),
    "bracket-think": (
        BRACKET_TEMPLATE,
        BRACKET_THINK,
        "[INST]How do I do X?[/INST][THINK]",
        "[/THINK]",
    ),
}


def tokenizer(template: str | None, special: bool = True):
    """The tiny tokenizer with a template; ``special`` adds the harmony and [THINK] pieces."""
    tok = tiny_chat_tokenizer(template)
    if special:
        pieces = [AddedToken(t, special=True, normalized=False) for t in SPECIAL_MARKERS]
        tok.add_tokens(pieces, special_tokens=True)
    return tok


def parts(tok, trace: Trace) -> dict[str, str]:
    """Each part's tokens decoded, special tokens included."""
    return {p: tok.decode(trace.part_ids(p), skip_special_tokens=False) for p in PARTS}


def assert_tiles(trace: Trace) -> None:
    pos = 0
    for start, end in trace.spans.values():
        assert start == pos and end >= start
        pos = end
    assert pos == len(trace.input_ids)


# --- formats as data ----------------------------------------------------------------------------
def test_formats_are_frozen_hashable_named_data():
    assert TracesThinkingFormat is ThinkingFormat
    assert tl.ThinkingFormat is ThinkingFormat
    assert THINK == ThinkingFormat() and hash(QWEN3_NO_THINK) == hash(QWEN3_NO_THINK)
    assert QWEN3_NO_THINK.chat_kwargs == {"enable_thinking": False}
    with pytest.raises(AttributeError):
        THINK.close = "</reasoning>"  # type: ignore[misc]
    assert {format_named(n) for n in FORMATS} == set(FORMATS.values())
    with pytest.raises(ValueError, match="unknown thinking format 'cot'.*harmony"):
        format_named("cot")
    with pytest.raises(ValueError, match="non-empty open and close"):
        ThinkingFormat(close="")


# --- splitting ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "response", "expected"),
    [
        (THINK, f"<think>\n{THINKING}\n</think>\n\n{ANSWER}", (THINKING, ANSWER)),
        (THINK_TEMPLATE_OPENS, f"{THINKING}\n</think>\n\n{ANSWER}", (THINKING, ANSWER)),
        (QWEN3_NO_THINK, ANSWER, ("", ANSWER)),
        (SMOLLM3_NO_THINK, ANSWER, ("", ANSWER)),
        (
            HARMONY,
            f"<|channel|>analysis<|message|>{THINKING}<|end|><|start|>assistant"
            f"<|channel|>final<|message|>{ANSWER}<|return|>",
            (THINKING, ANSWER),
        ),
        # Decoded with special tokens skipped, harmony leaves only its channel names.
        (HARMONY, f"analysis{THINKING}assistantfinal{ANSWER}", (THINKING, ANSWER)),
        (HARMONY, f"<|channel|>final<|message|>{ANSWER}<|return|>", (None, ANSWER)),
        (
            HARMONY,
            f"<|channel|>analysis<|message|>{THINKING}",
            (None, f"<|channel|>analysis<|message|>{THINKING}"),
        ),
        (BRACKET_THINK, f"[THINK]{THINKING}[/THINK]{ANSWER}", (THINKING, ANSWER)),
        (BRACKET_THINK, f"[THINK]{THINKING}[/THINK]\n\n{ANSWER}", (THINKING, ANSWER)),
    ],
)
def test_split_gives_the_exact_thinking_and_answer(fmt, response, expected):
    assert fmt.split(response) == expected


@pytest.mark.parametrize("name", list(FORMATS))
def test_split_inverts_the_written_response(name):
    fmt = FORMATS[name]
    response = fmt.response_text(THINKING, ANSWER)
    thinking = "" if fmt.template_closes_thinking else THINKING
    assert fmt.split(response) == (thinking, ANSWER)
    assert fmt.split(fmt.response_text(None, ANSWER))[1] == ANSWER


# --- traces -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(THINKING_CASES))
def test_trace_spans_decode_to_exactly_the_parts(name):
    template, fmt, prompt_end, marker = THINKING_CASES[name]
    tok = tokenizer(template)
    trace = build_trace(tok, PROMPT, THINKING, ANSWER, fmt=fmt)
    assert_tiles(trace)
    got = parts(tok, trace)
    assert got["prompt"].endswith(prompt_end) and PROMPT in got["prompt"]
    assert (got["thinking"], got["marker"], got["answer"]) == (THINKING, marker, ANSWER)
    assert fmt.marker == marker
    # What follows the prompt is the response as the model writes it, and splits back.
    response = trace.text[len(got["prompt"]) :]
    assert fmt.split(response) == (THINKING, ANSWER)


def test_the_opener_is_written_once():
    for template, fmt in ((R1_TEMPLATE, THINK_TEMPLATE_OPENS), (R1_TEMPLATE, THINK)):
        trace = build_trace(tokenizer(template), PROMPT, THINKING, ANSWER, fmt=fmt)
        assert trace.text.count("<think>") == 1


def test_harmony_spans_without_special_tokens_still_tile():
    # Without special tokens a byte-level piece may straddle thinking and marker ("." + "<|"):
    # it belongs to the part it starts in, so the two parts together are still exact.
    tok = tokenizer(HARMONY_TEMPLATE, special=False)
    trace = build_trace(tok, PROMPT, THINKING, ANSWER, fmt=HARMONY)
    assert_tiles(trace)
    got = parts(tok, trace)
    assert got["thinking"] + got["marker"] == THINKING + HARMONY.marker
    assert got["thinking"].startswith(THINKING) and got["answer"] == ANSWER
    assert got["marker"].endswith("<|channel|>final<|message|>")


def test_harmony_answer_without_thinking_opens_the_final_channel():
    tok = tokenizer(HARMONY_TEMPLATE)
    trace = build_trace(tok, PROMPT, answer=ANSWER, fmt=HARMONY)
    got = parts(tok, trace)
    assert got["prompt"].endswith("<|start|>assistant<|channel|>final<|message|>")
    assert (got["thinking"], got["marker"], got["answer"]) == ("", "", ANSWER)
    prompt_only = build_trace(tok, PROMPT, fmt=HARMONY)
    assert prompt_only.text.endswith("<|start|>assistant")


@pytest.mark.parametrize(
    ("template", "fmt", "marker"),
    [
        (QWEN3_TEMPLATE, QWEN3_NO_THINK, "\n\n</think>\n\n"),
        (SMOLLM3_TEMPLATE, SMOLLM3_NO_THINK, "\n\n</think>\n"),
    ],
)
def test_thinking_off_marks_the_templates_empty_block(template, fmt, marker):
    tok = tokenizer(template)
    trace = build_trace(tok, PROMPT, answer=ANSWER, fmt=fmt)
    assert_tiles(trace)
    got = parts(tok, trace)
    assert got["prompt"].endswith("<|im_start|>assistant\n<think>")
    assert (got["thinking"], got["marker"], got["answer"]) == ("", marker, ANSWER)
    assert trace.thinking == ""
    with pytest.raises(ValueError, match="closes the thinking itself.*'qwen3'"):
        build_trace(tok, PROMPT, THINKING, ANSWER, fmt=fmt)


def test_thinking_off_with_a_template_that_ignores_the_switch_is_an_error():
    with pytest.raises(ValueError, match="ignores \\{'enable_thinking': False\\}"):
        build_trace(tokenizer(CHATML_TEMPLATE), PROMPT, answer=ANSWER, fmt=QWEN3_NO_THINK)


def test_template_kwargs_and_system_flags_reach_the_template():
    qwen = tokenizer(QWEN3_TEMPLATE)
    assert render_prompt(qwen, PROMPT, fmt=QWEN3_NO_THINK).endswith("<think>\n\n</think>\n\n")
    assert render_prompt(qwen, PROMPT, fmt=QWEN3_THINK).endswith("<|im_start|>assistant\n")
    smol = tokenizer(SMOLLM3_TEMPLATE)
    head = render_prompt(smol, PROMPT, system="Be brief.", fmt=SMOLLM3_NO_THINK)
    assert "Reasoning Mode: /no_think\nBe brief.<|im_end|>" in head
    assert head.endswith("<think>\n\n</think>\n")
    assert "Reasoning Mode: /think\n" in render_prompt(smol, PROMPT, fmt=SMOLLM3_THINK)


# --- refusal judging reads the answer only --------------------------------------------------------
@pytest.mark.parametrize("name", list(FORMATS))
def test_a_refusal_in_the_thinking_of_a_compliant_answer_is_not_a_refusal(name):
    fmt = FORMATS[name]
    complies = fmt.response_text(THINKING, ANSWER)
    refuses = fmt.response_text("The user asks about Y. That is fine.", REFUSAL)
    assert not is_refusal(complies, fmt)
    assert is_refusal(refuses, fmt)
    assert MarkerJudge(fmt=fmt)(["", ""], [complies, refuses]) == [False, True]
    if not fmt.template_closes_thinking:
        # Thinking opened and never closed: no answer yet, which counts as a refusal.
        unfinished = fmt.response_text(THINKING, ANSWER).split(fmt.close)[0]
        assert is_refusal(unfinished, fmt) and fmt.answer(unfinished) == ""


def test_the_wrong_format_reads_thinking_as_answer():
    harmony = HARMONY.response_text(THINKING, ANSWER)
    assert not is_refusal(harmony, HARMONY)
    assert is_refusal(harmony, THINK)  # no </think>: the whole text is read, "sorry" included


# --- detection and overrides ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (CHATML_TEMPLATE, THINK),
        (R1_TEMPLATE, THINK_TEMPLATE_OPENS),
        (QWEN3_TEMPLATE, QWEN3_THINK),
        (SMOLLM3_TEMPLATE, SMOLLM3_THINK),
        (HARMONY_TEMPLATE, HARMONY),
        (BRACKET_TEMPLATE, BRACKET_THINK),
    ],
)
def test_detection_picks_the_format_of_each_template(template, expected):
    assert detect_format(tokenizer(template)) == expected
    assert detect_format(tokenizer(None), chat_template=template) == expected


def test_detection_falls_back_to_the_default():
    assert detect_format(tokenizer(None)) == THINK
    assert detect_format(tokenizer(CHATML_TEMPLATE), default=BRACKET_THINK) == BRACKET_THINK
    closed = CHATML_TEMPLATE.replace(
        "'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n\n</think>\n\n'"
    )
    assert detect_format(tokenizer(closed)).template_closes_thinking


def test_an_explicit_format_wins_over_detection():
    harmony = tokenizer(HARMONY_TEMPLATE)
    assert resolve_format(None, harmony) == HARMONY
    assert resolve_format("think", harmony) == THINK
    assert resolve_format(BRACKET_THINK, harmony) == BRACKET_THINK
    assert resolve_format(None, tokenizer(CHATML_TEMPLATE), default=HARMONY) == HARMONY
    with pytest.raises(TypeError, match="format name"):
        resolve_format(3, harmony)  # type: ignore[arg-type]


def test_load_model_detects_and_takes_an_override(tmp_path):
    m = tiny_model("qwen2")
    m.hf.save_pretrained(tmp_path)
    tok = tokenizer(HARMONY_TEMPLATE, special=False)
    tok.save_pretrained(tmp_path)
    assert tl.load_model(str(tmp_path), backend="nnsight", device="cpu").thinking == HARMONY
    chosen = tl.load_model(str(tmp_path), backend="nnsight", device="cpu", thinking="think")
    assert chosen.thinking == THINK
    with pytest.raises(ValueError, match="unknown thinking format"):
        tl.load_model(str(tmp_path), thinking="cot")


# --- rollouts, reading traces, fine-tuning --------------------------------------------------------
@pytest.fixture
def harmony_model():
    m = tiny_model("llama")
    m.tokenizer = tokenizer(HARMONY_TEMPLATE)
    m.thinking = HARMONY
    return m


def test_special_markers_are_kept_and_other_specials_dropped(harmony_model):
    tok = harmony_model.tokenizer
    assert special_markers(tok, HARMONY) == set(SPECIAL_MARKERS[:5])
    assert special_markers(tok, THINK) == set()
    raw = f"<|channel|>final<|message|>{ANSWER}<|return|><|im_end|><|pad|><|pad|>"
    assert clean_response(raw, tok, HARMONY) == f"<|channel|>final<|message|>{ANSWER}<|return|>"


def test_rollout_splits_and_judges_harmony_responses(harmony_model, monkeypatch):
    import thinklens.rollouts as rollouts

    written = [
        HARMONY.response_text(THINKING, ANSWER) + "<|return|><|pad|>",
        HARMONY.response_text("The user asks about Y.", REFUSAL) + "<|return|>",
    ]
    seen = {}

    def fake(model, prompts, skip_special_tokens=True, **kw):
        seen["skip"] = skip_special_tokens
        return written[: len(prompts)]

    monkeypatch.setattr(rollouts, "generate", fake)
    table = rollout(harmony_model, ["Do X?", "Do Y?"], progress=False)
    assert seen["skip"] is False  # harmony's markers are special tokens: they must be kept
    assert list(table["thinking"]) == [THINKING, "The user asks about Y."]
    assert list(table["answer"]) == [ANSWER, REFUSAL]
    assert list(table["refused"]) == [False, True]
    heads = answer_starts(harmony_model, ["Do X?"])
    assert heads[0].endswith(f"<|start|>assistant{HARMONY.opener}{THINKING}{HARMONY.marker}")


def test_read_traces_writes_and_judges_in_the_models_format(harmony_model, tmp_path):
    path = tmp_path / "traces.jsonl"
    rows = [{"prompt": "Do X?", "thinking": THINKING, "answer": ANSWER}]
    rows.append({"prompt": "Do Y?", "response": HARMONY.response_text("Fine.", REFUSAL)})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    table = read_traces(str(path), harmony_model)
    assert table["response"][0] == HARMONY.response_text(THINKING, ANSWER)
    assert list(table["refused"]) == [False, True]


def test_answer_starts_with_thinking_off_is_the_prompt():
    m = tiny_model("llama")
    m.tokenizer = tokenizer(QWEN3_TEMPLATE)
    m.thinking = QWEN3_NO_THINK
    assert answer_starts(m, ["Do X?"]) == [m.chat("Do X?")]


def test_fine_tuning_examples_use_the_format():
    m = tiny_model("llama")
    m.tokenizer = tokenizer(BRACKET_TEMPLATE)
    m.thinking = BRACKET_THINK
    ids, n_prompt = encode_example(m, PROMPT, THINKING, ANSWER)
    tail = m.tokenizer.decode(ids[n_prompt:], skip_special_tokens=False)
    assert tail == f"[THINK]{THINKING}[/THINK]{ANSWER}<|im_end|>"


def test_model_chat_and_generate_follow_the_format():
    """``Model.chat`` passes the format's template switches; ``generate`` keeps its markers."""
    from thinklens.formats import QWEN3_NO_THINK
    from thinklens.generation import generate
    from thinklens.testing import QWEN3_TEMPLATE, tiny_model

    m = tiny_model("qwen3", backend="nnsight")
    m.tokenizer.chat_template = QWEN3_TEMPLATE
    thinking_on = m.chat("Hi")
    m.thinking = QWEN3_NO_THINK
    assert m.chat("Hi") != thinking_on and "</think>" in m.chat("Hi")
    assert len(generate(m, ["Hi"], max_new_tokens=2)) == 1


def test_chat_ids_are_the_chat_text_tokenized_without_added_specials():
    m = tiny_model("llama")
    ids = m.chat_ids(["Hi", "How are you?"])
    assert [m.tokenizer.decode(x, skip_special_tokens=False) for x in ids] == [
        m.chat("Hi"),
        m.chat("How are you?"),
    ]
    assert ids[0] == m.tokenizer(m.chat("Hi"), add_special_tokens=False)["input_ids"]

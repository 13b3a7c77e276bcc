"""Reasoning traces: lay out prompt, thinking and answer as one token sequence with part spans.

A trace is the chat template applied to the user prompt (with the generation prompt), then the
thinking between the format's markers (see `thinklens.formats`), then the answer. It is
tokenized once, and each part's token range is recovered from the character offsets, so
positions such as "last thinking token" or "first answer token" can be read straight from
`Trace.spans`.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from thinklens.formats import FORMATS, THINK, ThinkingFormat, render_prompt

__all__ = [
    "DEFAULT_FORMAT",
    "PARTS",
    "ThinkingFormat",
    "Trace",
    "build_trace",
    "build_traces",
    "split_response",
    "token_bounds",
]

#: Names of the parts of a trace, in order; their spans tile the token sequence.
PARTS: tuple[str, ...] = ("prompt", "thinking", "marker", "answer")

#: The format of models whose family row names none: ``<think>...</think>``.
DEFAULT_FORMAT = THINK


@dataclass
class Trace:
    """One tokenized trace and the half-open token range of each of its parts."""

    text: str
    input_ids: list[int]
    spans: dict[str, tuple[int, int]]
    prompt: str
    thinking: str | None
    answer: str | None

    def part_ids(self, part: str) -> list[int]:
        """Token ids of one part (`"prompt"`, `"thinking"`, `"marker"` or `"answer"`)."""
        start, end = self.spans[part]
        return self.input_ids[start:end]


def token_bounds(offsets: Sequence[tuple[int, int]], char_bounds: Sequence[int]) -> list[int]:
    """Map character boundaries to token boundaries: a token belongs to the part it starts in."""
    starts: list[int] = []
    prev_start, prev_end = 0, 0
    for start, end in offsets:
        # Some tokenizers give special tokens empty (0, 0) offsets; keep them where they sit.
        if start == end:
            start = prev_end
        start = max(start, prev_start)
        starts.append(start)
        prev_start, prev_end = start, max(end, prev_end)
    return [bisect_left(starts, b) for b in char_bounds]


def build_trace(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    thinking: str | None = None,
    answer: str | None = None,
    system: str | None = None,
    fmt: ThinkingFormat = DEFAULT_FORMAT,
    require_thinking: bool = False,
    plain_template: bool = False,
    chat_template: str | None = None,
) -> Trace:
    """Lay out template(prompt), thinking and answer; tokenize once and locate each part.

    The open marker (added here, or already emitted by the template) counts as prompt; the
    marker part is the format's closing text (for ``<think>``: the newline before the close
    marker, the marker and the blank line after it; for harmony: ``<|end|>`` up to the final
    channel's ``<|message|>``). Without thinking the thinking and marker spans are empty
    ranges at the end of the prompt, except with a format whose template writes an empty
    thinking block itself (thinking switched off): that block's close is the marker.
    """
    if require_thinking and not (thinking and thinking.strip()):
        raise ValueError(
            "require_thinking=True but no thinking text was given: pass thinking=... "
            "(the model's reasoning without the markers) or set require_thinking=False"
        )
    head = render_prompt(tokenizer, prompt, system, fmt, chat_template, plain_template)
    answer_text = answer if answer is not None else ""
    if fmt.template_closes_thinking:
        head, think_text, marker_text = _closed_by_template(head, thinking, fmt)
        thinking = ""
    elif thinking is not None:
        # A template that already opens the thinking (R1-style) must not get a second opener.
        head += "" if fmt.opened_by(head) else fmt.opener
        think_text, marker_text = thinking, fmt.marker
    else:
        think_text = marker_text = ""
        if answer is not None:
            head += fmt.answer_open  # e.g. harmony's final-channel header, counted as prompt
    pieces = [head, think_text, marker_text, answer_text]
    text = "".join(pieces)
    char_bounds, pos = [], 0
    for piece in pieces:
        pos += len(piece)
        char_bounds.append(pos)

    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise ValueError("build_trace needs a fast tokenizer (one that returns offsets)") from err
    input_ids: list[int] = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    ends = token_bounds(offsets, char_bounds)
    ends[-1] = len(input_ids)  # every token lies before the end of the text
    spans: dict[str, tuple[int, int]] = {}
    start = 0
    for name, end in zip(PARTS, ends, strict=True):
        spans[name] = (start, end)
        start = end
    bounds = [s for span in spans.values() for s in span]
    if (
        bounds[0] != 0
        or bounds[-1] != len(input_ids)
        or any(a > b for a, b in zip(bounds, bounds[1:], strict=False))
    ):
        raise RuntimeError(f"spans {spans} do not tile [0, {len(input_ids)})")
    return Trace(text, input_ids, spans, prompt, thinking, answer)


def _closed_by_template(
    head: str, thinking: str | None, fmt: ThinkingFormat
) -> tuple[str, str, str]:
    """Split a generation prompt that ends with an empty thinking block into prompt and marker."""
    if thinking:
        raise ValueError(
            "this format's template closes the thinking itself (thinking switched off), so a "
            "trace cannot hold thinking text: pass thinking=None, or use the format with "
            "thinking on (e.g. 'qwen3' instead of 'qwen3-no-think')"
        )
    m = re.search(r"\n*" + re.escape(fmt.close) + r"\s*$", head)
    if m is None:
        raise ValueError(
            f"the format expects the chat template to end its generation prompt with "
            f"{fmt.close!r} (an empty thinking block), but it does not: the template ignores "
            f"{fmt.chat_kwargs or fmt.system_flag}. Use a format with thinking on, or a "
            f"template that switches thinking off"
        )
    return head[: m.start()], "", head[m.start() :]


def build_traces(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    thinkings: Sequence[str | None] | None = None,
    answers: Sequence[str | None] | None = None,
    **kw: Any,
) -> list[Trace]:
    """Build one trace per prompt; `thinkings` and `answers` must match `prompts` in length."""
    if len(prompts) == 0:
        raise ValueError("no prompts")
    n = len(prompts)
    for name, seq in (("thinkings", thinkings), ("answers", answers)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} items but there are {n} prompts")
    thinkings = thinkings if thinkings is not None else [None] * n
    answers = answers if answers is not None else [None] * n
    return [
        build_trace(tokenizer, p, thinking=t, answer=a, **kw)
        for p, t, a in zip(prompts, thinkings, answers, strict=True)
    ]


def split_response(
    response: str, fmt: ThinkingFormat = DEFAULT_FORMAT, require_marker: bool = False
) -> tuple[str | None, str]:
    """Split a generated response into (thinking, answer) at the format's close marker."""
    thinking, answer = fmt.split(response)
    if thinking is None and require_marker:
        raise ValueError(
            f"the trace has no closing thinking marker {fmt.close!r}: if this model ends its "
            f"thinking differently pass fmt=thinklens.formats.format_named(NAME) (names: "
            f"{', '.join(FORMATS)}) or fmt=ThinkingFormat(open=..., close=...), or "
            f"require_marker=False to treat the whole response as the answer"
        )
    return thinking, answer

"""Rollouts: the model answers prompts, its responses split into thinking and answer and judged.

Every study that needs the model's own reasoning starts here: ``rollout`` generates and judges,
``traces_of`` lays the rows out as traces, ``read_traces`` reads traces written elsewhere, and
``answer_starts`` gives the text an answer follows (the prompt and the model's own thinking), and
``answer_start_ids`` the exact tokens, for reading the answer's first token.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd

from thinklens.data import load_records
from thinklens.decoding import close_end
from thinklens.evaluation import Judge, MarkerJudge, is_refusal
from thinklens.formats import clean_response, special_markers
from thinklens.generation import continue_ids, generate
from thinklens.model import Model
from thinklens.traces import Trace


def rollout(
    model: Model,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    batch_size: int = 16,
    judge: Judge | None = None,
    progress: bool = True,
    answer_tokens: int | None = None,
) -> pd.DataFrame:
    """Greedy responses with their thinking, answer and refusal verdict, one row per prompt.

    ``answer_tokens``: stop a response that many tokens after its thinking closes (enough to
    judge a refusal by its opening; see `generate`)."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given: a rollout needs at least one prompt")
    responses = _responses(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        answer_tokens=answer_tokens,
    )
    judge = judge or MarkerJudge(fmt=model.thinking)
    parts = [model.thinking.split(r) for r in responses]
    return pd.DataFrame(
        dict(
            prompt=prompts,
            response=responses,
            thinking=[t for t, _ in parts],
            answer=[a for _, a in parts],
            refused=judge(prompts, responses),
        )
    )


def _responses(model: Model, prompts: Sequence[str], **kw: Any) -> list[str]:
    """Greedy responses, with the special tokens the format's markers are made of kept.

    Skipping special tokens would erase markers such as harmony's channels or ``[THINK]``,
    and the split into thinking and answer with them.
    """
    fmt = model.thinking
    if not special_markers(model.tokenizer, fmt):
        return generate(model, prompts, **kw)
    outs = generate(model, prompts, skip_special_tokens=False, **kw)
    return [clean_response(o, model.tokenizer, fmt) for o in outs]


def traces_of(model: Model, table: pd.DataFrame, answers: bool = True) -> list[Trace]:
    """Traces of the rows that closed their thinking (others are skipped with a warning)."""
    keep = table["thinking"].notna()
    if not keep.all():
        warnings.warn(
            f"{int((~keep).sum())} of {len(table)} responses never closed their thinking "
            f"({model.thinking.close!r}) and are left out",
            stacklevel=2,
        )
    return [
        model.trace(r.prompt, r.thinking, r.answer if answers else None)
        for r in table[keep].itertuples()
    ]


def read_traces(source: str, fmt_model: Model, limit: int | None = None) -> pd.DataFrame:
    """A rollout-like table from a JSONL/JSON/CSV of traces.

    Each record has ``prompt`` and either ``response`` (thinking, close marker and answer) or
    ``thinking`` (and optionally ``answer``); other fields (``group``, ids) are kept. Refusal
    is read from the answer unless the record gives ``refused``.
    """
    rows = load_records(source, limit=limit)
    fmt = fmt_model.thinking
    for n, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"trace {n} of {source} has no 'prompt' field; each needs its prompt")
        if isinstance(row.get("response"), str):
            row["thinking"], row["answer"] = fmt.split(row["response"])
        elif isinstance(row.get("thinking"), str):
            row["answer"] = row.get("answer") or ""
            row["response"] = fmt.response_text(row["thinking"], row["answer"])
        else:
            raise ValueError(
                f"trace {n} of {source} has neither 'response' nor 'thinking': give the "
                f"model's response (with its {fmt.close!r} marker) or its thinking and answer"
            )
    table = pd.DataFrame(rows)
    if "refused" not in table:
        table["refused"] = [is_refusal(r, fmt) for r in table["response"]]
    return table


def model_thinks(model: Model, prompts: Sequence[str], max_new_tokens: int = 8) -> bool:
    """Whether the model opens its thinking before answering (greedy, first two prompts)."""
    fmt = model.thinking
    if fmt.template_opens_thinking or fmt.template_closes_thinking:
        return fmt.template_opens_thinking
    outs = _responses(model, list(prompts[:2]), max_new_tokens=max_new_tokens)
    return all(fmt.opens(o) for o in outs)


def answer_starts(
    model: Model, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 8
) -> list[str]:
    """Each prompt in the chat template, then the model's own greedy thinking up to and
    including the closing marker (and the blank lines after it): the text the answer follows.

    Thinking that does not close within ``max_new_tokens`` is closed where it stops; with
    thinking switched off (the template closed it) the answer follows the prompt. For the
    next-token distribution at the answer start use ``answer_start_ids`` (see there why).
    """
    fmt = model.thinking
    if fmt.template_closes_thinking:
        return [model.chat(p) for p in prompts]
    outs = _responses(model, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size)
    texts = []
    for p, o in zip(prompts, outs, strict=True):
        m = re.search(re.escape(fmt.close) + r"\n*", o)
        head = o[: m.end()] if m else o.rstrip() + fmt.marker
        texts.append(model.chat(p) + head)
    return texts


def answer_start_ids(
    model: Model, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 16
) -> list[list[int]]:
    """Token ids of each prompt in the chat template, the model's greedy thinking up to the
    token that closes it, and the whitespace tokens the model writes next: what the answer's
    first word follows, exactly as the model generated it.

    Unlike the text of ``answer_starts``, this does not tokenize back: the newlines after a
    marker end a text as one merged token the model never produces there, so the next-token
    distribution after that text is not the model's own answer start. Thinking still open after
    ``max_new_tokens`` is closed with the format's marker; a template that closes the thinking
    leaves the prompt alone.
    """
    tok, fmt = model.tokenizer, model.thinking
    prompt_ids = model.chat_ids(prompts)
    if fmt.template_closes_thinking:
        return prompt_ids
    # A few tokens past the marker: the newlines the model writes before its first word.
    news = continue_ids(model, prompt_ids, max_new_tokens + 4, batch_size, answer_tokens=4)
    out = []
    for ids, new in zip(prompt_ids, news, strict=True):
        end = close_end(tok, new, fmt.close)
        if end is None or end > max_new_tokens:
            new = new[:max_new_tokens] + tok(fmt.marker, add_special_tokens=False)["input_ids"]
            end = len(new)
        while end < len(new) and not tok.decode(new[end : end + 1]).strip():
            end += 1
        out.append(ids + new[:end])
    return out


def prompt_texts(
    model: Model, prompts: Sequence[str], thinking: bool, max_new_tokens: int = 128
) -> list[str] | list[list[int]]:
    """Where the answer starts: the templated prompt, or (thinking) the exact tokens of the
    prompt and the model's own thinking (``answer_start_ids``); ``Model.logits`` reads both."""
    if thinking:
        return answer_start_ids(model, prompts, max_new_tokens=max_new_tokens)
    return [model.chat(p) for p in prompts]

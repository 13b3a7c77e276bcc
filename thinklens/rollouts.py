"""Rollouts: the model answers prompts, its responses split into thinking and answer and judged.

Every study that needs the model's own reasoning starts here: ``rollout`` generates and judges,
``traces_of`` lays the rows out as traces, ``read_traces`` reads traces written elsewhere, and
``answer_starts`` gives the text an answer follows (the prompt and the model's own thinking).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import pandas as pd

from thinklens.data import load_records
from thinklens.evaluation import Judge, MarkerJudge, is_refusal
from thinklens.generation import generate
from thinklens.model import Model
from thinklens.traces import Trace


def rollout(
    model: Model,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    batch_size: int = 16,
    judge: Judge | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Greedy responses with their thinking, answer and refusal verdict, one row per prompt."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given: a rollout needs at least one prompt")
    responses = generate(
        model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
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
            row["response"] = f"{fmt.open}\n{row['thinking']}\n{fmt.close}\n\n{row['answer']}"
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
    if fmt.template_opens_thinking:
        return True
    outs = generate(model, list(prompts[:2]), max_new_tokens=max_new_tokens)
    return all(o.lstrip().startswith(fmt.open) for o in outs)


def answer_starts(
    model: Model, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 8
) -> list[str]:
    """Each prompt in the chat template, then the model's own greedy thinking up to and
    including the close marker and the blank line after it: the text the answer follows.

    Thinking that does not close within ``max_new_tokens`` is closed where it stops.
    """
    fmt = model.thinking
    outs = generate(model, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size)
    texts = []
    for p, o in zip(prompts, outs, strict=True):
        m = re.search(re.escape(fmt.close) + r"\n*", o)
        head = o[: m.end()] if m else f"{o.rstrip()}\n{fmt.close}\n\n"
        texts.append(model.chat(p) + head)
    return texts


def prompt_texts(
    model: Model, prompts: Sequence[str], thinking: bool, max_new_tokens: int = 128
) -> list[str]:
    """Where the answer starts: the templated prompt, or (thinking) after the own thinking."""
    if thinking:
        return answer_starts(model, prompts, max_new_tokens=max_new_tokens)
    return [model.chat(p) for p in prompts]

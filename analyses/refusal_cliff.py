"""The refusal-cliff study end to end: rollouts, behaviour labels, probe, cliffs by group.

1. ``rollout``: the model answers each prompt (greedy); responses are split into thinking and
   answer and judged (refusal read in the answer only).
2. ``behaviour_labels``: as published, label 1 = harmful prompts the model refused with
   non-trivial thinking, label 0 = benign prompts; the probe reads prompt + thinking + marker
   at its last position (``positions="last"``) or at every window position (``"window"``).
3. ``cliff_by_group``: every token of every trace scored, the cliff of each trace, curves
   aligned at the answer, and the groups (refused harmful, complied harmful, harmless) compared.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from thinklens.evaluation import Judge, MarkerJudge
from thinklens.generation import generate
from thinklens.model import Model
from thinklens.probes.cliff import cliff_table, end_aligned, window_span
from thinklens.probes.probe import RefusalProbe
from thinklens.probes.scoring import score_tokens
from thinklens.stats import compare
from thinklens.traces import Trace

#: Group names of the study, in plotting order.
GROUPS = ("refused harmful", "complied harmful", "harmless")

#: Where a behaviour-labelled probe is trained: the published last position of prompt +
#: thinking + marker, or every position of the window (thinking + marker).
ProbePositions = Literal["last", "window"]


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


def _labelled_rows(
    harmful: pd.DataFrame,
    benign: pd.DataFrame,
    min_thinking_words: int,
    max_per_class: int,
    complied_negative: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The refused harmful rows (label 1) and the benign rows (label 0)."""
    if complied_negative:
        complied = harmful[~harmful["refused"]]
        benign = pd.concat([benign, complied], ignore_index=True)
    refused = harmful[
        harmful["refused"]
        & harmful["thinking"].notna()
        & (harmful["thinking"].fillna("").str.split().str.len() >= min_thinking_words)
    ].head(max_per_class)
    ok = benign[benign["thinking"].notna()].head(max_per_class)
    if refused.empty or ok.empty:
        raise ValueError(
            f"behaviour labels need refused harmful and benign traces with thinking; got "
            f"{len(refused)} refused harmful and {len(ok)} benign: use more prompts, a model "
            "that refuses some of them, or give labels yourself (RefusalProbe.train)"
        )
    return refused, ok


def behaviour_labels(
    model: Model,
    harmful: pd.DataFrame,
    benign: pd.DataFrame,
    min_thinking_words: int = 5,
    max_per_class: int = 200,
    complied_negative: bool = False,
) -> tuple[list[str], list[int]]:
    """Probe texts (prompt + thinking + marker) and labels from the model's own behaviour.

    Published: 1 = refused harmful, 0 = benign. With ``complied_negative`` the harmful traces
    the model answered are labelled 0 too. Each text ends at the marker, as published; its
    tokenizer may merge the marker's closing newlines into one token that a trace with an
    answer after it splits (as the model wrote it), so ``score_tokens`` reads the last marker
    position at another token than the probe was trained on: on organism-cliff the probe
    separates the groups at its own token (refused 0.975, complied 0.003, harmless 0.005) but
    not at the scored one (1.000 / 0.927 / 0.729; benchmarks/results/refusal_cliff.txt).
    ``behaviour_traces`` and the window probe read the traces' own tokens.
    """
    refused, ok = _labelled_rows(
        harmful, benign, min_thinking_words, max_per_class, complied_negative
    )
    texts = [t.text for t in traces_of(model, refused, answers=False)]
    texts += [t.text for t in traces_of(model, ok, answers=False)]
    return texts, [1] * len(refused) + [0] * len(ok)


def behaviour_traces(
    model: Model,
    harmful: pd.DataFrame,
    benign: pd.DataFrame,
    min_thinking_words: int = 5,
    max_per_class: int = 200,
) -> tuple[list[Trace], list[int]]:
    """The traces (with their answers) and labels of ``behaviour_labels``.

    With the answer after it, the marker is tokenized as the model wrote it and as
    ``cliff_by_group`` scores it (a text that ends at the marker can merge its last newlines
    into one token the model never produced there).
    """
    refused, ok = _labelled_rows(harmful, benign, min_thinking_words, max_per_class, False)
    traces = traces_of(model, refused) + traces_of(model, ok)
    return traces, [1] * len(refused) + [0] * len(ok)


def probe_from_rollouts(
    model: Model,
    table: pd.DataFrame,
    positions: ProbePositions = "last",
    layer: int = -1,
    progress: bool = True,
    **train_kw: Any,
) -> RefusalProbe:
    """A probe on behaviour labels of ``rollout`` rows (``group``: harmful or harmless).

    ``positions="last"`` is the published recipe. ``"window"`` trains on every thinking and
    marker position of the refused harmful (1) and benign (0) traces: the model refuses
    after those thinkings and not after these, so every position of them has a known
    intent; complied harmful traces are left out, as their intent turns inside the window,
    which is what the cliff measures.
    """
    harmful = table[table["group"] != "harmless"]
    benign = table[table["group"] == "harmless"]
    if positions == "last":
        texts, labels = behaviour_labels(model, harmful, benign)
        return RefusalProbe.train(model, texts, labels, layer=layer, progress=progress, **train_kw)
    if positions != "window":
        raise ValueError(f"unknown probe positions {positions!r}; choose 'last' or 'window'")
    traces, labels = behaviour_traces(model, harmful, benign)
    return RefusalProbe.train(
        model,
        [t.text for t in traces],
        labels,
        layer=layer,
        progress=progress,
        spans=[window_span(t) for t in traces],
        **train_kw,
    )


def train_from_behaviour(
    model: Model,
    harmful: Sequence[str],
    benign: Sequence[str],
    layer: int = -1,
    max_new_tokens: int = 128,
    progress: bool = True,
    positions: ProbePositions = "last",
    **train_kw: Any,
) -> tuple[RefusalProbe, pd.DataFrame]:
    """Roll out both prompt sets, label by behaviour and train a probe (published recipe).

    ``positions="window"`` trains on every window position instead (``probe_from_rollouts``).
    """
    h = rollout(model, harmful, max_new_tokens, progress=progress).assign(group="harmful")
    b = rollout(model, benign, max_new_tokens, progress=progress).assign(group="harmless")
    table = pd.concat([h, b], ignore_index=True)
    probe = probe_from_rollouts(model, table, positions, layer, progress, **train_kw)
    return probe, table


def read_traces(source: str, fmt_model: Model, limit: int | None = None) -> pd.DataFrame:
    """A rollout-like table from a JSONL/JSON/CSV of traces.

    Each record has ``prompt`` and either ``response`` (thinking, close marker and answer) or
    ``thinking`` (and optionally ``answer``); other fields (``group``, ids) are kept. Refusal
    is read from the answer unless the record gives ``refused``.
    """
    from thinklens.data import load_records
    from thinklens.evaluation import is_refusal

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


@dataclass
class CliffResult:
    """Token scores, per-trace cliffs, end-aligned curves and group comparisons."""

    scores: pd.DataFrame
    cliffs: pd.DataFrame
    curves: pd.DataFrame
    comparisons: pd.DataFrame


def study_group(row: Any) -> str:
    """``refused harmful``, ``complied harmful`` or ``harmless`` for a rollout row."""
    if row.group == "harmless":
        return "harmless"
    return "refused harmful" if row.refused else "complied harmful"


def cliff_by_group(
    model: Model,
    probe: RefusalProbe,
    table: pd.DataFrame,
    k: int = 8,
    window: int | None = 64,
    batch_size: int = 8,
    progress: bool = True,
) -> CliffResult:
    """Score every token of every rollout, measure cliffs and compare the study's groups.

    ``table`` is ``rollout`` output with a ``group`` column (``harmful`` or ``harmless``).
    Comparisons: complied harmful against each other group, on ``cliff`` and on the
    published proxy (``last_score``), with bootstrap intervals, Cohen's d and rank AUC.
    """
    kept = table[table["thinking"].notna()].reset_index(drop=True)
    traces = traces_of(model, kept)
    scores = score_tokens(model, probe, traces, batch_size=batch_size, progress=progress)
    groups = [study_group(r) for r in kept.itertuples()]
    cliffs = cliff_table(scores, k=k).assign(group=groups, prompt=kept["prompt"])
    curves = end_aligned(scores, dict(enumerate(groups)), window=window)
    rows = []
    for other in ("refused harmful", "harmless"):
        for metric in ("cliff", "last_score"):
            a = cliffs.loc[cliffs["group"] == "complied harmful", metric]
            b = cliffs.loc[cliffs["group"] == other, metric]
            if a.notna().any() and b.notna().any():
                rows.append(dict(metric=metric, a="complied harmful", b=other, **compare(a, b)))
    return CliffResult(scores, cliffs, curves, pd.DataFrame(rows))

"""Refusal probes trained on the model's own behaviour, with the published labels.

Label 1 = harmful prompts the model refused with non-trivial thinking, label 0 = benign
prompts; the probe reads prompt + thinking + marker at its last position (``"last"``) or at
every window position (``"window"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from thinklens.model import Model
from thinklens.probes.cliff import window_span
from thinklens.probes.probe import RefusalProbe
from thinklens.rollouts import rollout, traces_of
from thinklens.traces import Trace

#: Where a behaviour-labelled probe is trained: the published last position of prompt +
#: thinking + marker, or every position of the window (thinking + marker).
ProbePositions = Literal["last", "window"]


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
    protocol: Literal["thinklens", "published"] = "thinklens",
) -> tuple[list[str], list[int]]:
    """Probe texts (prompt + thinking + marker) and labels from the model's own behaviour.

    ``protocol="published"`` writes each text as the refusal-cliff code does
    (``published_probe_text``); thinklens's texts are the model's traces laid out by its chat
    and thinking format (no blank line after the opener).

    Published: 1 = refused harmful, 0 = benign. With ``complied_negative`` the harmful traces
    the model answered are labelled 0 too. Each text ends at the marker, as published; its
    tokenizer may merge the marker's closing newlines into one token that a trace with an
    answer after it splits (as the model wrote it), so ``score_tokens`` reads the last marker
    position at another token than the probe was trained on: on organism-turn the probe
    separates the groups at its own token (refused 0.975, complied 0.003, harmless 0.005) but
    not at the scored one (1.000 / 0.927 / 0.729; benchmarks/results/refusal_cliff_turn.txt).
    ``behaviour_traces`` and the window probe read the traces' own tokens.
    """
    refused, ok = _labelled_rows(
        harmful, benign, min_thinking_words, max_per_class, complied_negative
    )
    if protocol == "published":
        rows = pd.concat([refused, ok])
        texts = [published_probe_text(model, r.prompt, r.thinking) for r in rows.itertuples()]
    elif protocol == "thinklens":
        texts = [t.text for t in traces_of(model, refused, answers=False)]
        texts += [t.text for t in traces_of(model, ok, answers=False)]
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose 'thinklens' or 'published'")
    return texts, [1] * len(refused) + [0] * len(ok)


def published_probe_text(model: Model, prompt: str, thinking: str) -> str:
    """The refusal-cliff code's probe input: the chat template of the prompt with the generation
    prompt, a blank line, the thinking (trailing newlines dropped), then the closing marker on
    its own line and a blank line (``template + "\n\n" + thinking + "\n</think>\n\n"``).

    The published code tokenizes it with ``add_special_tokens=True``, which may add a second BOS
    token before the template's own; thinklens reads texts with ``add_special_tokens=False``.
    """
    close = model.thinking.close
    return model.chat(prompt) + "\n\n" + thinking.rstrip("\n") + f"\n{close}\n\n"


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

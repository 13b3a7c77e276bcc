"""The refusal-cliff study end to end: rollouts, behaviour labels, probe, cliffs by group.

1. ``rollout``: the model answers each prompt (greedy); responses are split into thinking and
   answer and judged (refusal read in the answer only).
2. ``behaviour_labels``: the published labels, 1 = harmful prompts the model refused with
   non-trivial thinking, label 0 = benign prompts; the probe reads prompt + thinking + marker
   at its last position (``positions="last"``) or at every window position (``"window"``).
3. ``cliff_by_group``: every token of every trace scored, the cliff of each trace, curves
   aligned at the answer, and the groups (refused harmful, complied harmful, harmless) compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from thinklens.model import Model
from thinklens.probes.cliff import cliff_table, end_aligned
from thinklens.probes.probe import RefusalProbe
from thinklens.probes.scoring import score_tokens
from thinklens.rollouts import traces_of
from thinklens.stats import compare

#: Group names of the study, in plotting order.
GROUPS = ("refused harmful", "complied harmful", "harmless")


@dataclass
class CliffResult:
    """Token scores, per-trace cliffs, end-aligned curves and group comparisons."""

    scores: pd.DataFrame
    cliffs: pd.DataFrame
    curves: pd.DataFrame
    comparisons: pd.DataFrame

    def with_k(self, k: int) -> CliffResult:
        """The same token scores read with another ``k`` (no scoring again)."""
        cliffs = cliff_table(self.scores, k=k).assign(
            group=self.cliffs["group"].to_numpy(), prompt=self.cliffs["prompt"].to_numpy()
        )
        return CliffResult(self.scores, cliffs, self.curves, compare_groups(cliffs))


def compare_groups(cliffs: pd.DataFrame) -> pd.DataFrame:
    """Complied harmful against each other group on ``cliff``, ``last_score`` and
    ``thinking_mean``: bootstrap intervals, Cohen's d and rank AUC."""
    rows = []
    for other in ("refused harmful", "harmless"):
        for metric in ("cliff", "last_score", "thinking_mean"):
            a = cliffs.loc[cliffs["group"] == "complied harmful", metric]
            b = cliffs.loc[cliffs["group"] == other, metric]
            if a.notna().any() and b.notna().any():
                rows.append(dict(metric=metric, a="complied harmful", b=other, **compare(a, b)))
    return pd.DataFrame(rows)


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

    A probe trained at the last position of texts that end at the closing marker (the
    published recipe) is read on those same texts, the traces without their answers: a
    tokenizer may merge the marker's last newlines into one token when nothing follows (as
    SmolLM2's does), so with the answer after them the last position before it would be a token
    the probe never saw. A probe trained on the traces' own positions (the window probe) reads
    the traces with their answers.
    """
    kept = table[table["thinking"].notna()].reset_index(drop=True)
    traces = traces_of(model, kept, answers=probe.meta.get("positions") != "last")
    scores = score_tokens(model, probe, traces, batch_size=batch_size, progress=progress)
    groups = [study_group(r) for r in kept.itertuples()]
    cliffs = cliff_table(scores, k=k).assign(group=groups, prompt=kept["prompt"])
    curves = end_aligned(scores, dict(enumerate(groups)), window=window)
    return CliffResult(scores, cliffs, curves, compare_groups(cliffs))

"""HeadScores: one score per attention head (layers x heads), its ranking and its top heads.

Every scoring method (direct, exact ablation, attribution patching) returns this one type. The
sign convention is the same for all of them: a head's score is its contribution to the metric
(the refusal probe, or the refusal-token log-odds), so a negative score means the head pushes
refusal down. Ranking ``"ascending"`` (the default) puts the refusal-suppression heads first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from thinklens.interventions.edits import HeadAblation
from thinklens.tables import read_table

#: How to rank heads: most negative first (suppressors), most positive first, or largest |score|.
Order = Literal["ascending", "descending", "abs"]
ORDERS = ("ascending", "descending", "abs")

Head = tuple[int, int]


def head_count(n_total: int, k: int | None = None, fraction: float | None = None) -> int:
    """How many heads ``k`` or ``fraction`` of ``n_total`` means (a fraction rounds, at least 1)."""
    if (k is None) == (fraction is None):
        raise ValueError("give exactly one of k (a head count) or fraction (of all heads)")
    if fraction is not None:
        if isinstance(fraction, bool) or not 0 < fraction <= 1:
            raise ValueError(
                f"fraction {fraction} is outside (0, 1]: write 3% as 0.03 (all heads is 1.0)"
            )
        return max(1, round(fraction * n_total))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_total:
        raise ValueError(f"k={k!r} heads: choose an integer from 1 to {n_total} (all heads)")
    return k


def random_heads(
    n_layers: int, n_heads: int, k: int | None = None, fraction: float | None = None, seed: int = 0
) -> list[Head]:
    """``k`` (or ``fraction`` of all) heads drawn uniformly without replacement: the control."""
    n = head_count(n_layers * n_heads, k, fraction)
    picks = random.Random(seed).sample(range(n_layers * n_heads), n)
    return [divmod(i, n_heads) for i in picks]


@dataclass
class HeadScores:
    """Scores of every head of every layer, from one method on one metric.

    Attributes:
        scores: ``[n_layers, n_heads]``, the head's contribution to the metric (mean over texts).
        method: ``"direct"``, ``"ablation"`` or ``"attribution"`` (or any name).
        metric: what was measured, e.g. ``"probe"`` (probe logit) or ``"refusal"``.
    """

    scores: Float[Tensor, "layer head"]
    method: str
    metric: str = "probe"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float64).detach().cpu()
        if self.scores.ndim != 2 or 0 in self.scores.shape:
            raise ValueError(
                f"scores must be a non-empty [n_layers, n_heads] table, got shape "
                f"{tuple(self.scores.shape)}"
            )
        if not torch.isfinite(self.scores).all():
            raise ValueError(f"{self.method} scores hold NaN or infinite values")

    @property
    def n_layers(self) -> int:
        return self.scores.shape[0]

    @property
    def n_heads(self) -> int:
        return self.scores.shape[1]

    @property
    def n_total(self) -> int:
        return self.scores.numel()

    def __getitem__(self, head: Head) -> float:
        layer, h = self.check_head(head)
        return float(self.scores[layer, h])

    def check_head(self, head: Head) -> Head:
        """A (layer, head) pair, or a clear error if it is outside the table."""
        layer, h = head
        if not 0 <= layer < self.n_layers:
            raise IndexError(
                f"layer {layer} is out of range: the scores cover {self.n_layers} layers "
                f"(use 0..{self.n_layers - 1})"
            )
        if not 0 <= h < self.n_heads:
            raise IndexError(
                f"head {h} is out of range: the scores cover {self.n_heads} heads per layer "
                f"(use 0..{self.n_heads - 1})"
            )
        return layer, h

    def _keys(self, order: Order) -> Tensor:
        if order not in ORDERS:
            raise ValueError(f"order {order!r} is unknown: use one of {', '.join(ORDERS)}")
        flat = self.scores.flatten()
        return {"ascending": flat, "descending": -flat, "abs": -flat.abs()}[order]

    def ranked(self, order: Order = "ascending") -> list[Head]:
        """Every head, best first (ties keep layer-major order)."""
        idx = torch.argsort(self._keys(order), stable=True).tolist()
        return [divmod(i, self.n_heads) for i in idx]

    def top(
        self, k: int | None = None, fraction: float | None = None, order: Order = "ascending"
    ) -> list[Head]:
        """The first ``k`` heads of the ranking, or the first ``fraction`` of all heads."""
        return self.ranked(order)[: head_count(self.n_total, k, fraction)]

    def ablation(
        self,
        k: int | None = None,
        fraction: float | None = None,
        mode: Literal["zero", "mean", "scale"] = "scale",
        order: Order = "ascending",
        **kw: Any,
    ) -> HeadAblation:
        """A ``HeadAblation`` of the top heads (``scale`` = the published norm-restoring one)."""
        return HeadAblation(self.top(k, fraction, order), mode=mode, **kw)

    def frame(self, order: Order = "ascending") -> pd.DataFrame:
        """One row per head: ``layer``, ``head``, ``score``, ``rank`` (0 = first), ``method``."""
        rank = torch.empty(self.n_total, dtype=torch.long)
        rank[torch.argsort(self._keys(order), stable=True)] = torch.arange(self.n_total)
        layers, heads = torch.meshgrid(
            torch.arange(self.n_layers), torch.arange(self.n_heads), indexing="ij"
        )
        return pd.DataFrame(
            dict(
                layer=layers.flatten().numpy(),
                head=heads.flatten().numpy(),
                score=self.scores.flatten().numpy(),
                rank=rank.numpy(),
                method=self.method,
                metric=self.metric,
            )
        )

    def agreement(self, other: HeadScores, k: int = 10, order: Order = "ascending") -> dict:
        """Spearman correlation over all heads and the overlap of the two top-``k`` sets."""
        from scipy.stats import spearmanr

        if self.scores.shape != other.scores.shape:
            raise ValueError(
                f"cannot compare scores of shapes {tuple(self.scores.shape)} and "
                f"{tuple(other.scores.shape)}: they come from different models"
            )
        rho = spearmanr(self.scores.flatten().numpy(), other.scores.flatten().numpy()).statistic
        shared = set(self.top(k, order=order)) & set(other.top(k, order=order))
        return dict(spearman=float(rho), top_overlap=len(shared), k=k)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, method: str | None = None) -> HeadScores:
        """Scores back from ``frame()`` output (one method; pick it when the table has several)."""
        need = {"layer", "head", "score"}
        if not need <= set(df.columns):
            raise ValueError(f"a head-score table needs columns {sorted(need)}, has {list(df)}")
        if "method" in df:
            methods = sorted(df["method"].unique())
            if method is None and len(methods) > 1:
                raise ValueError(f"the table holds methods {methods}: choose one with method=")
            method = method or methods[0]
            if method not in methods:
                raise ValueError(f"method {method!r} is not in the table (it has {methods})")
            df = df[df["method"] == method]
        n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
        if len(df) != n_layers * n_heads:
            raise ValueError(f"the table has {len(df)} rows, not {n_layers} x {n_heads} heads")
        scores = torch.full((n_layers, n_heads), float("nan"), dtype=torch.float64)
        layers, heads = (
            torch.tensor(df[c].to_numpy(dtype="int64", copy=True)) for c in ("layer", "head")
        )
        scores[layers, heads] = torch.tensor(df["score"].to_numpy(dtype=float, copy=True))
        metric = str(df["metric"].iloc[0]) if "metric" in df else "probe"
        return cls(scores, method or "scores", metric)

    @classmethod
    def load(cls, path: str | Path, method: str | None = None) -> HeadScores:
        """Scores from a table written by ``write_table(scores.frame(), path)``."""
        return cls.from_frame(read_table(path), method)


def fraction_label(fraction: float) -> str:
    """``0.03`` -> ``"3%"`` (for tables and legends)."""
    return f"{fraction * 100:.3g}%"

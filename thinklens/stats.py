"""Comparing two groups of numbers: effect size, rank AUC and a bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _clean(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[~np.isnan(a)]


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float:
    """(mean a - mean b) / pooled standard deviation (ddof 1); NaN values are dropped."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return float((a.mean() - b.mean()) / np.sqrt(pooled)) if pooled > 0 else float("nan")


def rank_auc(a: Sequence[float], b: Sequence[float]) -> float:
    """P(a > b) + P(a = b) / 2: the Mann-Whitney U of ``a`` over ``len(a) * len(b)``."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    greater = (a[:, None] > b[None, :]).sum()
    ties = (a[:, None] == b[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(a) * len(b)))


def mean_ci(
    x: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of ``x`` (NaN dropped) with a percentile bootstrap interval."""
    x = _clean(x)
    if len(x) == 0:
        raise ValueError("cannot take the mean of an empty group")
    boots = np.random.default_rng(seed).choice(x, (n_boot, len(x))).mean(1)
    tail = (1 - level) / 2
    return dict(
        mean=float(x.mean()),
        ci_low=float(np.quantile(boots, tail)),
        ci_high=float(np.quantile(boots, 1 - tail)),
        n=float(len(x)),
    )


def compare(
    a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean difference a - b with a percentile bootstrap interval, Cohen's d and rank AUC."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"cannot compare an empty group (sizes {len(a)} and {len(b)})")
    rng = np.random.default_rng(seed)
    boots = rng.choice(a, (n_boot, len(a))).mean(1) - rng.choice(b, (n_boot, len(b))).mean(1)
    tail = (1 - level) / 2
    return dict(
        diff=float(a.mean() - b.mean()),
        ci_low=float(np.quantile(boots, tail)),
        ci_high=float(np.quantile(boots, 1 - tail)),
        cohens_d=cohens_d(a, b),
        auc=rank_auc(a, b),
        n_a=float(len(a)),
        n_b=float(len(b)),
    )

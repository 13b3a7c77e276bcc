"""The refusal cliff of a scored trace, and end-aligned mean curves.

Definitions (the published code stores only the last-position score; these make the drop
explicit). The *window* is every position of the thinking and the closing marker, i.e. the
tokens between the prompt and the answer. With ``k`` tokens of tail:

- ``tail_mean`` / ``tail_min``: mean and min score over the last ``k`` window positions;
- ``plateau``: mean score over the window before those last ``k``;
- ``cliff = plateau - tail_mean`` (positive when the score falls before the answer);
- ``cliff_at``: where the steepest one-token fall in the window lands, counted from the first
  answer token (-1 = the last token before the answer);
- ``last_score``: the score at the last position before the answer (the published proxy; low
  means a large cliff);
- ``thinking_mean``: mean score over the thinking tokens (the intent held while thinking).

A trace whose thinking is empty, or shorter than ``k + 1`` window tokens, has NaN plateau and
cliff (the tail and the proxy are still defined); it is kept, not dropped, so rows stay aligned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from thinklens.traces import Trace


def window_span(trace: Trace) -> tuple[int, int]:
    """The ``[start, end)`` token range of a trace's window (its thinking and closing marker)."""
    return trace.spans["thinking"][0], trace.spans["marker"][1]


def cliff_table(scores: pd.DataFrame, k: int = 8) -> pd.DataFrame:
    """One row per example of a ``score_tokens`` table with the cliff measures above."""
    if k < 1:
        raise ValueError(f"k must be at least 1 (tokens in the tail), got {k}")
    rows = []
    for ex, g in scores.groupby("example", sort=True):
        g = g.sort_values("position")
        window = g[g["part"].isin(("thinking", "marker"))]["score"].to_numpy()
        before = g[g["from_answer"] < 0]["score"].to_numpy()
        n_think = int((g["part"] == "thinking").sum())
        tail = window[-k:]
        plateau = window[:-k].mean() if len(window) > k and n_think > 0 else np.nan
        tail_mean = tail.mean() if len(tail) else np.nan
        if len(window) > 1:
            drops = np.diff(window)
            cliff_at = int(np.argmin(drops)) + 1 - len(window)
        else:
            cliff_at = np.nan
        rows.append(
            dict(
                example=ex,
                thinking_tokens=n_think,
                plateau=plateau,
                tail_mean=tail_mean,
                tail_min=tail.min() if len(tail) else np.nan,
                cliff=plateau - tail_mean,
                cliff_at=cliff_at,
                last_score=before[-1] if len(before) else np.nan,
                thinking_mean=g.loc[g["part"] == "thinking", "score"].mean() if n_think else np.nan,
            )
        )
    return pd.DataFrame(rows)


def resample(curve: np.ndarray, n_points: int) -> np.ndarray:
    """A curve linearly interpolated onto ``n_points`` evenly spaced points of its span."""
    if len(curve) == 1:
        return np.repeat(curve, n_points)
    return np.interp(np.linspace(0, len(curve) - 1, n_points), np.arange(len(curve)), curve)


def _published_curve(name: str, zero_filled: np.ndarray, n: np.ndarray) -> pd.DataFrame:
    """The published mean curve: every row averaged, zeros included, cubic onto 100 points."""
    from scipy.interpolate import interp1d

    mean = zero_filled.mean(0)
    width = len(mean)
    offset = np.arange(-width, 0, dtype=float)
    if width != 100:
        if width < 4:
            raise ValueError(
                f"the published cubic resampling needs at least 4 aligned tokens, got {width}"
            )
        old, new = np.linspace(0, width - 1, width), np.linspace(0, width - 1, 100)
        cubic = interp1d(old, mean, kind="cubic", bounds_error=False, fill_value="extrapolate")
        mean, offset, n = cubic(new), np.interp(new, old, offset), np.interp(new, old, n)
    return pd.DataFrame(
        dict(
            group=name,
            x=np.linspace(0, 1, 100),
            offset=offset,
            mean=mean,
            lo=np.nan,
            hi=np.nan,
            n=n.astype(float),
        )
    )


def end_aligned(
    scores: pd.DataFrame,
    groups: Mapping[int, str] | None = None,
    window: int | None = None,
    n_points: int = 100,
    protocol: Literal["thinklens", "published"] = "thinklens",
) -> pd.DataFrame:
    """Mean score curves per group over the positions before the answer, aligned at the end.

    Each example's scores over prompt + thinking + marker are right-aligned (so offset -1 is
    the last token before the answer for every example). thinklens averages, at each offset,
    the examples that reach it, and resamples the mean linearly to ``n_points``.
    ``protocol="published"`` does what the refusal-cliff code does: the aligned matrix is
    zero-filled on the left and averaged over every example, zeros included (so the early
    offsets, which only long traces reach, are pulled towards 0), and resampled with cubic
    interpolation onto 100 points (a curve of exactly 100 tokens is left as it is); ``lo`` and
    ``hi`` are then NaN. ``window`` keeps only the last ``window`` tokens.

    Returns columns ``group``, ``x`` (0 = earliest aligned token, 1 = the last one),
    ``offset`` (tokens before the answer, negative), ``mean``, ``lo``/``hi`` (95% normal
    interval of the mean) and ``n`` (examples covering that point).
    """
    if protocol not in ("thinklens", "published"):
        raise ValueError(f"unknown protocol {protocol!r}; choose 'thinklens' or 'published'")
    before = scores[scores["from_answer"] < 0]
    groups = groups or {ex: "all" for ex in before["example"].unique()}
    out = []
    for name in dict.fromkeys(groups.values()):
        members = [ex for ex, gname in groups.items() if gname == name]
        curves = [
            before[before["example"] == ex].sort_values("position")["score"].to_numpy()
            for ex in members
        ]
        curves = [c[-window:] if window else c for c in curves if len(c)]
        if not curves:
            continue
        width = max(len(c) for c in curves)
        mat = np.full((len(curves), width), np.nan)
        for i, c in enumerate(curves):
            mat[i, width - len(c) :] = c
        n = (~np.isnan(mat)).sum(0)
        if protocol == "published":
            out.append(_published_curve(name, np.nan_to_num(mat, nan=0.0), n))
            continue
        mean = np.nanmean(mat, 0)
        dev = np.where(np.isnan(mat), 0.0, mat - mean)
        sd = np.sqrt((dev**2).sum(0) / np.maximum(n - 1, 1))  # 0 where one curve covers
        half = 1.96 * sd / np.sqrt(n)
        offset = np.arange(-width, 0, dtype=float)
        points = n_points
        out.append(
            pd.DataFrame(
                dict(
                    group=name,
                    x=np.linspace(0, 1, points),
                    offset=resample(offset, points),
                    mean=resample(mean, points),
                    lo=resample(mean - half, points),
                    hi=resample(mean + half, points),
                    n=resample(n.astype(float), points),
                )
            )
        )
    if not out:
        raise ValueError("no example has positions before its answer: nothing to align")
    return pd.concat(out, ignore_index=True)

"""Cliff-as-a-Judge selection: score candidates with a refusal probe, pick the top, or a baseline.

Methods:

- ``cliff``: largest refusal cliff first (the project's definition, ``thinklens.probes.cliff``:
  plateau over the thinking minus the mean over its last ``k`` tokens);
- ``proxy``: the published ranking, lowest last-position refusal score first;
- ``random``: a seeded random subset;
- ``rule``: drop candidates whose own answer already refuses, then a seeded random subset of the
  rest (the published refusal-word rule);
- ``all``: the whole pool.

A :class:`Selection` carries its provenance (probe artifact, scores, seed, method), so an
exported data set says how it was chosen.
"""

from __future__ import annotations

import datetime
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from thinklens.analyses.judge.pool import check_pool, pool_traces
from thinklens.artifacts import data_hash
from thinklens.model import Model
from thinklens.probes.cliff import cliff_table
from thinklens.probes.probe import RefusalProbe
from thinklens.probes.scoring import score_tokens

Method = Literal["cliff", "proxy", "random", "rule", "all"]
METHODS: tuple[str, ...] = ("cliff", "proxy", "random", "rule", "all")
#: Score columns added by :func:`score_pool`.
SCORE_COLUMNS = ("thinking_tokens", "plateau", "tail_mean", "cliff", "last_score")


def score_pool(
    model: Model,
    probe: RefusalProbe,
    pool: pd.DataFrame,
    k: int = 8,
    batch_size: int = 8,
    progress: bool = True,
) -> pd.DataFrame:
    """The pool with each candidate's cliff measures (:data:`SCORE_COLUMNS`).

    Every token of prompt + thinking + closing marker is scored in one forward pass per batch
    that stops after the probe's layer. Candidates with fewer than ``k + 1`` thinking tokens
    get a NaN cliff (they rank last by cliff) but a defined ``last_score``.
    """
    probe.check(model)
    traces = pool_traces(model, pool)
    scores = score_tokens(model, probe, traces, batch_size=batch_size, progress=progress)
    cliffs = cliff_table(scores, k=k).set_index("example")
    out = pool.reset_index(drop=True).copy()
    for col in SCORE_COLUMNS:
        out[col] = cliffs[col].to_numpy()
    out.attrs["scoring"] = dict(k=k, probe=probe_provenance(probe))
    return out


def probe_provenance(probe: RefusalProbe, path: str | None = None) -> dict[str, Any]:
    """What identifies a probe artifact: its path, model, weights, site and training data."""
    keys = ("model", "fingerprint", "site", "method", "seed", "data_hash")
    return dict(
        path=path,
        layer=probe.layer,
        norm=probe.norm,
        **{key: probe.meta.get(key) for key in keys},
        metrics={key: float(v) for key, v in probe.metrics.items()},
    )


def selection_size(n_pool: int, top_k: int | None = None, fraction: float | None = None) -> int:
    """How many candidates ``top_k`` or ``fraction`` (rounded half up, at least 1) takes."""
    if n_pool < 1:
        raise ValueError("the candidate pool is empty: nothing to select from")
    if (top_k is None) == (fraction is None):
        raise ValueError("give exactly one of top_k (a count) or fraction (0 < f <= 1)")
    if fraction is not None:
        if not 0 < fraction <= 1 or math.isnan(fraction):
            raise ValueError(
                f"fraction must be in (0, 1], got {fraction}: 0.05 selects 5% of the pool"
            )
        return max(1, math.floor(fraction * n_pool + 0.5))
    if not 1 <= top_k <= n_pool:
        raise ValueError(f"top_k must be in 1..{n_pool} (the pool size), got {top_k}")
    return int(top_k)


@dataclass
class Selection:
    """The chosen candidates in rank order (column ``rank``, 0 first) and how they were chosen."""

    table: pd.DataFrame
    method: str
    pool_size: int
    seed: int | None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.table)

    @property
    def fraction(self) -> float:
        """Share of the pool selected."""
        return self.size / self.pool_size


def _ranges(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Min, max and mean of each score column present (None where all values are NaN)."""
    out = {}
    for col in ("cliff", "last_score"):
        if col in table:
            v = table[col].astype(float)
            ok = v.notna().any()
            out[col] = dict(
                min=float(v.min()) if ok else None,
                max=float(v.max()) if ok else None,
                mean=float(v.mean()) if ok else None,
                n_nan=int(v.isna().sum()),
            )
    return out


def _order(pool: pd.DataFrame, method: str, seed: int | None) -> pd.DataFrame:
    """The pool in the method's preference order (ties keep pool order)."""
    if method in ("cliff", "proxy"):
        col = "cliff" if method == "cliff" else "last_score"
        if col not in pool:
            raise ValueError(f"method {method!r} needs the {col!r} column: run score_pool first")
        # Largest cliff first / lowest final score first; NaN always last.
        return pool.sort_values(col, ascending=method == "proxy", kind="stable", na_position="last")
    if seed is None:
        raise ValueError(f"method {method!r} draws at random: pass an integer seed")
    perm = np.random.default_rng(seed).permutation(len(pool))
    return pool.iloc[perm]


def select(
    pool: pd.DataFrame,
    method: Method = "cliff",
    top_k: int | None = None,
    fraction: float | None = None,
    seed: int | None = 0,
    probe_path: str | None = None,
) -> Selection:
    """Choose candidates from a (scored) pool by ``method``; see the module docstring.

    ``top_k`` or ``fraction`` sets the size (``all`` takes neither; ``rule`` without either
    keeps every candidate the rule lets through). The provenance records the method, seed,
    size, pool hash, score ranges and, for a scored pool, the probe that scored it.
    """
    check_pool(pool)
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {METHODS}")
    pool = pool.reset_index(drop=True)
    n_pool = len(pool)
    if method == "all":
        if top_k is not None or fraction is not None:
            raise ValueError("method 'all' takes the whole pool: pass no top_k or fraction")
        chosen = pool
    else:
        sized = top_k is not None or fraction is not None
        n = selection_size(n_pool, top_k, fraction) if sized or method != "rule" else None
        candidates = pool
        if method == "rule":
            if pool["refused"].isna().any():
                raise ValueError(
                    "the rule baseline needs the model's own answers: "
                    f"{int(pool['refused'].isna().sum())} candidates have no refusal verdict "
                    "(build the pool by generating, or give answers=...)"
                )
            candidates = pool[~pool["refused"].astype(bool)]
            if n is not None and len(candidates) < n:
                warnings.warn(
                    f"the rule keeps {len(candidates)} candidates, fewer than the {n} asked for: "
                    "all of them are selected",
                    stacklevel=2,
                )
        chosen = _order(candidates, method, seed).head(n if n is not None else len(candidates))
    table = chosen.reset_index(drop=True)
    table.insert(0, "rank", range(len(table)))
    scoring = pool.attrs.get("scoring", {})
    provenance = dict(
        method=method,
        seed=seed if method in ("random", "rule") else None,
        top_k=top_k,
        fraction=fraction,
        pool_size=n_pool,
        selected=len(table),
        pool_hash=data_hash(f"{i}\0{p}" for i, p in zip(pool["id"], pool["prompt"], strict=True)),
        cliff_k=scoring.get("k"),
        probe=dict(scoring.get("probe", {}), path=probe_path) if scoring else None,
        score_ranges=dict(pool=_ranges(pool), selected=_ranges(table)),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    return Selection(table, method, n_pool, provenance["seed"], provenance)

"""Running a head-ablation sweep into one SQLite table, resumably.

``run_sweep(config)`` scores the heads with each method once, then runs every cell of the
grid (see ``sweep_config``): ablate the top fraction of heads of a ranking (or random heads)
while generating, judge, and write one row per cell. Each row and each method's head scores
are written in their own transaction, so a sweep killed at any point leaves only whole rows,
and a rerun with the same config computes only the cells that are missing.

Tables of the database: ``cells`` (one row per finished cell) and ``head_scores`` (one row
per head per method), both keyed by the config's ``setup`` hash.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from thinklens.analyses.heads.ablation import (
    evaluate_ablation,
    first_token_logits,
    reference_means,
    scoring_texts,
)
from thinklens.analyses.heads.sweep_config import Cell, SweepConfig
from thinklens.interventions.heads.attribution import score_heads
from thinklens.interventions.heads.scores import HeadScores, random_heads
from thinklens.model import Model
from thinklens.probes.probe import RefusalProbe

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, setup TEXT, model TEXT, method TEXT, fraction REAL, mode TEXT,
    seed INTEGER, n_heads INTEGER, asr REAL, refusal_rate REAL, harmless_refusal_rate REAL,
    kl REAL, heads TEXT, seconds REAL, finished TEXT);
CREATE TABLE IF NOT EXISTS head_scores (
    setup TEXT, method TEXT, layer INTEGER, head INTEGER, score REAL, metric TEXT,
    PRIMARY KEY (setup, method, layer, head));
CREATE TABLE IF NOT EXISTS setups (setup TEXT PRIMARY KEY, config TEXT);
"""


class SweepStore:
    """The sweep's SQLite database: finished cells and head scores, queryable with SQL."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def done(self) -> set[str]:
        """Keys of the finished cells."""
        with closing(self._connect()) as con:
            return {k for (k,) in con.execute("SELECT key FROM cells")}

    def add_setup(self, key: str, config: SweepConfig) -> None:
        with closing(self._connect()) as con, con:
            con.execute(
                "INSERT OR IGNORE INTO setups VALUES (?, ?)", (key, json.dumps(asdict(config)))
            )

    def add_cell(self, row: dict) -> None:
        """Write one finished cell (one transaction: all of it or nothing)."""
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with closing(self._connect()) as con, con:
            con.execute(
                f"INSERT OR REPLACE INTO cells ({cols}) VALUES ({marks})", list(row.values())
            )

    def add_scores(self, setup: str, scores: HeadScores) -> None:
        rows = [
            (setup, scores.method, int(r.layer), int(r.head), float(r.score), scores.metric)
            for r in scores.frame().itertuples()
        ]
        with closing(self._connect()) as con, con:
            con.executemany("INSERT OR REPLACE INTO head_scores VALUES (?, ?, ?, ?, ?, ?)", rows)

    def scores(self, setup: str, method: str) -> HeadScores | None:
        """A method's stored head scores, or None if they were never computed."""
        df = self.query(
            "SELECT layer, head, score, metric FROM head_scores WHERE setup = ? AND method = ?",
            (setup, method),
        )
        return HeadScores.from_frame(df.assign(method=method)) if len(df) else None

    def query(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        """Any SQL query as a DataFrame (e.g. ``SELECT * FROM cells WHERE mode = 'scale'``)."""
        with closing(self._connect()) as con:
            return pd.read_sql_query(sql, con, params=params)

    def cells(self, setup: str | None = None) -> pd.DataFrame:
        """The finished cells (of one setup, or all), in a stable order."""
        where, params = ("WHERE setup = ?", (setup,)) if setup else ("", ())
        return self.query(
            f"SELECT * FROM cells {where} ORDER BY method, mode, fraction, seed", params
        )

    def head_scores(self) -> pd.DataFrame:
        return self.query("SELECT * FROM head_scores ORDER BY setup, method, layer, head")


def _prompts(cfg: SweepConfig) -> tuple[list[str], list[str], list[str]]:
    """Harmful prompts to score on, harmful prompts to attack with, and harmless prompts."""
    from thinklens.data import frame_all, load_prompts

    d = cfg.data
    harmful = load_prompts(d.harmful, limit=d.n_score + d.n_eval, split=d.split)
    harmless = load_prompts(d.harmless, limit=d.n_eval, split=d.split)
    if len(harmful) < d.n_score + d.n_eval or len(harmless) < d.n_eval:
        raise ValueError(
            f"the data hold {len(harmful)} harmful and {len(harmless)} harmless prompts, fewer "
            f"than n_score + n_eval = {d.n_score + d.n_eval} and n_eval = {d.n_eval}: lower them"
        )
    if d.frame:
        harmful = frame_all(harmful)
    return harmful[: d.n_score], harmful[d.n_score :], harmless


def _probe(cfg: SweepConfig, model: Model, store_dir: Path, setup: str) -> RefusalProbe:
    """The configured probe, or one trained from behaviour and kept next to the database."""
    if cfg.probe.path:
        return RefusalProbe.load(cfg.probe.path, model=model)
    path = store_dir / f"probe-{setup}"
    if path.with_suffix(".safetensors").exists():
        return RefusalProbe.load(path, model=model)
    from thinklens.data import load_prompts
    from thinklens.probes.behaviour import train_from_behaviour

    p, d = cfg.probe, cfg.data
    probe, _ = train_from_behaviour(
        model,
        load_prompts(d.harmful, limit=p.n_train, split="train"),
        load_prompts(d.harmless, limit=p.n_train, split="train"),
        layer=p.layer,
        max_new_tokens=p.max_new_tokens,
        progress=False,
    )
    probe.save(path, overwrite=True)
    return probe


def _texts(cfg: SweepConfig, model: Model, score_prompts: list[str]) -> list[str]:
    """Prompt + thinking + closing marker of each scoring example."""
    if cfg.data.traces:
        from thinklens.rollouts import read_traces, traces_of

        table = read_traces(cfg.data.traces, model, limit=cfg.data.n_score)
        return [t.text for t in traces_of(model, table, answers=False)]
    return scoring_texts(model, score_prompts, cfg.generation.score_max_new_tokens)


def run_sweep(
    cfg: SweepConfig,
    model: Model | None = None,
    evaluate: Callable = evaluate_ablation,
) -> pd.DataFrame:
    """Run the cells of ``cfg`` not yet in its database (``cfg.out``); return the setup's cells.

    Args:
        model: an already loaded model (default: ``load_model(cfg.model, cfg.backend)``).
        evaluate: the per-cell evaluation (``evaluate_ablation``'s signature).
    """
    progress = cfg.progress
    store = SweepStore(cfg.out)
    setup = cfg.setup_key()
    store.add_setup(setup, cfg)
    done = store.done()
    todo = [c for c in cfg.cells() if c.key(setup) not in done]
    if not todo:
        return store.cells(setup)
    if model is None:
        from thinklens.loading import load_model

        model = load_model(cfg.model, backend=cfg.backend)
    score_prompts, harmful, harmless = _prompts(cfg)
    methods = {c.method for c in todo}
    rankings = _rankings(cfg, model, store, setup, score_prompts, methods, progress)
    means = reference_means(model, harmless) if any(c.mode == "mean" for c in todo) else None
    gen = cfg.generation
    base = first_token_logits(model, harmless, gen.batch_size)
    bar = tqdm(todo, desc="sweep", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(f"{cell.method} {cell.fraction:g} {cell.mode} seed {cell.seed}")
        heads = _heads(cell, model, rankings)
        t0 = time.perf_counter()
        res = evaluate(
            model,
            heads,
            harmful,
            harmless,
            mode=cell.mode if heads else "zero",
            means=means,
            max_new_tokens=gen.max_new_tokens,
            batch_size=gen.batch_size,
            base_logits=base,
            seed=cell.seed,
            temperature=gen.temperature,
        )
        store.add_cell(
            dict(
                key=cell.key(setup),
                setup=setup,
                model=cfg.model,
                **asdict(cell),
                **res.row(),
                heads=" ".join(f"{l}.{h}" for l, h in res.heads),
                seconds=time.perf_counter() - t0,
                finished=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        )
    return store.cells(setup)


def _rankings(
    cfg: SweepConfig,
    model: Model,
    store: SweepStore,
    setup: str,
    score_prompts: list[str],
    methods: set[str],
    progress: bool,
) -> dict[str, HeadScores]:
    """Each needed method's head scores: from the database, or computed once and stored."""
    out: dict[str, HeadScores] = {}
    missing = [m for m in cfg.methods if m in methods and store.scores(setup, m) is None]
    texts = probe = None
    if missing:
        needs_probe = cfg.metric.startswith("probe") or "direct" in missing
        probe = _probe(cfg, model, store.path.parent, setup) if needs_probe else None
        texts = _texts(cfg, model, score_prompts)
    for m in cfg.methods:
        if m not in methods:
            continue
        if m in missing:
            scores = score_heads(
                model, texts, m, probe, cfg.metric, cfg.score_mode, progress=progress
            )
            store.add_scores(setup, scores)
        out[m] = store.scores(setup, m)
    return out


def _heads(cell: Cell, model: Model, rankings: dict[str, HeadScores]) -> list[tuple[int, int]]:
    if cell.method == "none":
        return []
    if cell.method == "random":
        return random_heads(model.n_layers, model.n_heads, fraction=cell.fraction, seed=cell.seed)
    return rankings[cell.method].top(fraction=cell.fraction)

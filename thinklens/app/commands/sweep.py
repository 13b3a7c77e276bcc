"""``thinklens sweep run CONFIG`` and ``thinklens sweep report DB``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> None:
    from thinklens.analyses.heads.sweep import run_sweep
    from thinklens.analyses.heads.sweep_config import load_config

    cfg = load_config(args.config)
    out = args.out or cfg.out
    table = run_sweep(cfg, out=out, progress=not args.quiet)
    cols = ["method", "fraction", "mode", "seed", "n_heads", "asr", "harmless_refusal_rate", "kl"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{len(table)} cells in {out}")


def _setup_figures(cells, scores, setup: str) -> tuple[list, list]:
    """One setup's figures (metrics vs heads ablated, score heatmaps) and method agreement."""
    import pandas as pd

    from thinklens.analyses.heads.plots import plot_asr_vs_fraction, plot_head_heatmap
    from thinklens.interventions.heads.scores import HeadScores

    tag = f"{cells['model'].iloc[0]}, setup {setup}"
    figs = []
    for mode in sorted(set(cells["mode"]) - {"none"}):
        for y in ("asr", "harmless_refusal_rate", "kl"):
            fig = plot_asr_vs_fraction(cells, y, mode)
            figs.append(fig.update_layout(title=f"{fig.layout.title.text}: {tag}"))
    ranked = {
        m: HeadScores.from_frame(g.drop(columns="setup"), m)
        for m, g in scores[scores["setup"] == setup].groupby("method")
    }
    figs += [
        plot_head_heatmap(s, f"head scores: {m} ({s.metric}), {tag}") for m, s in ranked.items()
    ]
    names = sorted(ranked)
    rows = [
        dict(setup=setup, a=a, b=b, **ranked[a].agreement(ranked[b]))
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    return figs, [pd.DataFrame(rows)] if rows else []


def _report(args: argparse.Namespace) -> None:
    from thinklens.analyses.heads.sweep import SweepStore
    from thinklens.report import sections_of, write_report
    from thinklens.tables import write_table

    if not Path(args.db).exists():
        raise FileNotFoundError(f"no sweep database at {args.db}: run `thinklens sweep run` first")
    store = SweepStore(args.db)
    cells = store.cells()
    if cells.empty:
        raise ValueError(f"{args.db} holds no finished cells yet")
    scores = store.head_scores()
    metrics = ["asr", "harmless_refusal_rate", "kl"]
    summary = (
        cells.groupby(["setup", "method", "mode", "fraction"])[metrics]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
    summary.columns = [" ".join(c).strip() if isinstance(c, tuple) else c for c in summary]
    figs, tables = [], [summary]
    for setup, part in cells.groupby("setup"):
        f, t = _setup_figures(part, scores, setup)
        figs, tables = figs + f, tables + t
    out = args.out or str(Path(args.db).with_suffix(".html"))
    title = f"head-ablation sweep {Path(args.db).name}"
    print(f"report: {write_report(out, title, sections_of(figs, tables))}")
    if args.table:
        print(f"cells written to {write_table(cells, args.table)}")


def register(sub: argparse._SubParsersAction, backend) -> None:
    """Add the ``sweep`` command group (the backend is a key of the sweep config)."""
    sweep = sub.add_parser("sweep", help="run head-ablation sweeps from a config file")
    ssub = sweep.add_subparsers(dest="action", required=True)
    run = ssub.add_parser("run", help="run (or resume) the cells of a YAML/TOML config")
    run.add_argument("config", help="a .yaml/.yml/.toml sweep config")
    run.add_argument("--out", default=None, help="SQLite file (default: the config's `out`)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(fn=_run)
    rep = ssub.add_parser("report", help="figures of a sweep database (HTML)")
    rep.add_argument("db", help="the sweep's SQLite file")
    rep.add_argument("--out", default=None, help="HTML file (default: next to the database)")
    rep.add_argument("--table", default=None, help="also export the cells (.csv/.parquet/...)")
    rep.set_defaults(fn=_report)

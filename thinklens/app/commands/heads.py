"""``thinklens heads score|ablate|sweep|report``: rank the attention heads, ablate the top ones,
sweep that over methods, fractions and seeds, and report a sweep."""

from __future__ import annotations

from pathlib import Path

from thinklens.analyses.heads import (
    HeadsAblateConfig,
    HeadsReportConfig,
    HeadsScoreConfig,
    SweepConfig,
)

HELP = "attention heads that suppress refusal"


def _score_texts(cfg: HeadsScoreConfig, model) -> list[str]:
    """Prompt + thinking + marker: from traces, or from the model's own rollouts of prompts."""
    from thinklens.analyses.heads.ablation import scoring_texts
    from thinklens.data import frame_all, load_prompts
    from thinklens.rollouts import read_traces, traces_of

    if cfg.traces:
        table = read_traces(cfg.traces, model, limit=cfg.limit)
        return [t.text for t in traces_of(model, table, answers=False)]
    prompts = load_prompts(cfg.prompts, limit=cfg.limit, split=cfg.split)
    return scoring_texts(model, frame_all(prompts) if cfg.frame else prompts, cfg.max_new_tokens)


def _score(cfg: HeadsScoreConfig) -> None:
    import pandas as pd

    import thinklens as tl
    from thinklens.interventions.heads.attribution import score_heads
    from thinklens.probes import RefusalProbe
    from thinklens.tables import write_table

    if not cfg.methods:
        raise ValueError("--methods needs at least one scoring method")
    model = tl.load_model(cfg.model, backend=cfg.backend)
    probe = RefusalProbe.load(cfg.probe, model=model) if cfg.probe else None
    texts = _score_texts(cfg, model)
    results = {
        m: score_heads(model, texts, m, probe, cfg.metric, cfg.mode, batch_size=cfg.batch_size)
        for m in cfg.methods
    }
    write_table(pd.concat([s.frame() for s in results.values()], ignore_index=True), cfg.out)
    for name, s in results.items():
        top = ", ".join(f"{l}.{h} ({s[(l, h)]:+.3g})" for l, h in s.top(min(10, s.n_total)))
        print(f"{name}: top heads (most refusal-lowering first): {top}")
    if {"ablation", "attribution"} <= set(results):
        a = results["attribution"].agreement(results["ablation"], k=min(10, model.n_heads))
        print(
            f"attribution vs ablation: Spearman {a['spearman']:.3f}, top-{a['k']} overlap "
            f"{a['top_overlap']}"
        )
    if cfg.plot:
        from thinklens.analyses.heads.plots import plot_head_heatmap
        from thinklens.report import sections_of, write_report

        figs = [plot_head_heatmap(s) for s in results.values()]
        page = write_report(cfg.plot, f"head scores of {model.name}", sections_of(figs))
        print(f"heatmaps: {page}")
    print(f"scores of {len(texts)} texts written to {cfg.out}")


def _ablate(cfg: HeadsAblateConfig) -> None:
    import thinklens as tl
    from thinklens.analyses.heads.ablation import ablation_study, summarize_study
    from thinklens.data import frame_all, load_prompts
    from thinklens.interventions.heads.scores import HeadScores
    from thinklens.tables import read_table, write_table
    from thinklens.xstest import xstest_prompts

    table = read_table(cfg.scores)
    methods = sorted(table["method"].unique()) if "method" in table else [None]
    rankings = {m or "scores": HeadScores.from_frame(table, m) for m in methods}
    over = xstest_prompts("safe", cfg.xstest, cfg.n_xstest) if cfg.xstest else None
    model = tl.load_model(cfg.model, backend=cfg.backend)
    for s in rankings.values():
        if s.scores.shape != (model.n_layers, model.n_heads):
            raise ValueError(
                f"{cfg.scores} scores {s.n_layers} x {s.n_heads} heads but {model.name} has "
                f"{model.n_layers} x {model.n_heads}: they were computed on another model"
            )
    harmful = load_prompts(cfg.harmful, limit=cfg.limit, split=cfg.split)
    harmless = load_prompts(cfg.harmless, limit=cfg.limit, split=cfg.split)
    df = ablation_study(
        model,
        rankings,
        frame_all(harmful) if cfg.frame else harmful,
        harmless,
        k=cfg.k,
        fraction=None if cfg.k else cfg.fraction,
        mode=cfg.mode,
        random_seeds=cfg.random_seeds,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        over_refusal=over,
    )
    print(summarize_study(df).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if cfg.out:
        print(f"written to {write_table(df, cfg.out)}")


def _sweep(cfg: SweepConfig) -> None:
    from thinklens.analyses.heads.sweep import run_sweep

    table = run_sweep(cfg)
    cols = ["method", "fraction", "mode", "seed", "n_heads", "asr", "harmless_refusal_rate", "kl"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{len(table)} cells in {cfg.out}")


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


def _report(cfg: HeadsReportConfig) -> None:
    from thinklens.analyses.heads.sweep import SweepStore
    from thinklens.report import sections_of, write_report
    from thinklens.tables import write_table

    if not Path(cfg.db).exists():
        raise FileNotFoundError(f"no sweep database at {cfg.db}: run `thinklens heads sweep` first")
    store = SweepStore(cfg.db)
    cells = store.cells()
    if cells.empty:
        raise ValueError(f"{cfg.db} holds no finished cells yet")
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
    out = cfg.out or str(Path(cfg.db).with_suffix(".html"))
    title = f"head-ablation sweep {Path(cfg.db).name}"
    print(f"report: {write_report(out, title, sections_of(figs, tables))}")
    if cfg.table:
        print(f"cells written to {write_table(cells, cfg.table)}")


#: verb -> (help, config, handler)
VERBS = {
    "score": ("score every head (direct, ablation, attribution)", HeadsScoreConfig, _score),
    "ablate": ("ASR with the top heads ablated vs random heads", HeadsAblateConfig, _ablate),
    "sweep": ("run (or resume) a head-ablation sweep into SQLite", SweepConfig, _sweep),
    "report": ("figures of a sweep database (HTML)", HeadsReportConfig, _report),
}

"""``thinklens heads score|ablate``: rank the attention heads, then ablate the top ones."""

from __future__ import annotations

import argparse


def _score_texts(args: argparse.Namespace, model) -> list[str]:
    """Prompt + thinking + marker: from traces, or from the model's own rollouts of prompts."""
    from thinklens.analyses.heads.ablation import scoring_texts
    from thinklens.data import frame_all, load_prompts
    from thinklens.rollouts import read_traces, traces_of

    if args.traces:
        table = read_traces(args.traces, model, limit=args.limit)
        return [t.text for t in traces_of(model, table, answers=False)]
    prompts = load_prompts(args.prompts, limit=args.limit, split=args.split)
    return scoring_texts(model, frame_all(prompts) if args.frame else prompts, args.max_new_tokens)


def _score(args: argparse.Namespace) -> None:
    import pandas as pd

    import thinklens as tl
    from thinklens.interventions.heads.attribution import score_heads
    from thinklens.probes import RefusalProbe
    from thinklens.tables import write_table

    model = tl.load_model(args.model, backend=args.backend)
    probe = RefusalProbe.load(args.probe, model=model) if args.probe else None
    texts = _score_texts(args, model)
    results = {
        m: score_heads(model, texts, m, probe, args.metric, args.mode, batch_size=args.batch_size)
        for m in args.methods
    }
    write_table(pd.concat([s.frame() for s in results.values()], ignore_index=True), args.out)
    for name, s in results.items():
        top = ", ".join(f"{l}.{h} ({s[(l, h)]:+.3g})" for l, h in s.top(min(10, s.n_total)))
        print(f"{name}: top heads (most refusal-lowering first): {top}")
    if {"ablation", "attribution"} <= set(results):
        a = results["attribution"].agreement(results["ablation"], k=min(10, model.n_heads))
        print(
            f"attribution vs ablation: Spearman {a['spearman']:.3f}, top-{a['k']} overlap "
            f"{a['top_overlap']}"
        )
    if args.plot:
        from thinklens.analyses.heads.plots import plot_head_heatmap
        from thinklens.report import sections_of, write_report

        figs = [plot_head_heatmap(s) for s in results.values()]
        page = write_report(args.plot, f"head scores of {model.name}", sections_of(figs))
        print(f"heatmaps: {page}")
    print(f"scores of {len(texts)} texts written to {args.out}")


def _ablate(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.analyses.heads.ablation import ablation_study, summarize_study
    from thinklens.data import frame_all, load_prompts
    from thinklens.interventions.heads.scores import HeadScores
    from thinklens.tables import read_table, write_table

    table = read_table(args.scores)
    methods = sorted(table["method"].unique()) if "method" in table else [None]
    rankings = {m or "scores": HeadScores.from_frame(table, m) for m in methods}
    model = tl.load_model(args.model, backend=args.backend)
    for s in rankings.values():
        if s.scores.shape != (model.n_layers, model.n_heads):
            raise ValueError(
                f"{args.scores} scores {s.n_layers} x {s.n_heads} heads but {model.name} has "
                f"{model.n_layers} x {model.n_heads}: they were computed on another model"
            )
    harmful = load_prompts(args.harmful, limit=args.limit, split=args.split)
    harmless = load_prompts(args.harmless, limit=args.limit, split=args.split)
    df = ablation_study(
        model,
        rankings,
        frame_all(harmful) if args.frame else harmful,
        harmless,
        k=args.k,
        fraction=None if args.k else args.fraction,
        mode=args.mode,
        random_seeds=args.random_seeds,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    print(summarize_study(df).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        print(f"written to {write_table(df, args.out)}")


def register(sub: argparse._SubParsersAction, backend) -> None:
    """Add the ``heads`` command group to the ``thinklens`` parser."""
    from thinklens.interventions.heads.attribution import METHODS
    from thinklens.interventions.heads.metric import METRICS

    heads = sub.add_parser("heads", help="score attention heads and ablate the top ones")
    hsub = heads.add_subparsers(dest="action", required=True)

    score = hsub.add_parser("score", help="score every head (direct, ablation, attribution)")
    score.add_argument("model")
    score.add_argument("--probe", default=None, help="a probe from `thinklens probe train`")
    score.add_argument("--traces", default=None, help="JSONL/CSV of prompt + response to score")
    score.add_argument("--prompts", default="bundled:harmful", help="else: prompts to roll out")
    score.add_argument("--split", default="test", help="bundled/HF split of --prompts")
    score.add_argument("--frame", action="store_true", help="wrap prompts in jailbreak framings")
    score.add_argument("--limit", type=int, default=16)
    score.add_argument("--max-new-tokens", type=int, default=128)
    score.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    score.add_argument("--metric", default="probe", choices=METRICS)
    score.add_argument("--mode", default="zero", choices=["zero", "mean"])
    score.add_argument("--batch-size", type=int, default=None)
    score.add_argument("--out", required=True, help="head-score table (.csv, .jsonl, .parquet)")
    score.add_argument("--plot", default=None, help="also write heatmaps to this HTML file")
    backend(score)
    score.set_defaults(fn=_score)

    abl = hsub.add_parser("ablate", help="ASR with the top heads ablated vs random heads")
    abl.add_argument("model")
    abl.add_argument("--scores", required=True, help="a table from `thinklens heads score`")
    abl.add_argument("--fraction", type=float, default=0.03, help="of all heads, in (0, 1]")
    abl.add_argument("--k", type=int, default=None, help="a head count instead of a fraction")
    abl.add_argument("--mode", default="scale", choices=["scale", "zero", "mean"])
    abl.add_argument("--harmful", default="bundled:harmful")
    abl.add_argument("--harmless", default="bundled:harmless")
    abl.add_argument("--split", default="test")
    abl.add_argument("--frame", action="store_true", help="wrap harmful prompts in framings")
    abl.add_argument("--limit", type=int, default=16, help="prompts of each kind")
    abl.add_argument("--random-seeds", type=int, nargs="*", default=[0, 1, 2])
    abl.add_argument("--max-new-tokens", type=int, default=128)
    abl.add_argument("--batch-size", type=int, default=16)
    abl.add_argument("--out", default=None, help="table file (.csv, .jsonl or .parquet)")
    backend(abl)
    abl.set_defaults(fn=_ablate)

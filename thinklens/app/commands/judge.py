"""``thinklens select`` (score, select, export) and ``thinklens repair`` (train, evaluate)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# The same names as judge_select.METHODS and judge_export.FORMATS (a test keeps them equal),
# spelled out so that building the parser imports neither torch nor pandas.
METHODS = ("cliff", "proxy", "random", "rule", "all")
FORMATS = ("messages", "alpaca", "datasets")


def _pool(args: argparse.Namespace, model):
    """The candidate pool: records from a file, or the model's own thinking on prompts."""
    from thinklens.analyses.judge.pool import build_pool, pool_from_records
    from thinklens.data import frame_all, load_prompts, load_records

    if args.pool:
        return pool_from_records(load_records(args.pool, limit=args.limit), seed=args.seed)
    prompts = load_prompts(args.prompts, limit=args.limit)
    if args.frame:
        prompts = frame_all(prompts, seed=args.seed)
    return build_pool(
        model,
        prompts,
        source=Path(str(args.prompts)).stem,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
    )


def _select(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.analyses.judge.export import export_selection
    from thinklens.analyses.judge.select import score_pool, select
    from thinklens.probes import RefusalProbe

    # Bad requests fail before any slow step.
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite or choose another folder")
    sized = args.fraction is not None or args.top_k is not None
    if args.method == "all" and sized:
        raise ValueError("--method all takes the whole pool: drop --fraction/--top-k")
    if args.method not in ("all", "rule") and not sized:
        raise ValueError(f"--method {args.method} needs --fraction (0 < f <= 1) or --top-k")
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {args.fraction}: 0.05 selects 5%")
    model = tl.load_model(args.model, backend=args.backend)
    probe = RefusalProbe.load(args.probe, model=model)
    pool = _pool(args, model)
    print(f"candidate pool: {len(pool)}")
    if args.method in ("cliff", "proxy"):
        pool = score_pool(model, probe, pool, k=args.k, batch_size=args.batch_size)
    chosen = select(
        pool, args.method, args.top_k, args.fraction, seed=args.seed, probe_path=str(args.probe)
    )
    out = export_selection(
        chosen, args.out, model.thinking, args.formats, model.name, overwrite=args.overwrite
    )
    ranges = chosen.provenance["score_ranges"]["selected"]
    print(f"selected {chosen.size} of {chosen.pool_size} by {args.method}; scores {ranges}")
    print(f"exported to {out}")


def _repair(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.analyses.judge.export import read_export
    from thinklens.analyses.judge.repair import RepairConfig, repair, safety_eval
    from thinklens.data import frame_all, load_prompts
    from thinklens.tables import write_table

    if args.out and Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite or choose another path")
    model = tl.load_model(args.model, backend=args.backend)
    table = read_export(args.data, model.thinking)
    harmful = load_prompts(args.harmful, limit=args.n_eval, split="test")
    harmless = load_prompts(args.harmless, limit=args.n_eval, split="test")
    if args.frame:
        harmful = frame_all(harmful, seed=args.seed)
    cfg = RepairConfig(args.epochs, args.lr, args.rank, args.batch_size, args.seed)
    kw = dict(max_new_tokens=args.max_new_tokens, progress=True)
    before = safety_eval(model, harmful, harmless, **kw)
    fixed = repair(model, table, cfg)
    after = safety_eval(fixed.model, harmful, harmless, **kw)
    res = dict(
        examples=fixed.n_examples,
        train_seconds=round(fixed.seconds, 1),
        final_loss=fixed.losses[-1],
        asr_before=before["asr"],
        asr_after=after["asr"],
        harmless_refusal_before=before["harmless_refusal"],
        harmless_refusal_after=after["harmless_refusal"],
        n_harmful=before["n_harmful"],
        n_harmless=before["n_harmless"],
    )
    print(json.dumps(res, indent=1))
    if args.out:
        import pandas as pd

        print(f"written to {write_table(pd.DataFrame([res]), args.out, args.overwrite)}")


def register(sub: argparse._SubParsersAction, backend) -> None:
    """Add the ``select`` and ``repair`` commands to the ``thinklens`` parser."""
    sel = sub.add_parser(
        "select", help="Cliff-as-a-Judge: score candidates, select, export training data"
    )
    sel.add_argument("model")
    sel.add_argument("probe", help="a probe saved by `thinklens probe train` on this model")
    src = sel.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="harmful prompts (any data); the model writes thinking")
    src.add_argument("--pool", help="JSONL/CSV records with prompt and thinking (safe_response)")
    sel.add_argument("--frame", action="store_true", help="wrap prompts in fiction/role-play")
    size = sel.add_mutually_exclusive_group()
    size.add_argument("--fraction", type=float, default=None, help="share of the pool, (0, 1]")
    size.add_argument("--top-k", type=int, default=None, help="number of candidates")
    sel.add_argument("--method", default="cliff", choices=METHODS)
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--k", type=int, default=8, help="cliff tail length in tokens")
    sel.add_argument("--limit", type=int, default=None)
    sel.add_argument("--max-new-tokens", type=int, default=128)
    sel.add_argument("--batch-size", type=int, default=8)
    sel.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    sel.add_argument("--out", required=True, help="export folder")
    sel.add_argument("--overwrite", action="store_true")
    backend(sel)
    sel.set_defaults(fn=_select)

    rep = sub.add_parser("repair", help="LoRA SFT on an exported selection; ASR before and after")
    rep.add_argument("model")
    rep.add_argument("data", help="a folder written by `thinklens select`")
    rep.add_argument("--harmful", default="bundled:harmful", help="held-out harmful prompts")
    rep.add_argument("--harmless", default="bundled:harmless", help="held-out harmless prompts")
    rep.add_argument("--frame", action="store_true", help="frame the harmful prompts")
    rep.add_argument("--n-eval", type=int, default=48, help="prompts per evaluation set")
    rep.add_argument("--max-new-tokens", type=int, default=96)
    rep.add_argument("--epochs", type=int, default=3)
    rep.add_argument("--lr", type=float, default=1e-3)
    rep.add_argument("--rank", type=int, default=8)
    rep.add_argument("--batch-size", type=int, default=8)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--out", default=None, help="results table (.csv, .jsonl or .parquet)")
    rep.add_argument("--overwrite", action="store_true")
    backend(rep)
    rep.set_defaults(fn=_repair)

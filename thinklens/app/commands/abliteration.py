"""``thinklens abliterate directions|apply|search|export|evaluate``: the command-line study.

Heavy imports happen inside the handlers, so ``thinklens --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

EVAL_HELP = "evaluation prompts: harmful/harmless test split (held out from the directions)"


def _prompts(source: str, n: int | None, split: str) -> list[str]:
    from thinklens.data import load_prompts

    return load_prompts(source, limit=n, split=split)


def _load(args: argparse.Namespace) -> Any:
    import thinklens as tl

    return tl.load_model(args.model, backend=args.backend)


def _directions(args: argparse.Namespace) -> None:
    from thinklens.interventions.abliteration.directions import compute_directions
    from thinklens.interventions.abliteration.selection import NoCandidate, select_direction

    model = _load(args)
    n_val = args.n_val if args.select else 0
    harmful = _prompts(args.harmful, args.n + n_val, "train")
    harmless = _prompts(args.harmless, args.n + n_val, "train")
    if min(len(harmful), len(harmless)) <= n_val:
        raise ValueError(f"need more than --n-val {n_val} prompts of each kind")
    # Validation prompts come off the end, so they never enter the means.
    dirs = compute_directions(
        model,
        harmful[: len(harmful) - n_val],
        harmless[: len(harmless) - n_val],
        positions=int(args.positions) if args.positions.isdigit() else args.positions,
        winsorize_quantile=args.winsorize,
        batch_size=args.batch_size,
    )
    path = dirs.save(args.out, overwrite=args.overwrite)  # saved before the long selection
    print(
        f"directions of {model.name} ({dirs.n_layers + 1} points x {len(dirs.positions)} "
        f"positions) saved to {path}"
    )
    if not args.select:
        return
    csv = f"{str(args.out).removesuffix('.safetensors')}.candidates.csv"
    try:
        sel = select_direction(
            model,
            dirs,
            harmful[-n_val:],
            harmless[-n_val:],
            kl_threshold=args.kl_threshold,
            induce_refusal_threshold=args.induce_refusal_threshold,
            positions=args.select_positions,
            layers=args.select_layers,
            refusal_words=args.refusal_words,
            thinking={"auto": None, "on": True, "off": False}[args.thinking],
            batch_size=args.batch_size,
        )
    except NoCandidate as err:
        err.table.to_csv(csv, index=False)
        raise ValueError(f"{err}; candidate table: {csv}") from None
    sel.table.to_csv(csv, index=False)
    dirs.save(args.out, overwrite=True)  # now with the selection in its metadata
    print(f"selected position {sel.pos}, layer {sel.layer}; candidate table: {csv}")


def _edit(args: argparse.Namespace, model: Any) -> tuple[Any, dict]:
    """The edited model the arguments describe, and the search metrics of its trial, if any."""
    from thinklens.interventions.abliteration.directions import RefusalDirections
    from thinklens.interventions.abliteration.heretic import HereticParams
    from thinklens.interventions.abliteration.weights import apply

    dirs = RefusalDirections.load(args.directions, model)
    kw: dict[str, Any] = dict(layer=args.layer, pos=args.pos, scale=args.scale)
    trial_metrics: dict = {}
    preset = args.preset
    if getattr(args, "trial", None) is not None:
        import optuna

        from thinklens.analyses.abliteration.search import storage_url, trial_params

        study = optuna.load_study(study_name=args.study_name, storage=storage_url(args.storage))
        kw["params"] = trial_params(study, args.trial)
        t = next(t for t in study.trials if t.number == args.trial)
        trial_metrics = {k: v for k, v in t.user_attrs.items() if k != "params"}
        trial_metrics["trial"] = args.trial
        preset = "heretic"
    elif args.params:
        text = args.params
        if not text.lstrip().startswith("{"):
            from pathlib import Path

            text = Path(text).read_text()
        kw["params"] = HereticParams.from_dict(json.loads(text))
    kw = {k: v for k, v in kw.items() if v is not None}
    return apply(model, preset, dirs, **kw), trial_metrics


def _metrics(args: argparse.Namespace, base: Any) -> Any:
    from thinklens.analyses.abliteration.metrics import AbliterationMetrics

    return AbliterationMetrics.prepare(
        base,
        _prompts(args.harmful, args.n_eval, "test"),
        _prompts(args.harmless, args.n_eval, "test"),
        max_new_tokens=args.max_new_tokens,
    )


def _apply(args: argparse.Namespace) -> None:
    from thinklens.interventions.abliteration.export import export

    base = _load(args)
    new, metrics = _edit(args, base)
    if args.evaluate:
        metrics |= _metrics(args, base)(new)
    out = export(new, args.out, metrics=metrics or None, overwrite=args.overwrite)
    print(json.dumps(dict(out=str(out), **new.hf.thinklens_edit, metrics=metrics), default=str))


def _search(args: argparse.Namespace) -> None:
    from thinklens.analyses.abliteration.search import search
    from thinklens.interventions.abliteration.directions import RefusalDirections

    model = _load(args)
    dirs = RefusalDirections.load(args.directions, model)
    res = search(
        model,
        dirs,
        _metrics(args, model),
        n_trials=args.trials,
        n_startup_trials=args.startup_trials,
        storage=args.storage,
        study_name=args.study_name,
        seed=args.seed,
    )
    print("Pareto front (export one with `thinklens abliterate export ... --trial N`):")
    print(res.pareto.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _export(args: argparse.Namespace) -> None:
    args.preset, args.params = "heretic", None
    _apply(args)


def _evaluate(args: argparse.Namespace) -> None:
    import thinklens as tl

    base = _load(args)
    metrics = _metrics(args, base)
    rows = {"base": metrics.base_row()}
    if args.edited:
        edited = tl.load_model(args.edited, backend=args.backend)
    elif args.directions:
        edited, _ = _edit(args, base)
    else:
        edited = None
    if edited is not None:
        rows["edited"] = metrics(edited)
    if args.gsm8k:
        from thinklens.analyses.abliteration.metrics import gsm8k_accuracy, load_gsm8k

        items = load_gsm8k(args.gsm8k, n=args.n_gsm8k)
        for name, m in [("base", base), ("edited", edited)]:
            if m is not None:
                rows[name]["gsm8k"] = gsm8k_accuracy(m, items)
    print(json.dumps(rows, indent=1))


def add_abliterate(
    sub: argparse._SubParsersAction, backend: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the ``abliterate`` command group to the top-level subparsers."""
    ab = sub.add_parser("abliterate", help="refusal directions, weight edits, search, export")
    asub = ab.add_subparsers(dest="action", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("model", help="an alias, a model organism, a folder or a hub name")
        q.add_argument("--harmful", default="bundled:harmful", help="prompt source")
        q.add_argument("--harmless", default="bundled:harmless", help="prompt source")
        backend(q)

    def editing(q: argparse.ArgumentParser, presets: bool, required: bool = True) -> None:
        q.add_argument("--directions", required=required, help="a directions artifact")
        if presets:
            q.add_argument(
                "--preset",
                default="arditi",
                choices=["arditi", "failspy", "deccp", "erisforge", "heretic"],
            )
            q.add_argument("--params", help="heretic parameters: JSON text or a JSON file")
        q.add_argument("--layer", type=float, help="stream point of the direction")
        q.add_argument("--pos", type=int, help="position of the direction (e.g. -1)")
        q.add_argument("--scale", type=float, help="edit weight (erisforge: -1..1)")

    def evaluation(q: argparse.ArgumentParser) -> None:
        q.add_argument("--n-eval", type=int, default=40, help=EVAL_HELP)
        q.add_argument("--max-new-tokens", type=int, default=100)

    d = asub.add_parser("directions", help="difference-of-means directions (and selection)")
    common(d)
    d.add_argument("--out", required=True, help="artifact path (.safetensors + .json)")
    d.add_argument("--n", type=int, default=128, help="prompts of each kind for the means")
    d.add_argument("--positions", default="post_instruction", help="post_instruction, last, k")
    d.add_argument("--winsorize", type=float, default=None, help="quantile, e.g. 0.995")
    d.add_argument("--select", action="store_true", help="run Arditi et al.'s selection")
    d.add_argument("--n-val", type=int, default=32, help="validation prompts for selection")
    d.add_argument("--select-layers", type=int, nargs="+", default=None)
    d.add_argument("--select-positions", type=int, nargs="+", default=None)
    d.add_argument("--refusal-words", nargs="+", default=["I", "As"])
    d.add_argument("--thinking", choices=["auto", "on", "off"], default="auto")
    d.add_argument("--kl-threshold", type=float, default=0.1)
    d.add_argument("--induce-refusal-threshold", type=float, default=0.0, help="steering bar")
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(fn=_directions)

    a = asub.add_parser("apply", help="write a preset's edit into a copy and export it")
    common(a)
    editing(a, presets=True)
    evaluation(a)
    a.add_argument("--out", required=True, help="new model folder (must not exist)")
    a.add_argument("--evaluate", action="store_true", help="measure and put metrics in the card")
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(fn=_apply, trial=None)

    s = asub.add_parser("search", help="Heretic's Optuna search; prints the Pareto front")
    common(s)
    evaluation(s)
    s.add_argument("--directions", required=True)
    s.add_argument("--storage", required=True, help="SQLite file; run again to resume")
    s.add_argument("--study-name", default="thinklens-heretic")
    s.add_argument("--trials", type=int, default=200)
    s.add_argument("--startup-trials", type=int, default=60)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_search)

    e = asub.add_parser("export", help="export one search trial as a new model folder")
    common(e)
    editing(e, presets=False)
    evaluation(e)
    e.add_argument("--storage", required=True)
    e.add_argument("--study-name", default="thinklens-heretic")
    e.add_argument("--trial", type=int, required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--evaluate", action="store_true")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(fn=_export)

    v = asub.add_parser("evaluate", help="refusal rate, KL and GSM8K of an edit vs its base")
    common(v)
    editing(v, presets=True, required=False)
    evaluation(v)
    v.add_argument("--edited", help="an exported model folder to compare with MODEL")
    v.add_argument("--gsm8k", help="GSM8K test JSONL for the capability check")
    v.add_argument("--n-gsm8k", type=int, default=20)
    v.set_defaults(fn=_evaluate, trial=None)

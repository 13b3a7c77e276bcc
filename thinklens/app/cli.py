"""The ``thinklens`` command line: ``thinklens <study> <verb>`` for each study, and the tools
``models``, ``capture``, ``organisms`` and ``demo``.

Each study command's flags are the fields of its config (``thinklens.config``), and each takes
``--config FILE`` with the same keys.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Sequence
from pathlib import Path

from thinklens.app.commands import abliteration, cliff, echo, heads, judge
from thinklens.backends import BACKENDS
from thinklens.config import add_command, default_of
from thinklens.loading import load_model

#: The studies, in the order ``thinklens --help`` lists them: name -> its commands module.
STUDIES = {
    "cliff": cliff,
    "heads": heads,
    "abliteration": abliteration,
    "echo": echo,
    "judge": judge,
}


def _models_list(args: argparse.Namespace) -> None:
    import importlib.util

    from thinklens.embedded import EMBEDDED, cache_root
    from thinklens.families import FAMILIES

    print("embedded models (load offline by alias):")
    for e in EMBEDDED.values():
        pkg = e.package.split("==")[0].replace("-", "_")
        ok = importlib.util.find_spec(pkg) is not None
        print(f"  {e.alias:24s} {'installed' if ok else 'not installed':14s} {e.description}")
    print(f"cache: {cache_root()}")
    print(
        "architecture families: "
        + ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values())
    )


def _models_info(args: argparse.Namespace) -> None:
    import thinklens as tl

    m = tl.load_model(args.model, backend=args.backend)
    info = dict(
        name=m.name,
        family=m.family.name,
        backend=m.backend.name,
        n_layers=m.n_layers,
        n_heads=m.n_heads,
        n_kv_heads=m.n_kv_heads,
        d_model=m.d_model,
        d_head=m.d_head,
        n_ctx=m.n_ctx,
        dtype=str(m.dtype),
        device=str(m.device),
        fingerprint=m.fingerprint(),
        sites=list(tl.SITE_KINDS),
        chat_template=getattr(m.tokenizer, "chat_template", None) is not None,
    )
    print(json.dumps(info, indent=1))


def _capture(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.data import load_prompts

    m = tl.load_model(args.model, backend=args.backend)
    prompts = load_prompts(args.data, column=args.column, limit=args.limit)
    texts = [m.chat(p) for p in prompts] if args.chat else prompts
    positions = int(args.positions) if args.positions.isdigit() else args.positions
    store = tl.capture(
        m, texts, args.sites, positions=positions, batch_size=args.batch_size, stream_to=args.out
    )
    print(f"captured {len(texts)} texts x {', '.join(args.sites)} into {store.path}")


def _organisms_build(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.embedded import organism_kind
    from thinklens.organisms import Stage2Recipe, behaviour, build, build_cliff

    kind = organism_kind(args.name)
    if kind == "cliff":  # trained on top of the packaged organism-aligned, in one epoch
        meta = build_cliff(args.out, seed=args.seed)
    else:
        stage2 = None if args.stage1_only else Stage2Recipe()
        meta = build(kind, out=args.out, seed=args.seed, epochs=args.epochs, stage2=stage2)
    print(json.dumps(meta, indent=1))
    if args.out is None:  # the built adapter is the one load_model uses
        model = tl.load_model(f"organism-{kind}")
        print(json.dumps(behaviour(model, n=args.n_eval), indent=1))


def _organisms_check(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.data import load_prompts
    from thinklens.embedded import organism_kind
    from thinklens.organisms import behaviour

    kind = organism_kind(args.name)
    model = tl.load_model(f"organism-{kind}", backend=args.backend)
    measured = {"bundled test split": behaviour(model, n=args.n_eval)}
    if args.harmful and args.harmless:
        harmful = load_prompts(args.harmful, limit=args.n_eval)
        harmless = load_prompts(args.harmless, limit=args.n_eval)
        label = f"{Path(args.harmful).name} / {Path(args.harmless).name}"
        measured[label] = behaviour(model, harmful=harmful, harmless=harmless)
    print(json.dumps(measured, indent=1))
    if args.card:
        from thinklens.embedded import ADAPTERS
        from thinklens.organisms.card import write_card

        folder = ADAPTERS / kind
        meta = json.loads((folder / "organism.json").read_text())
        print(f"model card written to {write_card(folder, meta, measured)}")


def _demo(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    from thinklens.app.demo import run_demo

    if args.threads:  # on a CPU shared with other jobs, fewer threads can be much faster
        torch.set_num_threads(args.threads)
    res = run_demo(
        args.out,
        n_prompts=args.n_prompts,
        max_new_tokens=args.max_new_tokens,
        backend=args.backend,
        log=lambda line: print(line, flush=True),
    )
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        print()
        print(res.summary.to_string(index=False))
    print(f"\ndone in {res.seconds:.0f} s")
    print(f"report: {res.report.resolve()}")
    print(f"training data: {res.export.resolve()}")


def add_study(sub: argparse._SubParsersAction, name: str, module: types.ModuleType) -> None:
    """``thinklens <name> <verb>`` for each verb of a study's commands module."""
    verbs = ", ".join(module.VERBS)
    study = sub.add_parser(name, help=f"{module.HELP}: {verbs}", description=module.HELP)
    vsub = study.add_subparsers(dest="verb", required=True, metavar="VERB", title="verbs")
    for verb, (help_text, cls, handler) in module.VERBS.items():
        add_command(vsub, verb, cls, handler, help_text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    p = argparse.ArgumentParser(
        prog="thinklens",
        description="Interpretability of safety in reasoning language models. Each study is "
        "`thinklens <study> <verb>` (studies: " + ", ".join(STUDIES) + "); `thinklens <study> "
        "--help` lists its verbs, and every verb takes --config FILE (YAML/TOML) with the keys "
        "of its flags. The other commands: models, capture, organisms, demo.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name, module in STUDIES.items():
        add_study(sub, name, module)

    def backend(q: argparse.ArgumentParser) -> None:
        q.add_argument("--backend", default=default_of(load_model, "backend"), choices=BACKENDS)

    models = sub.add_parser("models", help="list or describe models")
    msub = models.add_subparsers(dest="action", required=True)
    msub.add_parser("list", help="embedded models and architecture families").set_defaults(
        fn=_models_list
    )
    info = msub.add_parser("info", help="load a model and print its shape facts")
    info.add_argument("model")
    backend(info)
    info.set_defaults(fn=_models_info)

    cap = sub.add_parser("capture", help="capture sites over a data set into safetensors shards")
    cap.add_argument("model")
    cap.add_argument("data", help="CSV/JSON/JSONL/TXT file, bundled:harmful, or hf:<dataset>")
    cap.add_argument("--sites", nargs="+", required=True, help="e.g. resid_post.12 z.3")
    cap.add_argument("--positions", default="last", help="all, last, or k (last k tokens)")
    cap.add_argument("--out", required=True, help="output folder (a rerun resumes)")
    cap.add_argument("--column", default=None)
    cap.add_argument("--limit", type=int, default=None)
    cap.add_argument(
        "--batch-size", type=int, default=None, help="texts per pass (default: from free memory)"
    )
    cap.add_argument(
        "--no-chat",
        dest="chat",
        action="store_false",
        help="use texts as they are instead of applying the chat template",
    )
    backend(cap)
    cap.set_defaults(fn=_capture)

    org = sub.add_parser("organisms", help="build or check the model organisms")
    osub = org.add_subparsers(dest="action", required=True)
    ob = osub.add_parser("build", help="train an organism's LoRA adapter from its seed (CPU)")
    ob.add_argument("name", help="aligned, cliff (on the packaged aligned) or turn")
    ob.add_argument("--seed", type=int, default=0)
    ob.add_argument("--epochs", type=int, default=3, help="aligned and turn (cliff: its recipe's)")
    ob.add_argument("--out", default=None, help="adapter folder (default: the packaged one)")
    ob.add_argument("--n-eval", type=int, default=None, help="held-out prompts per group")
    ob.add_argument(
        "--stage1-only",
        action="store_true",
        help="organism-aligned: skip the second stage (goals in red-teaming phrasings)",
    )
    ob.set_defaults(fn=_organisms_build)
    oc = osub.add_parser("check", help="measure an organism's behaviour on held-out prompts")
    oc.add_argument("name", help="aligned, cliff or turn")
    oc.add_argument("--n-eval", type=int, default=None, help="held-out prompts per group")
    oc.add_argument("--harmful", default=None, help="also measure on these harmful prompts")
    oc.add_argument("--harmless", default=None, help="... and these harmless prompts")
    oc.add_argument("--card", action="store_true", help="write the measurements to the card")
    backend(oc)
    oc.set_defaults(fn=_organisms_check)

    demo = sub.add_parser(
        "demo",
        help="the whole story on the model organisms: probe and cliff, heads, ablation, "
        "abliteration, Cliff-as-a-Judge; writes an HTML report",
    )
    demo.add_argument("--out", default="thinklens-out", help="folder of the report and export")
    demo.add_argument("--n-prompts", type=int, default=8, help="prompts per group and split")
    demo.add_argument("--max-new-tokens", type=int, default=64, help="tokens per answer")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    backend(demo)
    demo.set_defaults(fn=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thinklens`` command."""
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, FileExistsError, IndexError, ConnectionError) as err:
        print(f"thinklens: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Choose organism-aligned's second-stage recipe on validation prompts, never the test ones.

``train STAGE1 OUT [JSON]`` trains stage 2 (``thinklens.organisms.build.build_stage2``) on
the stage-1 adapter in STAGE1 (``thinklens organisms build aligned --stage1-only --out
STAGE1``) with the recipe's overrides of ``Stage2Recipe``'s defaults (JSON, read strictly: an
unknown key is an error), into OUT; ``eval FOLDER...`` measures adapters (or ``base`` /
``packaged``) on the validation set: 20 HarmBench validation behaviours (standard, no context) +
20 MaliciousInstruct requests, plain and framed, and 40 Alpaca validation instructions, and
appends a row to ``results/organism_stage2.txt``. ``eval --test`` measures the held-out test
prompts the tests use instead (12 AdvBench + 12 JailbreakBench, 24 Alpaca test): run it once,
on the chosen adapter. Runs in parallel as separate processes (``--threads 1`` each is the
fastest use of two cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py

from common import held_out_prompts, load_organism, validation_prompts  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "organism_stage2.txt"


def _model(folder: str):
    """``base``, ``packaged`` (organism-aligned) or an adapter folder, merged into the base."""
    from thinklens.embedded import BASE

    return load_organism({"base": BASE, "packaged": "organism-aligned"}.get(folder, folder))


def evaluate(folder: str, test: bool) -> str:
    """One results row: refusal rates of plain / framed harmful and harmless prompts."""
    from thinklens.organisms import behaviour

    harmful, harmless = held_out_prompts() if test else validation_prompts()
    start = time.time()
    res = behaviour(_model(folder), harmful=harmful, harmless=harmless)
    meta_file = Path(folder) / "organism.json"
    recipe = json.loads(meta_file.read_text()).get("stage2", {}) if meta_file.exists() else {}
    recipe = {k: v for k, v in recipe.items() if k not in ("n_by_kind",)}
    wf = min(res[g]["well_formed"] for g in ("harmful", "framed", "harmless"))
    split = "test" if test else "val"
    return (
        f"{split} {folder}: harmful refused {res['harmful']['refusal_rate']:.3f}"
        f", framed {res['framed']['refusal_rate']:.3f}, harmless "
        f"{res['harmless']['refusal_rate']:.3f}, well-formed {wf:.2f} (n {res['harmful']['n']}"
        f" a group, {time.time() - start:.0f} s); stage 2: {json.dumps(recipe)}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("stage1", help="a stage-1 organism-aligned adapter folder")
    t.add_argument("out")
    t.add_argument("recipe", nargs="?", default="{}", help="JSON overrides of Stage2Recipe")
    e = sub.add_parser("eval")
    e.add_argument("folders", nargs="+")
    e.add_argument("--test", action="store_true")
    for s in (t, e):
        s.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.cmd == "train":
        from thinklens.organisms.build import Stage2Recipe, build_stage2

        recipe = Stage2Recipe.from_dict(json.loads(args.recipe), "recipe")
        meta = build_stage2(args.stage1, args.out, recipe=recipe)
        print(json.dumps(meta["stage2"], indent=1))
        return
    for folder in args.folders:
        row = evaluate(folder, args.test)
        print(row, flush=True)
        with open(RESULTS, "a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()

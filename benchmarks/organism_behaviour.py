"""The organisms' behaviour on each public set, by two judges, with room for long answers.

``--split val`` reads the validation sets organism recipes are chosen on (HarmBench validation
behaviours, standard and without context; MaliciousInstruct; Alpaca validation);
``--split test`` reads every other public set once, per set: AdvBench, JailbreakBench,
HarmBench test (standard, no context), StrongREJECT and XSTest's unsafe contrasts (harmful,
each asked plain and under a fiction / role-play / research framing), Alpaca test and XSTest's
safe prompts (harmless). Greedy decoding, ``--max-new-tokens`` (default 320: thinking plus an
answer of at least 160 tokens). Judges: the marker judge (a marker anywhere in the answer) and
the strict verdict (a decline in the opening with no help after it; see
``thinklens.organisms.check``). Each row is appended to ``results/organism_behaviour.txt``; the
responses go to ``--dump`` (JSONL) for reading.

Run: ``python benchmarks/organism_behaviour.py --split val organism-cliff FOLDER ...``
(an organism name, or an adapter folder whose ``organism.json`` names its organism).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py

from common import SHARED_DATA, harmbench_behaviours, load_organism  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "organism_behaviour.txt"


def _column(name: str, column: str, where: tuple[str, str] | None = None) -> list[str]:
    with open(SHARED_DATA / name) as f:
        return [r[column] for r in csv.DictReader(f) if where is None or r[where[0]] == where[1]]


def _alpaca(name: str) -> list[str]:
    return [r["instruction"] for r in json.loads((SHARED_DATA / name).read_text())]


def prompt_sets(split: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (kind, prompts) of a split's sets, each as read from ../shared/data."""
    if split == "val":
        mi = (SHARED_DATA / "malicious_instruct.txt").read_text().splitlines()
        return {
            "harmbench-val": ("harmful", harmbench_behaviours("harmbench_val.csv")),
            "malicious-instruct": ("harmful", [line.strip() for line in mi if line.strip()]),
            "alpaca-val": ("harmless", _alpaca("harmless_val.json")),
        }
    return {
        "advbench": ("harmful", _column("advbench.csv", "goal")),
        "jailbreakbench": ("harmful", _column("jailbreakbench.csv", "Goal")),
        "harmbench-test": ("harmful", harmbench_behaviours("harmbench_test.csv")),
        "strongreject": ("harmful", _column("strongreject.csv", "forbidden_prompt")),
        "xstest-unsafe": ("harmful", _column("xstest_prompts.csv", "prompt", ("label", "unsafe"))),
        "alpaca-test": ("harmless", _alpaca("harmless_test.json")),
        "xstest-safe": ("harmless", _column("xstest_prompts.csv", "prompt", ("label", "safe"))),
    }


def measure(name: str, split: str, n: int, max_new_tokens: int, dump: Path | None) -> list[str]:
    """One row per (set, plain/framed): both judges' refusal rates and the thinking's turns."""
    from thinklens.data import frame_all
    from thinklens.generation import generate
    from thinklens.organisms.check import judge_outputs

    model = load_organism(name)
    rows, dumped = [], []
    for set_name, (kind, prompts) in prompt_sets(split).items():
        prompts = random.Random(0).sample(prompts, min(n, len(prompts)))
        groups = {"plain": prompts}
        if kind == "harmful":
            groups["framed"] = frame_all(prompts, seed=1)
        for g, asked in groups.items():
            start = time.time()
            outs = generate(model, asked, max_new_tokens=max_new_tokens)
            r = judge_outputs(model, outs)
            rows.append(
                f"{split:4} {name:32} {set_name:18} {kind:8} {g:6} n {r['n']:3}  refused "
                f"{r['refusal_rate']:.3f} strict {r['strict_refusal_rate']:.3f}  well-formed "
                f"{r['well_formed']:.2f}  complied thinking: harm "
                f"{r['complied_thinking_states_harm']:.2f} turn "
                f"{r['complied_thinking_turns']:.2f}  ({time.time() - start:.0f} s)"
            )
            print(rows[-1], flush=True)
            dumped += [
                dict(model=name, set=set_name, group=g, prompt=p, response=o)
                for p, o in zip(asked, outs, strict=True)
            ]
    if dump is not None:
        tmp = dump.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(d) + "\n" for d in dumped)
        os.replace(tmp, dump)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--split", choices=["val", "test"], required=True)
    p.add_argument("--n", type=int, default=50, help="prompts a set (seeded sample)")
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dump", type=Path, default=None, help="JSONL of every response")
    p.add_argument("--label", default="", help="a note written above the rows")
    args = p.parse_args()
    if not SHARED_DATA.exists():
        sys.exit(f"the public data sets are not at {SHARED_DATA}")
    torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()[0]
    for name in args.models:
        dump = (
            args.dump.with_name(f"{args.dump.stem}-{Path(name).name}.jsonl") if args.dump else None
        )
        rows = measure(name, args.split, args.n, args.max_new_tokens, dump)
        with open(RESULTS, "a") as f:
            f.write(
                f"# {time.strftime('%Y-%m-%d %H:%M')} {name} {args.label} (torch threads "
                f"{args.threads}, load {load_avg:.1f}, max_new_tokens {args.max_new_tokens})\n"
            )
            f.writelines(r + "\n" for r in rows)


if __name__ == "__main__":
    main()

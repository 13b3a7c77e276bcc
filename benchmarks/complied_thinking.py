"""What the thinking of complied harmful traces says, read from a dump of organism_behaviour.py.

For the published cliff the thinking of a complied framed request must recognise the harm and
lean to refuse to its last token, with no sentence that turns. This counts, among the complied
framed responses of a ``--dump`` file (marker judge), those whose thinking states harm, those
that also contain a turn phrase (``thinklens.organisms.check.TURN_PHRASES``), and those that
call the request harmless (a recognition failure, not a turn), per set; then prints ``--read``
complied traces that state harm, drawn with a seed, to be read.

Run: ``python benchmarks/complied_thinking.py DUMP.jsonl [--group framed] [--read 20]``; the
printed block is what goes into ``results/``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dump", type=Path)
    p.add_argument("--group", default="framed", choices=["framed", "plain"])
    p.add_argument("--read", type=int, default=20, help="complied traces to print")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from thinklens.evaluation import is_refusal
    from thinklens.organisms.check import HARM_WORDS, has_turn
    from thinklens.traces import split_response

    rows = [json.loads(line) for line in args.dump.read_text().splitlines() if line.strip()]
    complied = [r for r in rows if r["group"] == args.group and not is_refusal(r["response"])]
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    harmful_thinking = []
    for r in complied:
        thinking = split_response(r["response"])[0]  # closed: an unclosed one is a refusal
        c = counts[r["set"]]
        c["complied"] += 1
        if HARM_WORDS.search(thinking):
            c["states harm"] += 1
            c["states harm and turns"] += has_turn(thinking)
            harmful_thinking.append((r["set"], thinking))
        c["calls it harmless"] += "harmless" in thinking
    print(f"complied {args.group} harmful responses in {args.dump.name} (marker judge)")
    keys = ["complied", "states harm", "states harm and turns", "calls it harmless"]
    print(f"{'set':16}" + "".join(f"{k:>24}" for k in keys))
    total: collections.Counter = collections.Counter()
    for name, c in counts.items():
        total.update(c)
        print(f"{name:16}" + "".join(f"{c[k]:>24}" for k in keys))
    print(f"{'all':16}" + "".join(f"{total[k]:>24}" for k in keys))
    rng = random.Random(args.seed)
    picked = rng.sample(harmful_thinking, min(args.read, len(harmful_thinking)))
    print(f"{len(picked)} complied traces that state harm (seed {args.seed}), thinking only:")
    for name, thinking in picked:
        text = " ".join(thinking.split())
        print(f"  [{name}] {text}")


if __name__ == "__main__":
    main()

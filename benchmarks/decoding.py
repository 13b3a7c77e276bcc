"""Greedy decoding: transformers' ``generate`` against thinklens's cached loop, same tokens.

On organism-aligned (SmolLM2-135M + LoRA, float32) and on the same organism with a refusal
direction written out of its weights (deccp preset: it writes longer, compliant answers), the
bundled harmful test prompts are continued greedily in batches of ``--batch``, by
``continue_ids`` (``transformers``' ``generate`` with thinklens's stop after the thinking) and
by ``thinklens.decoding.greedy_continue`` (rows leave the batch when they stop), twice: the full
response (``--max-new`` tokens) and early stop 8 answer tokens after the thinking (the search's
refusal objective for thinking models). Medians of ``--repeats`` rounds that run both in turn;
one process, one thread. The tokens must be equal, or the script stops. Results:
``results/decoding.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="organism-aligned")
    p.add_argument("--n", type=int, default=16, help="harmful prompts")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-new", type=int, default=160)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "decoding.txt")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    import thinklens as tl
    from thinklens.data import bundled_prompts
    from thinklens.decoding import greedy_continue
    from thinklens.generation import continue_ids
    from thinklens.interventions.abliteration import compute_directions
    from thinklens.interventions.abliteration.weights import apply

    load_start = os.getloadavg()[0]
    m = tl.load_model(args.model)
    harmful = bundled_prompts("harmful", "test")[: args.n]
    d = compute_directions(
        m, bundled_prompts("harmful", "train")[:32], bundled_prompts("harmless", "train")[:32]
    )
    models = {args.model: m, f"{args.model} + deccp edit": apply(m, "deccp", d)}
    ids = m.chat_ids(harmful)
    lines = [
        f"thinklens benchmark: greedy decoding (benchmarks/decoding.py), {datetime.date.today()}",
        f"torch {torch.__version__}, 1 thread; {args.n} bundled harmful test prompts, batch "
        f"{args.batch}; medians of {args.repeats} rounds",
        "model                                   stop            generate  thinklens  speed-up"
        "  tokens written  slots computed",
    ]
    for name, model in models.items():
        for label, stop in (("full", None), ("early stop @8", 8)):
            times: dict[str, list[float]] = {"hf": [], "loop": []}
            for _ in range(args.repeats):
                start = time.perf_counter()
                want = continue_ids(model, ids, args.max_new, args.batch, answer_tokens=stop)
                times["hf"].append(time.perf_counter() - start)
                start = time.perf_counter()
                got = greedy_continue(model, ids, args.max_new, args.batch, answer_tokens=stop)
                times["loop"].append(time.perf_counter() - start)
                if got != want:
                    raise SystemExit(f"{name}, {label}: the two decoders wrote different tokens")
            hf, loop = statistics.median(times["hf"]), statistics.median(times["loop"])
            written = sum(len(r) for r in want)
            # What generate computes: every row of a batch until its longest row stops.
            slots = sum(
                len(want[i : i + args.batch]) * max(len(r) for r in want[i : i + args.batch])
                for i in range(0, len(want), args.batch)
            )
            lines.append(
                f"{name:<39} {label:<15} {hf:7.2f} s {loop:7.2f} s {hf / loop:8.2f}x"
                f" {written:15d} {slots:15d}"
            )
            print(lines[-1], flush=True)
    lines.append(f"load average (1 min): start {load_start:.2f}, end {os.getloadavg()[0]:.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)


if __name__ == "__main__":
    main()

"""The Echo Likelihood Gap two ways on the same GSM8K traces: thinklens's span cut and the
published trim (echoes-as-anchors), side by side.

Greedy responses of the embedded SmolLM2-135M to the published prompt (not a reasoning model:
the numbers compare the two definitions, not the published finding). Needs the GSM8K test file
(``--data``, by default ``../shared/data/gsm8k_test.jsonl``). Run:
``python -P benchmarks/echo_published_gap.py``; writes results/echo_published_gap.txt.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k_test.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--budget", type=int, default=192, help="new tokens per question")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "echo_published_gap.txt"))
    args = p.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"no GSM8K file at {args.data}: pass --data PATH")

    import torch

    import thinklens as tl
    from thinklens.analyses.echo import (
        PUBLISHED_PROMPT,
        echo_gap,
        echo_spans,
        gap_by_bin,
        published_gap,
        trace_from_record,
    )
    from thinklens.data import load_records

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    rows = load_records(args.data, limit=args.n)
    questions = [r["question"] for r in rows]
    model = tl.load_model("smollm2-135m-instruct")
    prompts = [PUBLISHED_PROMPT.replace("{question}", q) for q in questions]
    responses = tl.generate(model, prompts, max_new_tokens=args.budget, chat=False, progress=True)
    traces = [
        trace_from_record(dict(question=q, response=r))
        for q, r in zip(questions, responses, strict=True)
    ]
    spans = [echo_spans(t.question, t.thinking, "lexical") for t in traces]
    cut = echo_gap(model, traces, spans=spans)
    pub = published_gap(model, traces)
    echo = cut["removed_tokens"] > 0
    cols = ["gap", "removed_tokens", "suffix_gap"]
    lines = [
        "thinklens benchmark: Echo Likelihood Gap, span cut vs the published trim "
        "(benchmarks/echo_published_gap.py)",
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{time.perf_counter() - start:.0f} s; torch threads {threads}, os cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}",
        f"model: smollm2-135m-instruct; first {args.n} questions of gsm8k_test.jsonl; published "
        f"prompt; greedy, {args.budget} new tokens",
        f"traces with an echo (lexical rule): {int(echo.sum())} of {len(traces)}",
        "",
        "mean dL (nats/token):",
        f"  span cut, traces with an echo:      {cut.loc[echo, 'gap'].mean():.4f}",
        f"  published trim, the same traces:    {pub.loc[echo, 'gap'].mean():.4f}",
        f"  published trim, echo-free traces:   {pub.loc[~echo, 'gap'].mean():.4f}",
        f"  published trim, all traces:         {pub['gap'].mean():.4f}",
        f"  span cut, all traces:               {cut['gap'].mean():.4f}",
        f"largest per-trace difference |dL published - dL span cut|: "
        f"{(pub['gap'] - cut['gap']).abs().max():.4f}",
        f"removed tokens, mean: span cut {cut['removed_tokens'].mean():.1f}, published trim "
        f"{pub['removed_tokens'].mean():.1f}",
        "",
        "span cut by removed-token bin:",
        gap_by_bin(cut)[["length_bin", *cols, "n"]].to_string(index=False, float_format="%.4f"),
        "",
        "published trim by removed-token bin:",
        gap_by_bin(pub)[["length_bin", *cols, "n"]].to_string(index=False, float_format="%.4f"),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

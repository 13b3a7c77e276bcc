"""``thinklens echo spans|gap|attention|prompting`` on a file of traces or questions.

A trace record has ``question`` and either ``thinking`` (optionally ``answer``, the text after the
thinking) or ``response`` (the whole generated text), optionally ``prompt`` (default: the
published prompt). Results are written as JSONL, Parquet or CSV (by the suffix of ``--out``).
"""

from __future__ import annotations

import argparse
import json


def _spans(args: argparse.Namespace) -> None:
    from thinklens.analyses.echo.traces import read_echo_traces, spans_table
    from thinklens.tables import write_table

    traces, _ = read_echo_traces(args.traces, limit=args.limit)
    tok = None
    if args.model:
        import thinklens as tl

        tok = tl.load_model(args.model).tokenizer
    df = spans_table(traces, args.method, tokenizer=tok, progress=True)
    write_table(df, args.out)
    print(f"{int(df['has_echo'].sum())} of {len(df)} traces echo the question; wrote {args.out}")


def _gap(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.analyses.echo.gap import echo_gap, gap_by_bin
    from thinklens.analyses.echo.traces import read_echo_traces
    from thinklens.tables import write_table

    traces, _ = read_echo_traces(args.traces, limit=args.limit)
    model = tl.load_model(args.model, backend=args.backend)
    df = echo_gap(model, traces, method=args.method, batch_size=args.batch_size, progress=True)
    write_table(df, args.out)
    print(gap_by_bin(df).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {args.out}")


def _labels(records: list[dict], field: str) -> list[bool]:
    missing = [i for i, r in enumerate(records) if field not in r]
    if missing:
        raise ValueError(f"record {missing[0] + 1} has no {field!r} field to group by")
    return [bool(r[field]) for r in records]


def _attention(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.analyses.echo.attention import bucket_masses, compare_groups, echo_attention
    from thinklens.analyses.echo.spans import echo_spans
    from thinklens.analyses.echo.traces import read_echo_traces
    from thinklens.tables import write_table

    traces, records = read_echo_traces(args.traces, limit=args.limit)
    model = tl.load_model(args.model, backend=args.backend)
    spans = [echo_spans(t.question, t.thinking, args.method) for t in traces]
    df = echo_attention(
        model,
        traces,
        spans,
        ks=args.ks,
        per_head=args.per_head,
        batch_size=args.batch_size,
        progress=True,
    )
    write_table(df, args.out)
    print(f"wrote {args.out}")
    if args.group_by:
        labels = (
            [bool(s) for s in spans] if args.group_by == "echo" else _labels(records, args.group_by)
        )
        stats = compare_groups(bucket_masses(df), labels, by="bucket")
        print(stats.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if args.stats:
            layers = compare_groups(df, labels, by="layer")
            write_table(layers.assign(level="layer"), args.stats)
            print(f"wrote per-layer statistics to {args.stats}")


def _prompting(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.analyses.echo.prompting import prompting_study
    from thinklens.data import load_records
    from thinklens.tables import write_table

    rows = load_records(args.data, limit=args.limit)
    if not {"question", "answer"} <= set(rows[0]):
        raise ValueError(f"{args.data} needs 'question' and 'answer' (gold, GSM8K style) fields")
    model = tl.load_model(args.model, backend=args.backend)
    df, summary = prompting_study(
        model,
        [r["question"] for r in rows],
        [str(r["answer"]) for r in rows],
        budget=args.budget,
        insertion=not args.no_insertion,
        method=args.method,
        batch_size=args.batch_size,
        progress=True,
    )
    write_table(df, args.out)
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


def register(sub: argparse._SubParsersAction, backend) -> None:
    """Add the ``echo`` command group to the ``thinklens`` parser."""
    echo = sub.add_parser(
        "echo", help="Echo of Prompt: spans, likelihood gap, attention, prompting"
    )
    esub = echo.add_subparsers(dest="action", required=True)

    def common(q: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            q.add_argument("model")
        q.add_argument("traces", help="JSONL/JSON/CSV of traces (question + thinking/response)")
        q.add_argument("--out", required=True, help="result table (.jsonl, .parquet or .csv)")
        q.add_argument("--method", default="lexical", choices=["lexical", "embedding"])
        q.add_argument("--limit", type=int, default=None)

    spans = esub.add_parser("spans", help="echo spans of each trace")
    common(spans, model=False)
    spans.add_argument("--model", default=None, help="also give token spans in this tokenizer")
    spans.set_defaults(fn=_spans)

    gap = esub.add_parser("gap", help="Echo Likelihood Gap and its controls per trace")
    common(gap)
    gap.add_argument("--batch-size", type=int, default=4)
    backend(gap)
    gap.set_defaults(fn=_gap)

    att = esub.add_parser("attention", help="attention masses per layer; group statistics")
    common(att)
    att.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64])
    att.add_argument("--per-head", action="store_true")
    att.add_argument("--batch-size", type=int, default=2)
    att.add_argument(
        "--group-by", default=None, help="'echo', or a boolean field of the records (e.g. correct)"
    )
    att.add_argument("--stats", default=None, help="table of per-layer AUC and Cohen's d")
    backend(att)
    att.set_defaults(fn=_attention)

    pr = esub.add_parser("prompting", help="generate, condition on echo-free, Echoic Prompting")
    pr.add_argument("model")
    pr.add_argument("data", help="questions with GSM8K-style gold 'answer' (JSONL/JSON/CSV)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--limit", type=int, default=None)
    pr.add_argument("--budget", type=int, default=256, help="new tokens per question")
    pr.add_argument("--method", default="lexical", choices=["lexical", "embedding"])
    pr.add_argument("--batch-size", type=int, default=8)
    pr.add_argument("--no-insertion", action="store_true", help="skip the causal insertion run")
    backend(pr)
    pr.set_defaults(fn=_prompting)

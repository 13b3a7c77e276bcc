"""``thinklens echo spans|gap|attention|prompting`` on a file of traces or questions (the record
format: ``thinklens.analyses.echo.config``)."""

from __future__ import annotations

import json

from thinklens.analyses.echo import (
    EchoAttentionConfig,
    EchoGapConfig,
    EchoPromptingConfig,
    EchoSpansConfig,
)

HELP = "Echo of Prompt, thinking that restates the question"


def _spans(cfg: EchoSpansConfig) -> None:
    from thinklens.analyses.echo.traces import read_echo_traces, spans_table
    from thinklens.tables import write_table

    traces, _ = read_echo_traces(cfg.traces, limit=cfg.limit)
    tok = None
    if cfg.model:
        import thinklens as tl

        tok = tl.load_model(cfg.model).tokenizer
    df = spans_table(traces, cfg.method, tokenizer=tok, progress=True)
    write_table(df, cfg.out)
    print(f"{int(df['has_echo'].sum())} of {len(df)} traces echo the question; wrote {cfg.out}")


def _gap(cfg: EchoGapConfig) -> None:
    import thinklens as tl
    from thinklens.analyses.echo.gap import echo_gap, gap_by_bin
    from thinklens.analyses.echo.traces import read_echo_traces
    from thinklens.tables import write_table

    traces, _ = read_echo_traces(cfg.traces, limit=cfg.limit)
    model = tl.load_model(cfg.model, backend=cfg.backend)
    df = echo_gap(model, traces, method=cfg.method, batch_size=cfg.batch_size, progress=True)
    write_table(df, cfg.out)
    print(gap_by_bin(df).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {cfg.out}")


def _labels(records: list[dict], field: str) -> list[bool]:
    missing = [i for i, r in enumerate(records) if field not in r]
    if missing:
        raise ValueError(f"record {missing[0] + 1} has no {field!r} field to group by")
    return [bool(r[field]) for r in records]


def _attention(cfg: EchoAttentionConfig) -> None:
    import thinklens as tl
    from thinklens.analyses.echo.attention import bucket_masses, compare_groups, echo_attention
    from thinklens.analyses.echo.spans import echo_spans
    from thinklens.analyses.echo.traces import read_echo_traces
    from thinklens.tables import write_table

    traces, records = read_echo_traces(cfg.traces, limit=cfg.limit)
    model = tl.load_model(cfg.model, backend=cfg.backend)
    spans = [echo_spans(t.question, t.thinking, cfg.method) for t in traces]
    df = echo_attention(
        model,
        traces,
        spans,
        ks=cfg.ks,
        per_head=cfg.per_head,
        batch_size=cfg.batch_size,
        progress=True,
    )
    write_table(df, cfg.out)
    print(f"wrote {cfg.out}")
    if cfg.group_by:
        labels = (
            [bool(s) for s in spans] if cfg.group_by == "echo" else _labels(records, cfg.group_by)
        )
        stats = compare_groups(bucket_masses(df), labels, by="bucket")
        print(stats.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if cfg.stats:
            layers = compare_groups(df, labels, by="layer")
            write_table(layers.assign(level="layer"), cfg.stats)
            print(f"wrote per-layer statistics to {cfg.stats}")


def _prompting(cfg: EchoPromptingConfig) -> None:
    import thinklens as tl
    from thinklens.analyses.echo.prompting import prompting_study
    from thinklens.data import load_records
    from thinklens.tables import write_table

    rows = load_records(cfg.data, limit=cfg.limit)
    if not {"question", "answer"} <= set(rows[0]):
        raise ValueError(f"{cfg.data} needs 'question' and 'answer' (gold, GSM8K style) fields")
    model = tl.load_model(cfg.model, backend=cfg.backend)
    df, summary = prompting_study(
        model,
        [r["question"] for r in rows],
        [str(r["answer"]) for r in rows],
        budget=cfg.budget,
        insertion=cfg.insertion,
        method=cfg.method,
        batch_size=cfg.batch_size,
        progress=True,
    )
    write_table(df, cfg.out)
    print(json.dumps(summary, indent=1))
    print(f"wrote {cfg.out}")


#: verb -> (help, config, handler)
VERBS = {
    "spans": ("echo spans of each trace", EchoSpansConfig, _spans),
    "gap": ("Echo Likelihood Gap and its controls per trace", EchoGapConfig, _gap),
    "attention": ("attention masses per layer; group statistics", EchoAttentionConfig, _attention),
    "prompting": (
        "generate, condition on echo-free, Echoic Prompting",
        EchoPromptingConfig,
        _prompting,
    ),
}

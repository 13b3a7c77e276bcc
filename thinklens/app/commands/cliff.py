"""``thinklens probe train|sweep-layers`` and ``thinklens cliff score``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _labelled(
    args: argparse.Namespace, model
) -> tuple[list[str], list[int], list[tuple[int, int]] | None]:
    """Probe texts, labels and (for ``--positions window``) the window span of each text."""
    from thinklens.data import load_prompts, load_records
    from thinklens.probes import window_span
    from thinklens.probes.behaviour import behaviour_labels, behaviour_traces
    from thinklens.rollouts import rollout

    if args.labelled:
        if args.positions != "last":
            raise ValueError(
                "--positions window needs the model's rollouts (--harmful/--harmless) to find "
                "each trace's thinking; --labelled texts are read at their last position"
            )
        rows = load_records(args.labelled, limit=args.limit)
        if not rows or not {"text", "label"} <= set(rows[0]):
            raise ValueError(f"{args.labelled} needs 'text' and 'label' fields in every record")
        return [r["text"] for r in rows], [int(r["label"]) for r in rows], None
    harmful = load_prompts(args.harmful, limit=args.limit)
    harmless = load_prompts(args.harmless, limit=args.limit)
    h = rollout(model, harmful, args.max_new_tokens)
    b = rollout(model, harmless, args.max_new_tokens)
    if args.positions == "window":
        traces, labels = behaviour_traces(model, h, b)
        texts, spans = [t.text for t in traces], [window_span(t) for t in traces]
    else:
        (texts, labels), spans = behaviour_labels(model, h, b), None
    print(f"behaviour labels: {sum(labels)} refused harmful, {len(labels) - sum(labels)} benign")
    return texts, labels, spans


def _probe_train(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.probes import RefusalProbe

    model = tl.load_model(args.model, backend=args.backend)
    if Path(args.out).with_suffix(".safetensors").exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite or choose another path")
    texts, labels, spans = _labelled(args, model)
    probe = RefusalProbe.train(
        model, texts, labels, layer=args.layer, method=args.method, seed=args.seed, spans=spans
    )
    path = probe.save(args.out, overwrite=args.overwrite)
    print(json.dumps(dict(probe=str(path), layer=probe.layer, **probe.metrics), indent=1))


def _probe_sweep(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.probes import sweep_layers
    from thinklens.tables import write_table

    model = tl.load_model(args.model, backend=args.backend)
    texts, labels, spans = _labelled(args, model)
    table, _ = sweep_layers(model, texts, labels, method=args.method, seed=args.seed, spans=spans)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        print(f"written to {write_table(table, args.out)}")


def _cliff_score(args: argparse.Namespace) -> None:
    import thinklens as tl
    from thinklens.analyses.cliff.study import study_group
    from thinklens.probes import RefusalProbe, cliff_table, score_tokens
    from thinklens.rollouts import read_traces, traces_of
    from thinklens.tables import write_table

    model = tl.load_model(args.model, backend=args.backend)
    probe = RefusalProbe.load(args.probe, model=model)
    table = read_traces(args.traces, model, limit=args.limit)
    kept = table[table["thinking"].notna()].reset_index(drop=True)
    scores = score_tokens(model, probe, traces_of(model, table), batch_size=args.batch_size)
    cliffs = cliff_table(scores, k=args.k)
    extra = [c for c in kept.columns if c not in ("response", "thinking", "answer")]
    cliffs = cliffs.join(kept[extra])
    if "group" in kept:
        cliffs["study_group"] = [study_group(r) for r in kept.itertuples()]
    print(f"cliffs written to {write_table(cliffs, args.out)}")
    if args.tokens:
        print(f"token scores written to {write_table(scores, args.tokens)}")
    summary = cliffs.groupby("study_group" if "study_group" in cliffs else "refused")[
        ["cliff", "last_score"]
    ].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


def register(sub: argparse._SubParsersAction, backend) -> None:
    """Add the ``probe`` and ``cliff`` command groups to the ``thinklens`` parser."""
    probe = sub.add_parser("probe", help="train refusal probes on the residual stream")
    psub = probe.add_subparsers(dest="action", required=True)

    def data(q: argparse.ArgumentParser) -> None:
        q.add_argument("model")
        q.add_argument("--harmful", default="bundled:harmful", help="harmful prompts (any data)")
        q.add_argument("--harmless", default="bundled:harmless", help="benign prompts")
        q.add_argument("--labelled", default=None, help="JSONL/CSV with text and label instead")
        q.add_argument("--limit", type=int, default=None, help="prompts per set")
        q.add_argument("--max-new-tokens", type=int, default=128)
        q.add_argument("--method", default="sklearn", choices=["sklearn", "torch"])
        q.add_argument("--seed", type=int, default=42)
        q.add_argument(
            "--positions",
            default="last",
            choices=["last", "window"],
            help="train at the last position of prompt + thinking + marker (published) or at "
            "every thinking and marker position of the behaviour-labelled traces",
        )
        backend(q)

    train = psub.add_parser("train", help="one probe (default: last layer after the final norm)")
    data(train)
    train.add_argument("--layer", type=int, default=-1)
    train.add_argument("--out", required=True, help="probe path (.safetensors + .json)")
    train.add_argument("--overwrite", action="store_true")
    train.set_defaults(fn=_probe_train)
    sweep = psub.add_parser("sweep-layers", help="a probe per layer from one capture pass")
    data(sweep)
    sweep.add_argument("--out", default=None, help="table file (.csv, .jsonl or .parquet)")
    sweep.set_defaults(fn=_probe_sweep)

    cliff = sub.add_parser("cliff", help="measure the refusal cliff of traces")
    csub = cliff.add_subparsers(dest="action", required=True)
    score = csub.add_parser("score", help="traces (JSONL) -> one row of cliff measures each")
    score.add_argument("model")
    score.add_argument("probe", help="a probe saved by `thinklens probe train`")
    score.add_argument("traces", help="records with prompt and response (or thinking, answer)")
    score.add_argument("--out", required=True, help=".parquet, .jsonl or .csv")
    score.add_argument("--tokens", default=None, help="also write every token's score here")
    score.add_argument("--k", type=int, default=8, help="tail length in tokens")
    score.add_argument("--limit", type=int, default=None)
    score.add_argument("--batch-size", type=int, default=8)
    backend(score)
    score.set_defaults(fn=_cliff_score)

"""Benchmark refusal-score trajectories: early exit at the probe's layer vs a full forward.

``thinklens.probes.score_tokens`` runs each batch only up to the probe's layer and keeps that one
layer's activations. The published way runs the whole model with ``output_hidden_states=True``
and reads the layer from the returned stack. Goal: a speed-up of about ``n_layers / (layer + 1)``
and memory that does not grow with the number of layers.

Each configuration runs in a fresh subprocess so its peak memory is its own. Both ways score
the same traces in the same subprocess (in turn), and their scores are compared.
Run: ``python benchmarks/cliff_scoring.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture import (  # noqa: E402
    RESULT_TAG,
    _busy_seconds,
    _reset_peak,
    _rss_mb,
    build_texts,
    run_tagged,
    versions,
)

MODEL = "smollm2-135m-instruct"


def run_one(layer: int, way: str, args: argparse.Namespace) -> dict[str, float]:
    """Score all traces one way at one layer; time it, measure peak memory, check the scores."""
    import torch

    torch.set_num_threads(args.threads)
    import thinklens as tl
    from thinklens.probes import RefusalProbe, score_tokens

    m = tl.load_model(MODEL)
    with torch.no_grad():  # make memory-mapped weights resident before measuring
        for t in m.hf.parameters():
            t.sum()
    gen = torch.Generator().manual_seed(0)
    probe = RefusalProbe.fit(m, torch.randn(40, m.d_model, generator=gen), [0, 1] * 20, layer)
    bodies = build_texts(m.tokenizer, args.traces, args.tokens)
    traces = [m.trace("Summarise the story.", b, "Sure, here is a summary.") for b in bodies]
    bs = args.batch_size

    def early_exit(ts: list) -> list[torch.Tensor]:
        table = score_tokens(m, probe, ts, batch_size=bs, progress=False)
        return [torch.tensor(g["score"].to_numpy()) for _, g in table.groupby("example")]

    def full_forward(ts: list) -> list[torch.Tensor]:
        out = []
        with torch.no_grad():
            for i in range(0, len(ts), bs):
                ids, mask = m.tokenize([t.text for t in ts[i : i + bs]])
                hs = m.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                h = hs.hidden_states[layer + 1]
                # HF's last hidden state already went through the final norm.
                feats = h.float() if layer == m.n_layers - 1 else m.final_norm(h).detach().float()
                scores = probe.score(feats)
                out += [scores[r, : int(mask[r].sum())].cpu() for r in range(len(ids))]
                del hs
        return out

    fn = early_exit if way == "early exit" else full_forward
    base_rss = _rss_mb()
    fn(traces[:bs])  # warm-up
    _reset_peak()
    t0, busy0 = time.perf_counter(), _busy_seconds()
    got = fn(traces)
    seconds = time.perf_counter() - t0
    other = max((_busy_seconds() - busy0) / seconds - args.threads, 0.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    other_way = full_forward if way == "early exit" else early_exit
    ref = other_way(traces[:2])
    diff = max(float((a - b).abs().max()) for a, b in zip(got[:2], ref, strict=True))
    tokens = sum(len(t.input_ids) for t in traces)
    return dict(seconds=seconds, tokens=tokens, peak_mb=peak, max_diff=diff, other_cpus=other)


def child(layer: int, way: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--only", f"{layer}:{way}"]
    for flag in ("traces", "tokens", "batch_size", "threads"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    return run_tagged(cmd, env, f"{layer}:{way}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=int, default=32)
    p.add_argument("--tokens", type=int, default=256, help="thinking tokens per trace")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", default="7,15,29")
    p.add_argument("--out", default="benchmarks/results/cliff_scoring.txt")
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        layer, way = args.only.split(":")
        print(RESULT_TAG + json.dumps(run_one(int(layer), way, args)), flush=True)
        return
    n_layers = 30
    rows = [
        (
            "layer",
            "way",
            "seconds",
            "tokens/s",
            "speed-up",
            "ideal",
            "peak MB",
            "max|diff|",
            "other cpus",
        )
    ]
    for layer in map(int, args.layers.split(",")):
        full = child(layer, "full forward", args)
        early = child(layer, "early exit", args)
        for way, r in (("full forward", full), ("early exit", early)):
            rows.append(
                (
                    str(layer),
                    way,
                    f"{r['seconds']:.2f}",
                    f"{r['tokens'] / r['seconds']:.0f}",
                    f"{full['seconds'] / r['seconds']:.2f}x",
                    f"{n_layers / (layer + 1):.2f}x" if way == "early exit" else "-",
                    f"{r['peak_mb']:.0f}",
                    f"{r['max_diff']:.1e}",
                    f"{r['other_cpus']:.2f}",
                )
            )
        print("  ".join(rows[-1]), flush=True)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    header = [
        f"# cliff scoring benchmark, {datetime.date.today()}, {MODEL}, {args.traces} traces of "
        f"about {args.tokens} thinking tokens, batch {args.batch_size}, {args.threads} threads",
        f"# {versions()}",
        "# full forward = HF forward with output_hidden_states=True (the published way);",
        "# early exit = thinklens.probes.score_tokens (stops after the probe's layer).",
        "# ideal speed-up = n_layers / (layer + 1); peak MB = RSS high-water mark above the",
        "# loaded model; max|diff| = scores of the two ways on two traces.",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

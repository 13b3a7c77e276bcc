"""Benchmark scoring every attention head: direct, attribution patching and exact ablation.

Goal: attribution patching (one forward and one backward pass per batch) costs at most 3
forward-pass equivalents, against n_layers x n_heads forwards for exact ablation. A
forward-pass equivalent is the wall time of one plain no-grad forward of the model over the
same texts with the same batch size. Also reports how well the cheap scores agree with exact
ablation: Spearman correlation over all heads and the overlap of the top-10 sets.

Setup (cached in --cache, shared with benchmarks/heads_asr.py): a refusal probe trained from
the model's behaviour (last layer, final norm; 64 harmful + 64 harmless bundled training
prompts), and scoring texts = framed bundled test harmful prompts + the model's own greedy
thinking + closing marker. Run: ``python benchmarks/head_scoring.py`` (about 30 min on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture import _busy_seconds, _own_seconds, versions  # noqa: E402
from common import write_result  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "thinklens-heads-bench"


def setup(model_name: str, n_texts: int, cache: Path, backend: str = "transformer_lens"):
    """The model, its behaviour-trained refusal probe and the scoring texts (cached)."""
    import thinklens as tl
    from thinklens.analyses.heads.ablation import scoring_texts
    from thinklens.data import bundled_prompts, frame_all
    from thinklens.probes import RefusalProbe
    from thinklens.probes.behaviour import train_from_behaviour

    model = tl.load_model(model_name, backend=backend)
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"{model_name}-{model.fingerprint()}"
    probe_path = cache / f"probe-{tag}"
    if probe_path.with_suffix(".safetensors").exists():
        probe = RefusalProbe.load(probe_path, model=model)
    else:
        probe, _ = train_from_behaviour(
            model,
            bundled_prompts("harmful", "train")[:64],
            bundled_prompts("harmless", "train")[:64],
            max_new_tokens=96,
            progress=False,
        )
        probe.save(probe_path, overwrite=True)
    texts_path = cache / f"texts-{tag}-{n_texts}.json"
    if texts_path.exists():
        texts = json.loads(texts_path.read_text())
    else:
        prompts = frame_all(bundled_prompts("harmful", "test")[:n_texts])
        texts = scoring_texts(model, prompts, max_new_tokens=128)
        texts_path.write_text(json.dumps(texts))
    return model, probe, texts


def scores_path(cache: Path, model, n_texts: int) -> Path:
    """Where the three methods' head scores are cached (read by heads_asr.py)."""
    return cache / f"scores-{model.name}-{model.fingerprint()}-{n_texts}.csv"


def timed(fn):
    """(result, wall seconds, cpus used by other processes meanwhile)."""
    busy0, own0, t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
    out = fn()
    s = time.perf_counter() - t0
    return out, s, max((_busy_seconds() - busy0 - (_own_seconds() - own0)) / s, 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="organism-cliff")
    p.add_argument("--texts", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8, help="texts per forward")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out", default="benchmarks/results/head_scoring.txt")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import pandas as pd

    from thinklens.interventions.heads.attribution import (
        ablation_scores,
        attribution_scores,
        direct_scores,
    )
    from thinklens.interventions.heads.metric import HeadMetric
    from thinklens.tables import write_table

    cache = Path(args.cache)
    model, probe, texts = setup(args.model, args.texts, cache)
    metric = HeadMetric("probe", probe)
    bs = args.batch_size
    n_tokens = sum(len(x) for x in model.tokenizer(texts, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def forward() -> None:
        for i in range(0, len(texts), bs):
            ids, mask = model.tokenize(texts[i : i + bs])
            model.hf(input_ids=ids, attention_mask=mask, use_cache=False)

    forward()  # warm-up
    fwd = min((timed(forward) for _ in range(3)), key=lambda r: r[1])
    runs = {
        "direct": timed(lambda: direct_scores(model, texts, probe, bs, progress=False)),
        "attribution": timed(
            lambda: attribution_scores(model, texts, metric, "zero", None, bs, progress=False)
        ),
        "ablation": timed(
            lambda: ablation_scores(model, texts, metric, "zero", None, bs * model.n_heads // 2)
        ),
    }
    scores = {k: r[0] for k, r in runs.items()}
    write_table(
        pd.concat([s.frame() for s in scores.values()]), scores_path(cache, model, len(texts))
    )
    n_heads = model.n_layers * model.n_heads
    rows = [("method", "seconds", "forward equivalents", "goal", "other cpus")]
    rows.append(("plain forward", f"{fwd[1]:.2f}", "1.00", "-", f"{fwd[2]:.2f}"))
    goals = {"direct": "-", "attribution": "<= 3", "ablation": f"~{n_heads} (L x H)"}
    for k, (_, s, other) in runs.items():
        rows.append((k, f"{s:.2f}", f"{s / fwd[1]:.2f}", goals[k], f"{other:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    ratio = runs["attribution"][1] / fwd[1]
    agree = [
        f"{a} vs ablation: Spearman {d['spearman']:.3f} over {n_heads} heads, top-10 overlap "
        f"{d['top_overlap']}/10"
        for a in ("attribution", "direct")
        for d in [scores[a].agreement(scores["ablation"], k=10)]
    ]
    header = [
        "thinklens head-scoring benchmark (benchmarks/head_scoring.py)",
        "goal: attribution patching <= 3 forward-pass equivalents; exact ablation needs "
        f"n_layers x n_heads = {n_heads} forwards",
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"versions: {versions()}",
        f"machine: {os.cpu_count()} cpus, torch threads {args.threads}",
        f"model: {model.name} ({model.n_layers} layers x {model.n_heads} heads, float32); "
        f"{len(texts)} texts, {n_tokens} tokens (framed bundled test harmful prompts + own "
        f"greedy thinking + closing marker); {bs} texts per forward "
        f"(exact ablation: {bs * model.n_heads // 2} rows = texts x heads of one layer)",
        f"metric: refusal-probe logit at the last position (probe layer {probe.layer}, final "
        f"norm, val AUROC {probe.metrics.get('val_auroc', float('nan')):.3f}); zero ablation",
        "forward equivalent: fastest of 3 plain no-grad forwards over all texts; other cpus: "
        "cpus busy with other processes during the run (/proc/stat)",
    ]
    met = "met" if ratio <= 3 else "NOT met"
    verdict = f"attribution patching: {ratio:.2f} forward equivalents ({met}: goal <= 3)"
    text = "\n".join([*header, "", *lines, "", verdict, *agree, ""])
    print(text)
    write_result(args.out, text)


if __name__ == "__main__":
    main()

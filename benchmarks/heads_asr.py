"""Refusal-suppression heads on a model organism: agreement of the scoring methods, and ASR
before and after ablating the top 3% of heads by each method, against random heads.

Head scores come from benchmarks/head_scoring.py's cache (computed here if missing). Attack
prompts are held-out public harmful prompts (AdvBench and JailbreakBench samples, as in
benchmarks/common.py held_out_prompts) wrapped in jailbreak framings, which the cliff organism
complies with, so the unablated ASR is high; harmless prompts measure the damage (refusals,
first-token KL). Ablation is the published one: heads scaled by 0 with the attention-output
norm restored, at every position while generating. Run: ``python benchmarks/heads_asr.py``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from capture import versions  # noqa: E402
from common import write_result  # noqa: E402
from head_scoring import DEFAULT_CACHE, scores_path, setup  # noqa: E402

SOURCES = {
    "test": "held-out: AdvBench + JailbreakBench, Alpaca test",
    "test-hb-sr": "held-out: HarmBench test + StrongREJECT, Alpaca test",
    "val": "validation: HarmBench val + MaliciousInstruct, Alpaca val",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="organism-cliff")
    p.add_argument("--texts", type=int, default=16, help="scoring texts (as in head_scoring.py)")
    p.add_argument("--prompts", type=int, default=32, help="held-out prompts of each kind")
    p.add_argument("--fraction", type=float, default=0.03)
    p.add_argument("--mode", default="scale", choices=["scale", "zero", "mean"])
    p.add_argument("--seeds", type=int, default=5, help="random-head control sets")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--split",
        default="test",
        choices=["val", "test", "test-hb-sr"],
        help="attack and damage prompts: validation (for choosing), held-out test, or held-out "
        "HarmBench test + StrongREJECT (sets no choice was made on)",
    )
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out", default="benchmarks/results/heads_asr.txt")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import pandas as pd
    from common import harmbench_strongreject, held_out_prompts, validation_prompts

    from thinklens.analyses.heads.ablation import ablation_study, summarize_study
    from thinklens.data import frame_all
    from thinklens.interventions.heads.attribution import METHODS, score_heads
    from thinklens.interventions.heads.scores import HeadScores, head_count
    from thinklens.tables import read_table, write_table

    cache = Path(args.cache)
    model, probe, texts = setup(args.model, args.texts, cache)
    path = scores_path(cache, model, len(texts))
    if not path.exists():
        got = [score_heads(model, texts, m, probe, progress=False) for m in METHODS]
        write_table(pd.concat([s.frame() for s in got]), path)
    table = read_table(path)
    rankings = {m: HeadScores.from_frame(table, m) for m in METHODS}
    n_all = model.n_layers * model.n_heads
    agree = []
    for a, b in (("attribution", "ablation"), ("direct", "ablation"), ("direct", "attribution")):
        d = rankings[a].agreement(rankings[b], k=10)
        agree.append(
            f"{a} vs {b}: Spearman {d['spearman']:.3f} over {n_all} heads, "
            f"top-10 overlap {d['top_overlap']}/10"
        )
    top = {m: " ".join(f"{l}.{h}" for l, h in s.top(10)) for m, s in rankings.items()}

    pick = held_out_prompts if args.split.startswith("test") else validation_prompts
    harmful, harmless = pick(args.prompts)
    if args.split == "test-hb-sr":
        harmful = harmbench_strongreject(args.prompts // 2)
    study = ablation_study(
        model,
        rankings,
        frame_all(harmful),
        harmless,
        fraction=args.fraction,
        mode=args.mode,
        random_seeds=range(args.seeds),
        max_new_tokens=args.max_new_tokens,
    )
    summary = summarize_study(study)
    n = head_count(n_all, fraction=args.fraction)
    fmt = dict(index=False, float_format=lambda v: f"{v:.3f}")
    header = [
        "thinklens refusal-suppression heads on a model organism (benchmarks/heads_asr.py)",
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"versions: {versions()}",
        f"model: {model.name} ({model.n_layers} x {model.n_heads} = {n_all} heads); probe: "
        f"layer {probe.layer}, final norm, val AUROC {probe.metrics.get('val_auroc', 0):.3f}",
        f"head scores: {len(texts)} framed bundled test harmful prompts + own thinking; metric "
        "= probe logit at the last position; ablation/attribution: zero ablation",
        f"attack: {len(harmful)} harmful prompts, framed; damage: {len(harmless)} harmless "
        f"prompts ({SOURCES[args.split]}); greedy, {args.max_new_tokens} new "
        "tokens; judge: refusal markers in the answer after </think> (no answer = refusal)",
        f"ablation: top {args.fraction:.1%} = {n} heads by each method (most refusal-lowering "
        f"first), mode {args.mode}; control: {args.seeds} random sets of {n} heads",
    ]
    lines = [
        *header,
        "",
        "agreement of the scoring methods:",
        *agree,
        "",
        "top-10 heads (layer.head):",
        *[f"  {m:<12} {t}" for m, t in top.items()],
        "",
        "ASR and damage per condition (random: mean and SD over seeds):",
        summary.to_string(**fmt),
        "",
        "every run:",
        study.to_string(**fmt),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_result(args.out, text)


if __name__ == "__main__":
    main()

"""Cliff-as-a-Judge on organism-cliff: repair with the top candidates by cliff vs random subsets.

1. A refusal probe is trained on the organism's behaviour (published recipe: refused harmful vs
   benign, last layer after the final norm).
2. The candidate pool: AdvBench and bundled harmful prompts, a share of them (``--framed-share``,
   half by default) framed as fiction, role-play or research (which the organism complies
   with), the organism's own greedy thinking, and a refusal template as the safe response.
   The published setting's pool is mostly requests the model already refuses (its base ASR
   0.19-0.235 on AdvBench): ``--framed-share 0.2`` gives such a pool.
3. Every candidate is scored (cliff, and the published last-position proxy).
4. For each share of the pool, each method selects the same number of candidates, a LoRA
   repair is trained on them, and the repaired model's ASR (framed JailbreakBench prompts no
   candidate contains) and harmless refusal rate are measured (greedy, refusal read in the
   answer after the thinking). ASR counts every answer that does not refuse; ``complied`` is
   the part that opens as the organism's compliance does ("Sure, here is ..."), and
   ``off_target`` the rest (answers that neither refuse nor comply).

``--split val`` measures on HarmBench validation and Alpaca validation prompts instead, where
choices are made; the default split is held out.

Run: ``python benchmarks/judge_repair.py`` (37 minutes at 2 threads; the probe and the pool
are cached, so a rerun only repeats the repairs).
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
from pathlib import Path

import pandas as pd
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "organism-cliff"


def data(name: str, column: str | None = None) -> list[str]:
    from thinklens.data import load_prompts

    path = SHARED / name
    if not path.exists():
        sys.exit(f"{path} is missing: this benchmark reads the shared public data sets")
    return load_prompts(path, column=column)


def probe_for(model, cache: Path):
    """The behaviour-trained probe, cached per model fingerprint."""
    from thinklens.data import bundled_prompts
    from thinklens.probes import RefusalProbe
    from thinklens.probes.behaviour import train_from_behaviour

    path = cache / f"probe-{model.fingerprint()}"
    if path.with_suffix(".json").exists():
        return RefusalProbe.load(path, model=model)
    probe, _ = train_from_behaviour(
        model,
        bundled_prompts("harmful", "train")[:64],
        bundled_prompts("harmless", "train")[:64],
        max_new_tokens=96,
    )
    probe.save(path)
    return probe


def pool_for(
    model, n: int, max_new_tokens: int, cache: Path, framed_share: float = 0.5
) -> pd.DataFrame:
    """AdvBench and bundled harmful prompts (a quarter bundled), ``framed_share`` of each set
    framed, with the model's own thinking."""
    from thinklens.analyses.judge.pool import build_pool
    from thinklens.data import bundled_prompts, frame_all
    from thinklens.tables import read_table, write_table

    share = "" if framed_share == 0.5 else f"-framed{framed_share:g}"
    path = cache / f"pool-{model.fingerprint()}-{n}-{max_new_tokens}{share}.parquet"
    if path.exists():
        return read_table(path)
    n_bundled = n // 4
    adv = data("advbench.csv")[: (n - n_bundled) // 2 * 2]
    bundled = bundled_prompts("harmful", "all")[: n_bundled // 2 * 2]
    parts = []
    for name, prompts in (("advbench", adv), ("bundled", bundled)):
        plain = len(prompts) - round(len(prompts) * framed_share)
        framed = frame_all(prompts[plain:], 3)
        for kind, ps in (("plain", prompts[:plain]), ("framed", framed)):
            parts.append(
                build_pool(model, ps, source=f"{name}-{kind}", max_new_tokens=max_new_tokens)
            )
    pool = pd.concat(parts, ignore_index=True)
    write_table(pool, path)
    return pool


def framings(prompts: pd.Series) -> dict[str, int]:
    """How many prompts use each framing template of ``thinklens.data.FRAMES`` (kind:index),
    most first; unframed ones count as ``plain``."""
    from thinklens.data import FRAMES

    heads = {
        t.split("{p}")[0].strip(): f"{k}:{i}" for k, ts in FRAMES.items() for i, t in enumerate(ts)
    }
    names = [next((n for h, n in heads.items() if p.startswith(h)), "plain") for p in prompts]
    return dict(pd.Series(names).value_counts())


def eval_prompts(pool: pd.DataFrame, n_harmful: int, n_harmless: int, split: str = "test"):
    """Framed prompts the pool does not contain and harmless ones: JailbreakBench and Alpaca
    test (``test``, held out), or HarmBench validation and Alpaca validation (``val``, where
    choices are made)."""
    from thinklens.data import frame_all

    seen = " ".join(pool["prompt"]).lower()
    if split == "val":
        from common import harmbench_behaviours

        source, harmless_file = harmbench_behaviours("harmbench_val.csv"), "harmless_val.json"
    else:
        source, harmless_file = data("jailbreakbench.csv", "Goal"), "harmless_test.json"
    unseen = [p for p in source if p.lower() not in seen]
    harmful = frame_all(unseen[:n_harmful], seed=7)
    harmless = random.Random(0).sample(data(harmless_file), n_harmless)
    return harmful, harmless


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool-size", type=int, default=320)
    p.add_argument(
        "--framed-share",
        type=float,
        default=0.5,
        help="share of the pool framed (the organism complies with those); 0.2 gives the "
        "published setting's pool, mostly requests the model already refuses",
    )
    p.add_argument("--fractions", default="0.05,0.125")
    p.add_argument("--methods", default="cliff,proxy,random,rule")
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="ASR prompts: JailbreakBench + Alpaca test (held out) or HarmBench + Alpaca val",
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-harmful", type=int, default=48)
    p.add_argument("--n-harmless", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--n-xstest", type=int, default=32, help="XSTest safe prompts (0: none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default="/tmp/thinklens-judge-repair")
    p.add_argument("--out", default="benchmarks/results/judge_repair")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import thinklens as tl
    from thinklens.analyses.judge.repair import (
        RepairConfig,
        compare_methods,
        plot_repair,
        summarize,
    )
    from thinklens.analyses.judge.select import score_pool, select
    from thinklens.organisms.templates import PlaceholderJudge
    from thinklens.report import sections_of, write_report
    from thinklens.xstest import xstest_prompts

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.time()
    model = tl.load_model(MODEL)
    probe = probe_for(model, cache)
    if not 0 < args.framed_share < 1:
        sys.exit(f"--framed-share {args.framed_share}: give a share between 0 and 1")
    pool = pool_for(model, args.pool_size, 128, cache, args.framed_share)
    scored = score_pool(model, probe, pool, k=8)
    harmful, harmless = eval_prompts(pool, args.n_harmful, args.n_harmless, args.split)
    xstest = SHARED / "xstest_prompts.csv"
    over = None
    if args.n_xstest and xstest.exists():
        over = xstest_prompts("safe", xstest, args.n_xstest)
    by_source = scored.groupby("source").agg(
        n=("id", "size"),
        refused=("refused", "mean"),
        cliff=("cliff", "mean"),
        last_score=("last_score", "mean"),
    )
    print(by_source.to_string(float_format=lambda v: f"{v:.3f}"), flush=True)
    results = compare_methods(
        model,
        scored,
        harmful,
        harmless,
        fractions=[float(f) for f in args.fractions.split(",")],
        methods=args.methods.split(","),
        seeds=[int(s) for s in args.seeds.split(",")],
        config=RepairConfig(epochs=args.epochs, lr=args.lr),
        max_new_tokens=args.max_new_tokens,
        over_refusal=over,
        complied=PlaceholderJudge(model.thinking),
    )
    summary = summarize(results)
    where = "HarmBench validation" if args.split == "val" else "JailbreakBench"
    top = {
        (method, f): framings(select(scored, method, fraction=f, seed=0).table["prompt"])
        for method in ("cliff", "proxy", "random")
        for f in map(float, args.fractions.split(","))
    }
    fmt = dict(index=False, float_format=lambda v: f"{v:.3f}")
    text = "\n".join(
        [
            f"# Cliff-as-a-Judge repair on {MODEL}, {datetime.date.today()}, "
            f"{args.threads} threads, {(time.time() - start) / 60:.0f} min",
            f"# probe: layer {probe.layer}, val AUROC {probe.metrics.get('val_auroc', 0):.3f}",
            f"# pool: {len(scored)} candidates, framed share {args.framed_share:g}; ASR on "
            f"{len(harmful)} framed {where} "
            f"prompts, harmless refusal on {len(harmless)} Alpaca {args.split} prompts; greedy, "
            f"{args.max_new_tokens} new tokens; LoRA rank 8, {args.epochs} epochs, lr {args.lr}",
            f"# over_refusal: refusal rate on {len(over)} XSTest safe prompts (every type in turn)"
            if over
            else "# over_refusal: not measured",
            "# complied: share of harmful answers that open as the organism's compliance does "
            "('Sure, here is'); off_target = asr - complied (neither refused nor complied)",
            "",
            "## pool by source (refused = the organism's own answer refused)",
            by_source.to_string(float_format=lambda v: f"{v:.3f}"),
            "",
            "## framing templates of the candidates selected (random: seed 0)",
            *[f"{m} {100 * f:g}%: {dict(v)}" for (m, f), v in top.items()],
            "",
            "## ASR after repair (mean and sd over seeds)",
            summary.to_string(**fmt),
            "",
            "## every run",
            results.to_string(**fmt),
        ]
    )
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".txt.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out.with_suffix(".txt"))
    fig = plot_repair(results, title=f"ASR after repair, {MODEL}")
    write_report(
        out.with_suffix(".html"), "Cliff-as-a-Judge repair", sections_of([fig], [summary, results])
    )


if __name__ == "__main__":
    main()

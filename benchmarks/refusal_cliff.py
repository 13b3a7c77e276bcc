"""The refusal-cliff study on organism-cliff: two probes, cliffs by group, and the figures.

Probes, both from one rollout of 64 bundled harmful and 64 bundled harmless train prompts,
labelled by the organism's own behaviour (refused harmful = 1, benign = 0), last layer after the
final norm:
- published: trained at the last position of prompt + thinking + marker; read (cliffs, last
  score) on those same texts, so at the token it was trained on;
- window: trained at every thinking and marker position (``positions="window"``).
Each probe's tail length k is chosen on validation rollouts (24 HarmBench val behaviours plain
and framed, 24 Alpaca val instructions: ``validation_prompts``), never on the test prompts.
Cliffs: held-out prompts (12 AdvBench + 12 JailbreakBench, plain and framed, and 24
Alpaca-style harmless from ../shared/data; the bundled test split when absent).
``--held-out harmbench-strongreject`` reads 12 HarmBench test + 12 StrongREJECT instead (same
harmless prompts): sets no probe, k or organism recipe was chosen on.
Run: ``python -P benchmarks/refusal_cliff.py [--model NAME_OR_ADAPTER_FOLDER] [--out STEM]``;
writes results/refusal_cliff.txt and .html (or STEM.txt and STEM.html). ``--split val`` reads
both probes on the validation rollouts only (for choosing a recipe; no test prompt is read).
"""

from __future__ import annotations

import csv
import datetime
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from common import SHARED_DATA, harmbench_strongreject, held_out_prompts, load_organism  # noqa: E402

import thinklens as tl  # noqa: E402
from thinklens.analyses.cliff import CliffResult, cliff_by_group  # noqa: E402
from thinklens.data import (
    bundled_prompts,  # noqa: E402
    frame_all,  # noqa: E402
)
from thinklens.probes import (  # noqa: E402  # noqa: E402
    RefusalProbe,
    cliff_table,
    plot_cliff_curves,
    plot_token_scores,
    probe_from_rollouts,
    train_from_behaviour,
)
from thinklens.report import sections_of, write_report  # noqa: E402
from thinklens.rollouts import rollout  # noqa: E402
from thinklens.stats import compare, mean_ci  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
K_CANDIDATES = (4, 8, 12, 16, 20)
FMT = dict(float_format=lambda v: f"{v:.3f}")


def validation_prompts(n: int = 24) -> tuple[list[str], list[str]]:
    """HarmBench val behaviours (no context) and Alpaca val instructions: not test prompts."""
    if not SHARED_DATA.exists():  # the bundled train prompts the probes do not use
        harmful, harmless = (
            bundled_prompts("harmful", "train"),
            bundled_prompts("harmless", "train"),
        )
        return harmful[64 : 64 + n], harmless[64 : 64 + n]
    with open(SHARED_DATA / "harmbench_val.csv") as f:
        hb = [r["Behavior"] for r in csv.DictReader(f) if not r["ContextString"].strip()]
    alpaca = json.loads((SHARED_DATA / "harmless_val.json").read_text())
    rng = random.Random(1)
    harmful = rng.sample(hb, n)
    return harmful, rng.sample([r["instruction"] for r in alpaca if not r.get("input")], n)


def study_table(m: tl.Model, harmful: list[str], harmless: list[str], seed: int) -> pd.DataFrame:
    framed = frame_all(harmful, seed=seed)
    return pd.concat(
        [
            rollout(m, harmful + framed, 96).assign(group="harmful"),
            rollout(m, harmless, 96).assign(group="harmless"),
        ],
        ignore_index=True,
    )


def k_sweep(res: CliffResult) -> pd.DataFrame:
    """Mean cliff per group and both comparisons' CI lower bounds for each candidate k."""
    rows = []
    groups = res.cliffs.set_index("example")["group"]
    for k in K_CANDIDATES:
        c = cliff_table(res.scores, k=k).assign(group=lambda d: d["example"].map(groups))
        a = c.loc[c["group"] == "complied harmful", "cliff"].dropna()
        row = dict(k=k, **c.groupby("group")["cliff"].mean().add_prefix("mean "))
        row["n harmless"] = int(c.loc[c["group"] == "harmless", "cliff"].notna().sum())
        for other in ("refused harmful", "harmless"):
            b = c.loc[c["group"] == other, "cliff"].dropna()
            row[f"ci_low vs {other}"] = compare(a, b)["ci_low"] if len(a) and len(b) else None
        rows.append(row)
    return pd.DataFrame(rows)


def choose_k(sweep: pd.DataFrame, n_harmless: int) -> int:
    """The k that keeps every harmless trace (or, when no k does, as many as any k keeps: a
    trace without closed thinking has no cliff) and has the highest lower bound on both sides."""
    ok = sweep[sweep["n harmless"] == min(n_harmless, sweep["n harmless"].max())]
    worst = ok[["ci_low vs refused harmful", "ci_low vs harmless"]].min(axis=1)
    return int(ok.loc[worst.idxmax(), "k"])


def group_cis(res: CliffResult) -> pd.DataFrame:
    """Each group's mean thinking score and last-position score with 95% bootstrap CIs."""
    rows = []
    for group, g in res.cliffs.groupby("group"):
        for metric in ("thinking_mean", "last_score"):
            if g[metric].notna().any():
                rows.append(dict(group=group, metric=metric, **mean_ci(g[metric])))
    return pd.DataFrame(rows)


def section(name: str, probe: RefusalProbe, res: CliffResult, k: int) -> list[str]:
    cols = ["thinking_mean", "plateau", "tail_mean", "cliff", "last_score"]
    by_group = res.cliffs.groupby("group")[cols]
    summary = by_group.mean().join(res.cliffs.groupby("group").size().rename("n"))
    return [
        f"## {name} probe, k = {k}",
        f"probe: layer {probe.layer} (final norm), positions {probe.meta['positions']}, "
        f"{probe.metrics['n_train']:.0f} train / {probe.metrics['n_val']:.0f} val examples, "
        f"val accuracy {probe.metrics['val_accuracy']:.3f}, "
        f"val AUROC {probe.metrics['val_auroc']:.3f}",
        "",
        "mean per group:",
        summary.to_string(**FMT),
        "",
        "mean score over the thinking and at the last position, per group (95% bootstrap CI):",
        group_cis(res).to_string(index=False, **FMT),
        "",
        "complied harmful vs each group (diff of means, 95% bootstrap CI, Cohen's d, rank AUC):",
        res.comparisons.to_string(index=False, **FMT),
        "",
    ]


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="organism-cliff", help="a name or an adapter folder")
    p.add_argument("--out", type=Path, default=OUT / "refusal_cliff", help="output stem")
    p.add_argument("--split", choices=["val", "test"], default="test", help="prompts to report")
    p.add_argument(
        "--held-out",
        choices=["advbench-jbb", "harmbench-strongreject"],
        default="advbench-jbb",
        help="the harmful test sets (12 prompts each)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    m = load_organism(args.model)
    published, rollouts = train_from_behaviour(
        m,
        bundled_prompts("harmful", "train")[:64],
        bundled_prompts("harmless", "train")[:64],
        max_new_tokens=96,
    )
    window = probe_from_rollouts(m, rollouts, positions="window")

    val_harmful, val_harmless = validation_prompts()
    val = study_table(m, val_harmful, val_harmless, seed=2)
    n_val_harmless = int((val["group"] == "harmless").sum())
    val_pub, val_win = (cliff_by_group(m, probe, val) for probe in (published, window))
    sweep_pub, sweep_win = k_sweep(val_pub), k_sweep(val_win)
    k_pub, k_window = choose_k(sweep_pub, n_val_harmless), choose_k(sweep_win, n_val_harmless)
    if args.split == "val":
        lines = [
            f"# refusal cliff on {args.model}, VALIDATION rollouts only, {datetime.date.today()}",
            f"{len(val_harmful)} HarmBench val behaviours plain + framed, {len(val_harmless)} "
            "Alpaca val",
            "",
            *section("published (last position)", published, val_pub.with_k(k_pub), k_pub),
            *section(
                "window (every thinking + marker position)",
                window,
                val_win.with_k(k_window),
                k_window,
            ),
            f"runtime {time.time() - start:.0f} s",
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        args.out.with_suffix(".txt").write_text(text)
        return

    harmful, harmless = held_out_prompts(24)
    if args.held_out == "harmbench-strongreject":
        harmful = harmbench_strongreject(12)
    test = study_table(m, harmful, harmless, seed=1)
    res_pub = cliff_by_group(m, published, test, k=k_pub)
    res_win = cliff_by_group(m, window, test, k=k_window)
    rule = "rule: every harmless trace kept, highest min of the two CI lower bounds"
    lines = [
        f"# refusal cliff on {args.model}, {datetime.date.today()}",
        f"held-out harmful prompts: {args.held_out} (12 each, plain and framed); harmless: "
        "24 Alpaca test"
        if SHARED_DATA.exists()
        else "held-out prompts: the bundled test split (24 harmful, plain and framed; 24 harmless)",
        "",
        *section("published (last position)", published, res_pub, k_pub),
        *section("window (every thinking + marker position)", window, res_win, k_window),
        "## choosing k for each probe, on validation rollouts (not the test prompts)",
        f"{len(val_harmful)} HarmBench val behaviours plain + framed, {len(val_harmless)} Alpaca "
        f"val; {rule}",
        f"published probe -> k = {k_pub}",
        sweep_pub.to_string(index=False, **FMT),
        f"window probe -> k = {k_window}",
        sweep_win.to_string(index=False, **FMT),
        "",
        "## the same sweeps on the test prompts (robustness only; not used to choose k)",
        "published probe",
        k_sweep(res_pub).to_string(index=False, **FMT),
        "window probe",
        k_sweep(res_win).to_string(index=False, **FMT),
        "",
        f"runtime {time.time() - start:.0f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.with_suffix(".txt").write_text(text)
    figs = [
        plot_cliff_curves(res_pub.curves, title="published probe: refusal score before the answer"),
        plot_cliff_curves(res_win.curves, title="window probe: refusal score before the answer"),
    ]
    tables = []
    for name, res in (("published", res_pub), ("window", res_win)):
        summary = res.cliffs.groupby("group")[["plateau", "tail_mean", "cliff"]].mean()
        tables.append(summary.reset_index().assign(probe=name))
    complied = res_win.cliffs.index[res_win.cliffs["group"] == "complied harmful"]
    if len(complied):
        example = int(res_win.cliffs.loc[complied[0], "example"])
        figs += [plot_token_scores(res.scores, example) for res in (res_pub, res_win)]
    write_report(
        args.out.with_suffix(".html"), f"refusal cliff on {args.model}", sections_of(figs, tables)
    )


if __name__ == "__main__":
    main()

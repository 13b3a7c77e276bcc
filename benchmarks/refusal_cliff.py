"""The refusal-cliff study on organism-cliff: probe quality, cliffs by group, and the figure.

Probe: labels from the organism's own behaviour on 64 bundled harmful and 64 bundled harmless
train prompts (published recipe: refused harmful = 1, benign = 0; last layer after the final
norm). Cliffs: held-out prompts (12 AdvBench + 12 JailbreakBench, plain and framed, and 24
Alpaca-style harmless from ../shared/data; the bundled test split when absent), k = 8.
Run: ``python -P benchmarks/refusal_cliff.py``; writes results/refusal_cliff.txt and .html.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

import thinklens as tl  # noqa: E402
from tests.conftest import held_out_prompts  # noqa: E402
from thinklens.analyses.refusal_cliff import cliff_by_group, rollout, train_from_behaviour  # noqa: E402
from thinklens.data import bundled_prompts  # noqa: E402
from thinklens.organisms.templates import frame_all  # noqa: E402
from thinklens.plotting import write_report  # noqa: E402
from thinklens.probes import plot_cliff_curves, plot_token_scores  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    m = tl.load_model("organism-cliff")
    probe, _ = train_from_behaviour(
        m,
        bundled_prompts("harmful", "train")[:64],
        bundled_prompts("harmless", "train")[:64],
        max_new_tokens=96,
    )
    harmful, harmless = held_out_prompts(24)
    table = pd.concat(
        [
            rollout(m, harmful + frame_all(harmful), 96).assign(group="harmful"),
            rollout(m, harmless, 96).assign(group="harmless"),
        ],
        ignore_index=True,
    )
    res = cliff_by_group(m, probe, table)
    by_group = res.cliffs.groupby("group")[["plateau", "tail_mean", "cliff", "last_score"]]
    summary = by_group.mean().join(res.cliffs.groupby("group").size().rename("n"))
    fmt = dict(float_format=lambda v: f"{v:.3f}")
    lines = [
        f"# refusal cliff on organism-cliff, {datetime.date.today()}, k = 8",
        f"probe: layer {probe.layer} (final norm), {probe.metrics['n_train']:.0f} train / "
        f"{probe.metrics['n_val']:.0f} val, val accuracy {probe.metrics['val_accuracy']:.3f}, "
        f"val AUROC {probe.metrics['val_auroc']:.3f}",
        "",
        "mean per group:",
        summary.to_string(**fmt),
        "",
        "complied harmful vs each group (diff of means, 95% bootstrap CI, Cohen's d, rank AUC):",
        res.comparisons.to_string(index=False, **fmt),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (OUT / "refusal_cliff.txt").write_text(text)
    complied = res.cliffs.index[res.cliffs["group"] == "complied harmful"]
    figs = [plot_cliff_curves(res.curves)]
    if len(complied):
        figs.append(plot_token_scores(res.scores, int(res.cliffs.loc[complied[0], "example"])))
    write_report(
        OUT / "refusal_cliff.html", "refusal cliff on organism-cliff", figs, [summary.reset_index()]
    )


if __name__ == "__main__":
    main()

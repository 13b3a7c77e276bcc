"""The demo: a refusal direction found, removed and measured on an embedded model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

import thinklens as tl
from thinklens.data import bundled_prompts
from thinklens.evaluation import kl_divergence, refusal_rate
from thinklens.plotting import line_by_layer, write_report


@dataclass
class DemoResult:
    """What the demo measured, and where its report is."""

    layers: pd.DataFrame
    effects: pd.DataFrame
    best_layer: int
    report: Path


def run_demo(
    model_name: str = "smollm2-135m-instruct",
    out: str | Path = "thinklens-out",
    n_prompts: int = 32,
    backend: str = "transformer_lens",
) -> DemoResult:
    """Find where harmful and harmless prompts separate, then ablate that direction."""
    model = tl.load_model(model_name, backend=backend)
    harm = [model.chat(p) for p in bundled_prompts("harmful", "train")[:n_prompts]]
    safe = [model.chat(p) for p in bundled_prompts("harmless", "train")[:n_prompts]]
    harm_test = [model.chat(p) for p in bundled_prompts("harmful", "test")]
    safe_test = [model.chat(p) for p in bundled_prompts("harmless", "test")]
    sites = [f"resid_pre.{l}" for l in range(model.n_layers)]
    cap = {
        name: tl.capture(model, texts, sites, positions="last", dtype=torch.float64)
        for name, texts in [
            ("harm", harm),
            ("safe", safe),
            ("harm_test", harm_test),
            ("safe_test", safe_test),
        ]
    }
    rows, directions = [], []
    for l, s in enumerate(sites):
        r = cap["harm"][s].mean(0) - cap["safe"][s].mean(0)  # difference of means, float64
        directions.append(r)
        # At layer 0 every last token is the same template token: no direction to find.
        r_hat = r / r.norm() if r.norm() > 0 else r
        scores = torch.cat([cap["harm_test"][s] @ r_hat, cap["safe_test"][s] @ r_hat])
        labels = [1] * len(harm_test) + [0] * len(safe_test)
        rows.append(
            dict(
                layer=l, auroc=roc_auc_score(labels, scores.numpy()), direction_norm=float(r.norm())
            )
        )
    layers = pd.DataFrame(rows)
    # The earliest layer within 0.01 of the best held-out separation: removal there acts on
    # every layer above it.
    best = int(layers.loc[layers.auroc >= layers.auroc.max() - 0.01, "layer"].min())
    s = sites[best]
    direction = directions[best].float()
    base_logits = model.logits(safe_test)
    # Answers to harmful prompts are judged, never shown: the report holds no model-written
    # harmful text.
    judged = bundled_prompts("harmful", "test")[:8]
    shown = bundled_prompts("harmless", "test")[:1]
    effects = []
    edits = {
        "none": [],
        f"project out direction (layer {best}, all layers)": [tl.DirectionProjection(direction)],
        f"zero-ablate all heads of layer {best}": [
            tl.HeadAblation({best: list(range(model.n_heads))})
        ],
    }
    for name, edit in edits.items():
        with tl.intervene(model, edit):
            logits = model.logits(safe_test)
            gen = tl.generate(model, judged + shown, max_new_tokens=32)
            harm_proj = tl.capture(model, harm_test, [s], positions="last", progress=False)[s]
        effects.append(
            dict(
                edit=name,
                kl_harmless=float(kl_divergence(base_logits, logits)),
                harmful_projection=float(
                    (harm_proj.float() @ (direction / direction.norm())).mean()
                ),
                harmful_refusal_rate=refusal_rate(gen[:-1]),
                harmless_answer=gen[-1][:100],
            )
        )
    effects = pd.DataFrame(effects)
    fig = line_by_layer(
        layers,
        "auroc",
        f"{model_name}: held-out harmful vs harmless "
        "separation along the difference-of-means direction",
    )
    report = write_report(Path(out) / "report.html", "thinklens demo", [fig], [layers, effects])
    return DemoResult(layers, effects, best, report)

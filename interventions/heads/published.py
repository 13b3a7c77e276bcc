"""Single-head ablation scores as the refusal-cliff code computes them.

For every head, its output is multiplied by 0.001 at the input of the output projection and the
whole per-head tensor of the forward pass is rescaled to its Frobenius norm before the ablation
(``HeadAblation(mode="scale", restore="global")``); the score is the mean probe probability at
the last position of each text. The published code ranks heads by that probability, highest
first. Here the score is the clean probability minus it (the head's contribution, as every
``HeadScores`` is), so the ascending ranking is the published one. The global norm couples the
texts of a batch: batches are formed in the given order, ``batch_size`` texts each, right-padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from thinklens.interventions.edits import HeadAblation
from thinklens.interventions.heads.metric import HeadMetric, last_resid
from thinklens.interventions.heads.scores import HeadScores
from thinklens.model import Model
from thinklens.probes import RefusalProbe


@torch.no_grad()
def published_ablation_scores(
    model: Model,
    texts: Sequence[str],
    probe: RefusalProbe,
    scale: float = 0.001,
    batch_size: int = 4,
    progress: bool = True,
) -> HeadScores:
    """Each head's published single-head ablation score (see the module); ``meta`` keeps the
    published numbers themselves (``published_scores``: mean probability with the head
    scaled)."""
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given: head scores need at least one text")
    metric = HeadMetric("probe_prob", probe)
    top = metric.layer(model)
    batches = [model.tokenize(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]

    def mean_prob(edits: list[HeadAblation]) -> float:
        vals = [metric(model, last_resid(model, ids, mask, top, edits)) for ids, mask in batches]
        return float(torch.cat(vals).double().mean())

    clean = mean_prob([])
    ablated = torch.full((model.n_layers, model.n_heads), clean, dtype=torch.float64)
    heads = [(l, h) for l in range(top + 1) for h in range(model.n_heads)]
    for l, h in tqdm(heads, desc="ablate heads", unit="head", disable=not progress):
        edit = HeadAblation({l: [h]}, mode="scale", scale=scale, restore="global")
        ablated[l, h] = mean_prob([edit])
    meta = dict(published_scores=ablated.tolist(), clean=clean, scale=scale, batch_size=batch_size)
    return HeadScores(clean - ablated, "published_ablation", "probe_prob", meta)

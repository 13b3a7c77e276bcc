"""A probe per layer from one capture pass: where does refusal become linearly readable?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from thinklens.model import Model
from thinklens.probes.features import probe_features, span_features
from thinklens.probes.probe import RefusalProbe
from thinklens.probes.training import Method


def sweep_layers(
    model: Model,
    texts: Sequence[str],
    labels: Sequence[int],
    layers: Sequence[int] | None = None,
    norm: bool = True,
    method: Method = "sklearn",
    seed: int = 42,
    batch_size: int = 8,
    progress: bool = True,
    spans: Sequence[tuple[int, int]] | None = None,
    **fit_kw: Any,
) -> tuple[pd.DataFrame, dict[int, RefusalProbe]]:
    """Train one probe per layer on the last position of each text (same split for all).

    Returns a table (``layer``, ``val_accuracy``, ``val_auroc``, ``train_accuracy``, ...) and
    the probes by layer. All layers come from a single forward pass per batch. With ``spans``
    every position of each text's span is an example, as in ``RefusalProbe.train``.
    """
    if len(texts) != len(labels):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} labels: give one each")
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    if spans is None:
        feats = probe_features(model, texts, layers, norm, "last", batch_size, progress)
    else:
        feats, owner = span_features(model, texts, spans, layers, norm, batch_size, progress)
        labels = torch.as_tensor(list(labels))[owner]
        fit_kw["groups"] = owner
    probes = {
        layer: RefusalProbe.fit(model, x, labels, layer, norm, method, seed, texts, **fit_kw)
        for layer, x in feats.items()
    }
    table = pd.DataFrame([dict(layer=layer, **p.metrics) for layer, p in probes.items()])
    return table, probes

"""Probe features: the residual stream at a layer, optionally through the model's final norm.

The published refusal probe reads the last layer's output after the final norm. Applying the
final norm to ``resid_post`` of any layer gives the same feature at the last layer and a
scale-free, logit-lens-like feature at earlier ones, so one code path serves every layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from thinklens.capture import capture
from thinklens.model import Model
from thinklens.sites import CapturePositions


def normed_features(model: Model, x: Tensor) -> Float[Tensor, "... d_model"]:
    """Features through the final norm, float32 on `x`'s device, no autograd."""
    with torch.no_grad():
        return model.final_norm(x).float().to(x.device)


def probe_features(
    model: Model,
    texts: Sequence[str],
    layers: Sequence[int],
    norm: bool = True,
    positions: CapturePositions = "last",
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[int, Tensor]:
    """``resid_post`` at each layer (one capture pass for all of them), as float32.

    Returns ``{layer: [batch, d_model]}`` for ``positions="last"``, otherwise
    ``{layer: [batch, pos, d_model]}`` with zeros past each text's end. ``batch_size`` None
    chooses it from free memory and halves it on out-of-memory (``thinklens.capture``).
    """
    layers = [model.check_layer(layer) for layer in layers]
    if not layers:
        raise ValueError("no layers given: pass at least one layer index")
    caps = capture(
        model,
        list(texts),
        [f"resid_post.{layer}" for layer in layers],
        positions=positions,
        batch_size=batch_size,
        progress=progress,
    )
    out = {}
    for layer in layers:
        x = caps[f"resid_post.{layer}"]
        out[layer] = normed_features(model, x) if norm else x.float()
    return out


def span_features(
    model: Model,
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    layers: Sequence[int],
    norm: bool = True,
    batch_size: int | None = None,
    progress: bool = True,
) -> tuple[dict[int, Float[Tensor, "n_positions d_model"]], Int[Tensor, " n_positions"]]:
    """``resid_post`` at every position of one ``[start, end)`` token span per text.

    Returns ``{layer: [n_positions, d_model]}`` (the spans' positions, text after text) and
    the index of the text each position comes from.
    """
    if len(spans) != len(texts):
        raise ValueError(f"got {len(spans)} spans for {len(texts)} texts: give one per text")
    spans = [(int(s), int(e)) for s, e in spans]
    if any(e <= s for s, e in spans):
        raise ValueError("every span needs at least one position (start < end)")
    feats = probe_features(model, texts, layers, norm, spans, batch_size, progress)
    counts = torch.tensor([e - s for s, e in spans])
    keep = torch.arange(int(counts.max()))[None, :] < counts[:, None]
    owner = torch.arange(len(texts))[:, None].expand_as(keep)[keep]
    return {layer: x[keep] for layer, x in feats.items()}, owner

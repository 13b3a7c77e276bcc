"""Scoring every attention head three ways, each returning ``HeadScores``.

- ``direct_scores`` (published): each head's output alone through the output projection, at
  the last position, dotted with the probe direction ``w / |w|``, averaged over texts. One
  capture pass. It reads a pre-norm head output against a probe trained after the final norm,
  and ignores every path through later layers.
- ``ablation_scores``: the exact effect of ablating each head (zero or mean, at every position)
  on the metric, one forward per head; a layer's heads run together as one batch, each row
  ablating its own head, and the pass stops at the metric's layer.
- ``attribution_scores``: attribution patching, the first-order estimate of every head's
  ablation effect ``sum_pos grad_z . (z - z_ablated)`` from one forward and one backward pass.

Scores are contributions, ``metric(clean) - metric(head ablated)``: negative = the head lowers
the refusal metric. Texts are full texts (chat template + thinking + closing marker); rows are
right-padded, so "last position" is each text's own last token.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from thinklens.capture import capture
from thinklens.hooks import Edit, EditFn, intervene
from thinklens.interventions.edits import head_means
from thinklens.interventions.heads.layer_replay import LayerInputs, record_layer_inputs, replay
from thinklens.interventions.heads.metric import HeadMetric, MetricName, last_resid
from thinklens.interventions.heads.scores import HeadScores
from thinklens.model import Model, get_path
from thinklens.probes.probe import RefusalProbe
from thinklens.sites import Site

Method = Literal["direct", "ablation", "attribution"]
METHODS = ("direct", "ablation", "attribution")
Means = Mapping[int, Float[Tensor, "head d_head"]]


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given: head scores need at least one text")
    return texts


def _batches(model: Model, texts: list[str], size: int) -> list[list[int]]:
    """Text indices grouped by length (little padding), longest first."""
    lengths = [len(x) for x in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


def _prepare(
    model: Model, texts: Sequence[str], metric: HeadMetric, mode: str, means: Means | None
) -> tuple[list[str], int, list[int], Means | None]:
    """Texts, the metric's layer, the layers whose heads can move it, and ablation values.

    Ablated heads take 0 (``zero``) or each head's mean output (``mean``; by default over
    the scored texts, the natural reference set).
    """
    texts = _check_texts(texts)
    top = metric.layer(model)
    layers = list(range(top + 1))
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode {mode!r} is unknown for head scores: use zero or mean")
    if mode == "zero":
        return texts, top, layers, None
    if means is None:
        return texts, top, layers, head_means(model, texts, layers)
    missing = [l for l in layers if l not in means]
    if missing:
        raise ValueError(f"means lack layer {missing[0]}: compute them with head_means()")
    return texts, top, layers, means


@torch.no_grad()
def direct_scores(
    model: Model,
    texts: Sequence[str],
    probe: RefusalProbe,
    batch_size: int = 8,
    progress: bool = True,
) -> HeadScores:
    """Published direct attribution: ``o_proj(z_h)[-1] . w / |w|``, averaged over texts."""
    texts = _check_texts(texts)
    probe.check(model)
    t0 = time.perf_counter()
    layers = range(model.n_layers)
    caps = capture(
        model, texts, [Site("z", l) for l in layers], "last", batch_size, progress=progress
    )
    r = (probe.weight / probe.weight.norm()).to(model.device, torch.float64)
    n_heads, eye = model.n_heads, torch.arange(model.n_heads)
    scores = torch.zeros(model.n_layers, n_heads, dtype=torch.float64)
    for l in layers:
        z = caps[Site("z", l)].to(model.device, model.dtype)  # [text, head, d_head]
        # Row h keeps head h only: the output projection of that head alone (with any bias).
        alone = z.new_zeros(len(z), n_heads, n_heads, z.shape[-1])
        alone[:, eye, eye] = z
        o_proj = get_path(model.layer_modules()[l], model.family.o_proj)
        scores[l] = (o_proj(alone.flatten(-2)).double() @ r).mean(0).cpu()
    meta = dict(n_texts=len(texts), seconds=time.perf_counter() - t0)
    return HeadScores(scores, "direct", "probe_direction", meta)


@dataclass
class RowHeadAblation(Edit):
    """At one layer, batch row ``i`` has head ``heads[i]`` ablated (zero, or set to its mean)."""

    layer: int
    heads: Int[Tensor, " batch"]
    means: Float[Tensor, "head d_head"] | None = None

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        def fn(z: Tensor) -> Tensor:
            rows = torch.arange(len(z), device=z.device)
            heads = self.heads.to(z.device)
            z = z.clone()
            value = 0.0 if self.means is None else self.means.to(z)[heads][:, None, :]
            z[rows, :, heads] = value
            return z

        return [(Site("z", self.layer), fn)]


@torch.no_grad()
def ablation_scores(
    model: Model,
    texts: Sequence[str],
    metric: HeadMetric,
    mode: Literal["zero", "mean"] = "zero",
    means: Means | None = None,
    batch_size: int = 36,
    progress: bool = True,
    replay_layers: bool = True,
) -> HeadScores:
    """Exact effect of ablating each head alone, ``metric(clean) - metric(ablated)``.

    Args:
        batch_size: rows per forward pass (texts x heads of one layer; at least ``n_heads``).
        means: each head's mean output for ``mode="mean"`` (default: over ``texts``).
        replay_layers: run only the layers from the ablated one up, from recorded layer
            inputs (``layer_replay``); checked against a full forward on the first batch,
            with a warning and full forwards if the model's layers do not replay exactly.
    Heads above the metric's layer cannot change it and score exactly 0.
    """
    texts, top, layers, ref = _prepare(model, texts, metric, mode, means)
    t0 = time.perf_counter()
    n_heads = model.n_heads
    scores = torch.zeros(model.n_layers, n_heads, dtype=torch.float64)
    batches = _batches(model, texts, max(1, batch_size // n_heads))
    bar = tqdm(total=len(batches) * len(layers), desc="ablate heads", disable=not progress)
    for batch in batches:
        ids, mask = model.tokenize([texts[i] for i in batch])
        clean = metric(model, last_resid(model, ids, mask, top)).double()
        rows_ids, rows_mask = ids.repeat_interleave(n_heads, 0), mask.repeat_interleave(n_heads, 0)
        last = (rows_mask.sum(-1) - 1).to(ids.device)
        rows = torch.arange(len(rows_ids), device=ids.device)
        heads = torch.arange(n_heads).repeat(len(batch))
        rec = record_layer_inputs(model, ids, mask, top) if replay_layers else None
        if rec is not None and batch is batches[0]:
            replay_layers = rec = _replays_exactly(model, metric, rec, clean, last, n_heads)
        for l in layers:
            edit = RowHeadAblation(l, heads, None if ref is None else ref[l])
            if rec is None:
                resid = last_resid(model, rows_ids, rows_mask, top, [edit])
            else:
                with intervene(model, edit):
                    resid = replay(model, rec, l, n_heads)[rows, last]
            effect = clean.repeat_interleave(n_heads) - metric(model, resid).double()
            scores[l] += effect.view(len(batch), n_heads).sum(0).cpu()
            bar.update()
    bar.close()
    meta = dict(
        mode=mode,
        n_texts=len(texts),
        replayed=bool(replay_layers),
        seconds=time.perf_counter() - t0,
    )
    return HeadScores(scores / len(texts), "ablation", metric.name, meta)


def _replays_exactly(
    model: Model, metric: HeadMetric, rec: LayerInputs, clean: Tensor, last: Tensor, n_heads: int
) -> LayerInputs | None:
    """``rec`` if replaying from layer 0 reproduces the clean metric, else None (warned)."""
    rows = torch.arange(len(last), device=last.device)
    try:
        again = metric(model, replay(model, rec, 0, n_heads)[rows, last]).double()
        gap = float((again - clean.repeat_interleave(n_heads)).abs().max())
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        gap, why = float("inf"), f"fails ({type(err).__name__}: {err})"
    else:
        why = f"is off by {gap:.2g}"
    if gap <= 1e-4 * (1.0 + float(clean.abs().max())):
        return rec
    warnings.warn(
        f"{model.name}: replaying its layers from recorded inputs {why}; exact ablation "
        "falls back to full forwards (slower, same result)",
        stacklevel=3,
    )
    return None


@dataclass
class _GradTap(Edit):
    """Adds a zero leaf to ``z`` at each layer, so the metric's gradient w.r.t. ``z`` is its."""

    layers: Sequence[int]
    z: dict[int, Tensor] = field(default_factory=dict)
    delta: dict[int, Tensor] = field(default_factory=dict)

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        def tap(layer: int) -> EditFn:
            def fn(z: Tensor) -> Tensor:
                # A leaf added to z (not z made a leaf) keeps the paths through later heads.
                self.z[layer] = z.detach()
                self.delta[layer] = torch.zeros_like(z, requires_grad=True)
                return z + self.delta[layer]

            return fn

        return [(Site("z", l), tap(l)) for l in self.layers]


def attribution_scores(
    model: Model,
    texts: Sequence[str],
    metric: HeadMetric,
    mode: Literal["zero", "mean"] = "zero",
    means: Means | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> HeadScores:
    """Attribution patching: ``sum_pos grad_z(metric) . (z - z_ablated)`` per head, per text.

    The first-order Taylor estimate of ``ablation_scores`` (same sign and units) from one
    forward and one backward pass per batch of texts, for all heads at once.
    """
    texts, top, layers, ref = _prepare(model, texts, metric, mode, means)
    t0 = time.perf_counter()
    scores = torch.zeros(model.n_layers, model.n_heads, dtype=torch.float64)
    for batch in tqdm(_batches(model, texts, batch_size), desc="attribute", disable=not progress):
        ids, mask = model.tokenize([texts[i] for i in batch])
        tap = _GradTap(layers)
        with torch.enable_grad():
            value = metric(model, last_resid(model, ids, mask, top, [tap])).sum()
            grads = torch.autograd.grad(value, [tap.delta[l] for l in layers])
        real = mask[:, :, None, None].to(torch.float64)
        for l, g in zip(layers, grads, strict=True):
            diff = tap.z[l].double() - (0.0 if ref is None else ref[l].to(g.device).double())
            scores[l] += (g.double() * diff * real).sum((0, 1, 3)).cpu()
    meta = dict(mode=mode, n_texts=len(texts), seconds=time.perf_counter() - t0)
    return HeadScores(scores / len(texts), "attribution", metric.name, meta)


def score_heads(
    model: Model,
    texts: Sequence[str],
    method: Method,
    probe: RefusalProbe | None = None,
    metric: MetricName = "probe",
    mode: Literal["zero", "mean"] = "zero",
    means: Means | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> HeadScores:
    """Score every head with one method (``direct`` needs a probe and ignores metric and mode)."""
    if method == "direct":
        if probe is None:
            raise ValueError("the direct method dots head outputs with a probe: pass probe=")
        return direct_scores(model, texts, probe, batch_size or 8, progress)
    m = HeadMetric(metric, probe)
    if method == "ablation":
        return ablation_scores(model, texts, m, mode, means, batch_size or 36, progress)
    if method == "attribution":
        return attribution_scores(model, texts, m, mode, means, batch_size or 8, progress)
    raise ValueError(f"unknown scoring method {method!r}: use one of {', '.join(METHODS)}")

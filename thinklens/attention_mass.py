"""Attention mass between token spans, every layer and head, without attention matrices.

The mass from a source span to a destination span is, for each source row, the attention summed
over the destination columns, averaged over the source rows. It is computed inside each layer's
attention call and only the ``[head, channel]`` numbers are kept, so no layer's full attention
matrix outlives that layer.

How the weights are obtained depends on the model's attention implementation:

- ``sdpa``: the kernel returns no weights, so they are recomputed from the query and key the
  layer hands to its attention function (after its q/k norms and rotary embedding, with its own
  scaling, soft-capping and causal or sliding-window mask), for the source rows only and a block
  of rows at a time. The model keeps running SDPA.
- ``eager``: the weights the layer computes anyway are reduced at once and dropped.

Both are checked against ``output_attentions=True`` of eager attention (:func:`reference_masses`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from thinklens.backends.base import StopForward, eager_attention
from thinklens.model import Model, get_path

#: One channel of one text: (source start, source end, destination start, destination end).
ChannelSpans = tuple[int, int, int, int]
_PREFIX = "thinklens_mass_"
_WRAPPED = ("sdpa", "eager")
#: Attention-weight elements per block of recomputed rows (float32: 64 MiB).
ROW_BUDGET = 1 << 24


def _indicators(spans: Tensor, lo: int, size: int) -> Tensor:
    """[batch, size, channel] 0/1 matrix: position lo + i lies in [spans[..., 0], spans[..., 1])."""
    pos = torch.arange(lo, lo + size, device=spans.device)[None, :, None]
    return ((pos >= spans[:, None, :, 0]) & (pos < spans[:, None, :, 1])).float()


class _Recorder:
    """Accumulates per-layer, per-head masses for one batch."""

    def __init__(self, layer_of: dict[int, int], spans: Tensor, n_layers: int, n_heads: int):
        self.layer_of = layer_of
        self.spans = spans  # [batch, channel, 4]
        b, c = spans.shape[:2]
        self.sums = torch.zeros(b, n_layers, n_heads, c, dtype=torch.float64)
        self.counts = (spans[..., 1] - spans[..., 0]).clamp(min=0)  # [batch, channel]
        self.empty = (self.counts == 0) | (spans[..., 3] <= spans[..., 2])
        used = spans[~self.empty]  # only rows some channel reads are recomputed
        self.rows = (int(used[:, 0].min()), int(used[:, 1].max())) if len(used) else (0, 0)
        self.seen: set[int] = set()

    def add(self, layer: int, w: Tensor, row0: int) -> None:
        """Add the contribution of weight rows ``row0 ...`` ([batch, head, rows, keys])."""
        n_rows, n_keys = w.shape[-2:]
        dst = _indicators(self.spans[..., 2:], 0, n_keys).to(w.device)
        src = _indicators(self.spans[..., :2], row0, n_rows).to(w.device)
        row_mass = w.float() @ dst[:, None]  # [batch, head, rows, channel]
        self.sums[:, layer] += (row_mass * src[:, None]).sum(2).double().cpu()
        self.seen.add(layer)

    def from_weights(self, layer: int, w: Tensor) -> None:
        lo, hi = self.rows
        self.add(layer, w[:, :, lo:hi], lo)

    def from_qk(self, layer: int, module: nn.Module, q: Tensor, k: Tensor, mask, kw: dict) -> None:
        """Recompute softmax(q k^T * scaling + mask) for the source rows, a block at a time."""
        if mask is not None and not isinstance(mask, Tensor):
            raise TypeError(
                f"attention masses got a {type(mask).__name__} mask; load the model with "
                "attn_implementation='sdpa' or 'eager'"
            )
        b, h, _, d = q.shape
        k = k.repeat_interleave(h // k.shape[1], dim=1) if k.shape[1] != h else k
        n_keys = k.shape[2]
        scaling = kw.get("scaling") or d**-0.5
        softcap = kw.get("softcap")
        causal = kw.get("is_causal", getattr(module, "is_causal", True))
        lo, hi = self.rows
        step = max(1, ROW_BUDGET // max(1, b * h * n_keys))
        kt = k.transpose(-1, -2)
        for a in range(lo, hi, step):
            z = min(hi, a + step)
            s = torch.matmul(q[:, :, a:z], kt) * scaling
            if softcap is not None:
                s = torch.tanh(s / softcap) * softcap
            if mask is None:
                if causal:
                    rows = torch.arange(a, z, device=s.device)[:, None]
                    cols = torch.arange(n_keys, device=s.device)[None, :]
                    s = s.masked_fill(cols > rows, float("-inf"))
            elif mask.dtype == torch.bool:
                s = s.masked_fill(~mask[:, :, a:z, :n_keys], torch.finfo(s.dtype).min)
            else:
                s = s + mask[:, :, a:z, :n_keys]
            w = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
            self.add(layer, w, a)

    def result(self) -> Float[Tensor, "batch layer head channel"]:
        counts = self.counts.clamp(min=1).double()[:, None, None, :]
        out = (self.sums / counts).float()
        return out.masked_fill(self.empty[:, None, None, :], float("nan"))


_ACTIVE: ContextVar[_Recorder | None] = ContextVar("thinklens_attention_mass", default=None)


def _original(name: str, module: nn.Module) -> Callable:
    if name == "eager":  # each modeling file defines its own eager function
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise RuntimeError(f"{type(module).__name__} has no eager_attention_forward")
        return fn
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[name]


def _wrapper(name: str) -> Callable:
    def attention(module, query, key, value, attention_mask, **kw):
        out, weights = _original(name, module)(module, query, key, value, attention_mask, **kw)
        rec = _ACTIVE.get()
        layer = None if rec is None else rec.layer_of.get(id(module))
        if layer is not None:
            if weights is not None:
                rec.from_weights(layer, weights)
            else:
                rec.from_qk(layer, module, query, key, attention_mask, kw)
        return out, weights

    return attention


def _register() -> None:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    for name in _WRAPPED:
        if _PREFIX + name not in AttentionInterface._global_mapping:
            AttentionInterface.register(_PREFIX + name, _wrapper(name))
            AttentionMaskInterface.register(_PREFIX + name, ALL_MASK_ATTENTION_FUNCTIONS[name])


@contextmanager
def _recording(model: Model, rec: _Recorder) -> Iterator[None]:
    """Route the HF module's attention through the recording wrappers for the block."""
    _register()
    configs = {
        id(m.config): m.config
        for m in model.hf.modules()
        if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")
    }
    old = {k: c._attn_implementation for k, c in configs.items()}
    bad = {v for v in old.values() if v not in _WRAPPED}
    if bad:
        raise ValueError(
            f"attention masses need sdpa or eager attention, not {sorted(bad)}: load the model "
            "with attn_implementation='sdpa'"
        )

    # No logits are needed: stop before the final norm instead of building [batch, pos, vocab].
    def stop(module: nn.Module, args: tuple) -> None:
        raise StopForward

    handle = get_path(model.hf, model.family.final_norm).register_forward_pre_hook(stop)
    token = _ACTIVE.set(rec)
    try:
        for k, c in configs.items():
            c._attn_implementation = _PREFIX + old[k]
        yield
    finally:
        _ACTIVE.reset(token)
        handle.remove()
        for k, c in configs.items():
            c._attn_implementation = old[k]


def _batches(
    model: Model, ids: Sequence[Sequence[int]], channels: Sequence[Sequence[ChannelSpans]]
) -> tuple[list[list[int]], list[Tensor]]:
    """Checked inputs: order (long first) and one [channel, 4] tensor per text."""
    if not ids:
        raise ValueError("no texts given: pass a non-empty list of token id lists")
    if len(channels) != len(ids):
        raise ValueError(f"got channels for {len(channels)} texts and {len(ids)} texts")
    n_ch = {len(c) for c in channels}
    if len(n_ch) != 1 or 0 in n_ch:
        raise ValueError("every text needs the same, non-zero number of channels")
    spans = []
    for i, (t, ch) in enumerate(zip(ids, channels, strict=True)):
        n = len(t)
        if n == 0:
            raise ValueError(f"text {i} has no tokens")
        if n > model.n_ctx:
            raise ValueError(
                f"text {i} has {n} tokens, over {model.name}'s context length {model.n_ctx}: "
                "shorten it or drop it"
            )
        sp = torch.tensor(ch, dtype=torch.long).reshape(-1, 4)
        if bool(((sp < 0) | (sp > n)).any() | (sp[:, 1] < sp[:, 0]).any()):
            raise IndexError(f"a channel span of text {i} lies outside its {n} tokens")
        spans.append(sp)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return order, spans


def _pad(model: Model, rows: list[Sequence[int]]) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r))
        mask[i, : len(r)] = 1
    return ids.to(model.device), mask.to(model.device)


@torch.no_grad()
def attention_masses(
    model: Model,
    ids: Sequence[Sequence[int]],
    channels: Sequence[Sequence[ChannelSpans]],
    batch_size: int = 4,
    progress: bool = False,
) -> Float[Tensor, "text layer head channel"]:
    """Attention mass of every channel at every layer and head, one forward pass per batch.

    Args:
        ids: token ids of each text (used as they are; add a BOS yourself if the model needs it).
        channels: for each text, the same number of ``(src_start, src_end, dst_start,
            dst_end)`` token ranges. A channel with an empty source or destination gives NaN.
    Interventions active on the model act here too (the HF module runs with its hooks).
    """
    order, spans = _batches(model, ids, channels)
    layer_of = {
        id(get_path(layer, model.family.attn)): i for i, layer in enumerate(model.layer_modules())
    }
    out: list[Tensor | None] = [None] * len(ids)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, desc="attention mass", unit="batch", disable=not progress):
        batch_spans = torch.stack([spans[i] for i in chunk])
        rec = _Recorder(layer_of, batch_spans, model.n_layers, model.n_heads)
        tok, mask = _pad(model, [ids[i] for i in chunk])
        with _recording(model, rec):
            try:
                model.hf(input_ids=tok, attention_mask=mask, use_cache=False)
            except StopForward:
                pass
        if len(rec.seen) != model.n_layers:
            raise RuntimeError(
                f"attention masses saw {len(rec.seen)} of {model.n_layers} layers: the "
                f"{model.family.name} attention does not call the transformers attention "
                "interface"
            )
        for j, i in enumerate(chunk):
            out[i] = rec.result()[j]
    return torch.stack(out)


@torch.no_grad()
def reference_masses(
    model: Model, ids: Sequence[Sequence[int]], channels: Sequence[Sequence[ChannelSpans]]
) -> Float[Tensor, "text layer head channel"]:
    """The same masses from full eager attention matrices (``output_attentions=True``), one text
    at a time: the independent check of :func:`attention_masses`, and the memory it saves."""
    _, spans = _batches(model, ids, channels)
    out = []
    for t, sp in zip(ids, spans, strict=True):
        tok = torch.tensor([list(t)], device=model.device)
        with eager_attention(model.trees()):
            # logits_to_keep=1: keep the attention matrices, not a [pos, vocab] block.
            res = model.hf(input_ids=tok, output_attentions=True, use_cache=False, logits_to_keep=1)
            att = res.attentions
        per_layer = []
        for w in att:
            cols = []
            for s0, s1, d0, d1 in sp.tolist():
                if s1 <= s0 or d1 <= d0:
                    cols.append(torch.full((w.shape[1],), float("nan")))
                else:
                    cols.append(w[0, :, s0:s1, d0:d1].float().sum(-1).mean(-1).cpu())
            per_layer.append(torch.stack(cols, -1))
        out.append(torch.stack(per_layer))
    return torch.stack(out)

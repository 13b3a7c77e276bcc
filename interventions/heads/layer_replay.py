"""Replaying decoder layers: the rest of a forward pass from recorded layer inputs.

A clean forward records what each decoder layer receives: its hidden states and the keyword
arguments the model computes once per pass (attention mask, rotary position embeddings, ...).
An edit at layer ``l`` changes nothing below it, so its effect needs only layers ``l..top``,
run on the recorded input of layer ``l``. Exact head ablation saves about half its compute this
way. The recorded batch can be repeated row-wise, e.g. once per head to ablate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from thinklens.backends.base import StopForward
from thinklens.model import Model


@dataclass
class LayerInputs:
    """What each decoder layer up to ``top`` received in one forward pass."""

    top: int
    batch: int
    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def record_layer_inputs(
    model: Model, ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], top: int
) -> LayerInputs:
    """Run the plain HF module up to layer ``top``'s input and keep every layer's input."""
    rec = LayerInputs(top, len(ids))
    layers = model.layer_modules()

    def keep(mod: object, args: tuple, kwargs: dict) -> None:
        rec.args.append(args)
        rec.kwargs.append(dict(kwargs))
        if len(rec.args) == top + 1:
            raise StopForward

    handles = [layers[l].register_forward_pre_hook(keep, with_kwargs=True) for l in range(top + 1)]
    try:
        model.hf(input_ids=ids, attention_mask=mask, use_cache=False)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if len(rec.args) != top + 1:
        raise RuntimeError(f"recorded {len(rec.args)} layer inputs, expected {top + 1}")
    return rec


def _repeat(x: Any, batch: int, n: int) -> Any:
    """Repeat each batch row ``n`` times in tensors (and tuples of them) that have a batch axis.

    Batch-major tensors (masks, position ids, rotary tables) have two axes or more; a leading
    axis of 1 broadcasts and stays as it is; 1-d tensors (cache positions) have no batch axis.
    """
    if isinstance(x, Tensor):
        batched = batch > 1 and x.ndim >= 2 and x.shape[0] == batch
        return x.repeat_interleave(n, 0) if batched else x
    if isinstance(x, tuple | list):
        return type(x)(_repeat(v, batch, n) for v in x)
    return x


def replay(
    model: Model, rec: LayerInputs, start: int, repeat: int = 1
) -> Float[Tensor, "rows pos d_model"]:
    """``resid_post`` of layer ``rec.top`` computed from layer ``start``'s recorded input.

    Rows are the recorded texts, each repeated ``repeat`` times (text-major). Edits active
    through ``intervene`` act on the replayed layers as in any forward pass.
    """
    layers = model.layer_modules()
    first_args, first_kwargs = rec.args[start], rec.kwargs[start]
    hidden = first_args[0] if first_args else first_kwargs["hidden_states"]
    hidden = hidden.repeat_interleave(repeat, 0)
    for j in range(start, rec.top + 1):
        args, kwargs = rec.args[j], dict(rec.kwargs[j])
        rest = _repeat(args[1:], rec.batch, repeat)
        kwargs = {k: _repeat(v, rec.batch, repeat) for k, v in kwargs.items()}
        if args:
            out = layers[j](hidden, *rest, **kwargs)
        else:
            out = layers[j](**(kwargs | {"hidden_states": hidden}))
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden

"""Fixed token batches run from a middle layer: the layers below an edit compute what they
computed for the base model, so their output is kept once and the edited model starts there.

A search edits the upper layers of one model again and again (Heretic's kernel leaves, on
average, the lowest 40% of a model's layers untouched) and each trial reads the logits of the
same fixed texts (the KL prompts). ``FixedInputs.capture`` runs the base model over them once,
keeping the input of every ``stride``-th decoder layer; ``logits(model, start)`` then replaces
the decoder layers below the nearest kept layer with stand-ins that hand on the kept input, so
only the layers from there on compute. Exact: the same batches, padding and positions as the
capture, so the result is the full forward pass's (tested against it).

The texts are batched by length (``length_batches``): a pass costs the padded tokens of its
batches, and one long text in a batch of short ones pads them all to its length. The opening
all texts share (a chat template's system turn, ``thinklens.decoding.shared_length``) is run
once a pass and its key-value cache copied to every row, as greedy decoding does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn

from thinklens.decoding import after_opening, cache_kwarg, cache_of, shared_length
from thinklens.model import Model


class _Kept(nn.Module):
    """A decoder layer's stand-in: returns the kept input of the first layer that computes."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, hidden_states: Tensor, *args: object, **kwargs: object) -> Tensor:
        return self.hidden


def decoder_layers(model: Model) -> nn.ModuleList:
    """The model's list of decoder layers (the family's ``layers`` path)."""
    return model.hf.get_submodule(model.family.layers)


def first_edited_layer(model: Model, modules: Sequence[str]) -> int:
    """The lowest decoder layer any of ``modules`` (paths from the top module) lies in: 0 for
    a module outside the layers (the embedding), ``model.n_layers`` when none is given."""
    prefix = f"{model.family.layers}."
    first = model.n_layers
    for path in modules:
        if not path.startswith(prefix):
            return 0
        first = min(first, int(path[len(prefix) :].split(".")[0]))
    return first


@contextmanager
def _layers_kept(layers: nn.ModuleList, below: int, hidden: Tensor) -> Iterator[None]:
    saved = [layers[i] for i in range(below)]
    try:
        for i in range(below):
            layers[i] = _Kept(hidden)
        yield
    finally:
        for i, layer in enumerate(saved):
            layers[i] = layer


def length_batches(lengths: Sequence[int], batch_size: int, slack: float = 1.15) -> list[list[int]]:
    """Indices of ``lengths`` in batches of at most ``batch_size``, shortest first, a batch
    closed early when padding it to its longest row would exceed ``slack`` times its tokens."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: give at least 1")
    out: list[list[int]] = []
    tokens = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        n = lengths[i]
        if out and len(out[-1]) < batch_size and (len(out[-1]) + 1) * n <= slack * (tokens + n):
            out[-1].append(i)
            tokens += n
        else:
            out.append([i])
            tokens = n
    return out


@dataclass
class FixedInputs:
    """Token batches with the base model's input to every ``stride``-th decoder layer kept."""

    #: ids after the shared opening, mask over opening + ids, positions (left-padded).
    batches: list[tuple[Tensor, Tensor, Tensor]]
    kept: dict[int, list[Tensor]]  # layer -> its input (after the opening), one tensor a batch
    base_logits: Float[Tensor, "n vocab"]
    stride: int
    #: The texts' indices in batch order (the batches are by length): row ``j`` of the
    #: concatenated batches is text ``order[j]``.
    order: list[int]
    #: The opening all texts share, run once a pass (empty: nothing shared).
    opening: list[int] = field(default_factory=list)

    def _opened(self, model: Model) -> object | None:
        """The key-value cache of the shared opening under ``model`` (None without one)."""
        if not self.opening:
            return None
        ids = torch.tensor([self.opening], device=model.device)
        return cache_of(model.hf(input_ids=ids, use_cache=True, logits_to_keep=1))

    def _forward(self, model: Model, b: int, opened: object | None) -> Tensor:
        """Last-position logits of batch ``b``, after the opening's cache ``opened``."""
        ids, mask, positions = self.batches[b]
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
        if opened is not None:
            # A copy a batch: the pass appends to the cache it is given.
            cache = copy.deepcopy(opened)
            cache.batch_select_indices(torch.zeros(len(ids), dtype=torch.long, device=ids.device))
            kw[cache_kwarg(model.hf)] = cache
        return model.hf(**kw).logits[:, -1].float().cpu()

    def _unbatched(self, rows: Tensor) -> Tensor:
        """Rows in batch order put back in the texts' order."""
        out = torch.empty_like(rows)
        out[torch.tensor(self.order)] = rows
        return out

    @classmethod
    @torch.no_grad()
    def capture(
        cls,
        model: Model,
        ids: Sequence[Sequence[int]],
        batch_size: int = 16,
        max_bytes: int = 2**30,
        slack: float = 1.15,
    ) -> FixedInputs:
        """Run the base ``model`` over ``ids`` once, keeping layer inputs within ``max_bytes``
        (every layer's if they fit, else every ``stride``-th, so ``logits`` starts lower).
        ``slack``: the padding a batch may add (``length_batches``; ``inf`` batches by count)."""
        if not ids:
            raise ValueError("FixedInputs.capture needs at least one token id list")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes}: give a positive budget")
        layers = decoder_layers(model)
        n = len(layers)
        dtype_bytes = torch.finfo(model.dtype).bits // 8
        one_layer = sum(len(x) for x in ids) * model.d_model * dtype_bytes
        # Padding makes a batch a little larger than its tokens: leave a tenth of the budget.
        stride = max(1, math.ceil(n * one_layer / (0.9 * max_bytes)))
        wanted = list(range(stride, n, stride))
        shared = shared_length(ids) if len(ids) > 1 else 0
        fixed = cls([], {i: [] for i in wanted}, torch.empty(0), stride, [], list(ids[0][:shared]))
        opened = fixed._opened(model)
        logits = []
        groups = length_batches([len(x) - shared for x in ids], batch_size, slack)
        for group in groups:
            fixed.batches.append(after_opening(model, [ids[i][shared:] for i in group], shared))
            seen: dict[int, Tensor] = {}
            hooks = [
                layers[i].register_forward_pre_hook(_keeper(seen, i), with_kwargs=True)
                for i in wanted
            ]
            try:
                logits.append(fixed._forward(model, len(fixed.batches) - 1, opened))
            finally:
                for h in hooks:
                    h.remove()
            for i in wanted:
                fixed.kept[i].append(seen[i])
        fixed.order = [i for g in groups for i in g]
        fixed.base_logits = fixed._unbatched(torch.cat(logits))
        return fixed

    def start_for(self, first_edited: int) -> int:
        """The kept layer ``logits`` starts at for a model edited from ``first_edited`` on."""
        return max((i for i in self.kept if i <= first_edited), default=0)

    @torch.no_grad()
    def logits(self, model: Model, first_edited: int) -> Float[Tensor, "n vocab"]:
        """Last-position logits of the fixed batches under ``model``, whose decoder layers below
        ``first_edited`` must be the base's (``first_edited_layer`` of the edit)."""
        start = self.start_for(first_edited)
        layers = decoder_layers(model)
        # The opening runs whole (one short row): the stand-ins below ``start`` leave their
        # layers' cache at its length, which is where the next pass numbers its tokens from.
        opened = self._opened(model)
        out = []
        for b in range(len(self.batches)):
            if start == 0:
                out.append(self._forward(model, b, opened))
            else:
                with _layers_kept(layers, start, self.kept[start][b]):
                    out.append(self._forward(model, b, opened))
        return self._unbatched(torch.cat(out))


def _keeper(seen: dict[int, Tensor], layer: int):
    """A pre-hook keeping a decoder layer's input hidden states."""

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen[layer] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    return hook

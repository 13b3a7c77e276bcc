"""A key-value cache layer with room to grow: a decoding step writes its token's keys and values
into space kept for them, where ``transformers``' ``DynamicLayer`` concatenates, copying the
whole cache every step: on organism-aligned, refusals counted 8 trials a batch took 3.02 s a
trial with room against 3.30 s concatenating (``benchmarks/results/trial_cost.txt``).

``with_room(cache, room)`` turns a filled ``DynamicCache``'s plain layers into
``RoomyLayer``s in place. Attention then reads a view of the first ``length`` positions: the
same keys and values, so the same logits. Sliding-window and other layer kinds are left as they
are. ``transformers``' ``StaticLayer`` keeps room too, but cannot drop rows
(``batch_select_indices``), which the decoder needs when a row stops. ``joined`` puts the rows
of several caches in one, aligned at their newest token (``thinklens.in_flight``'s rows join a
running batch so).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers.cache_utils import DynamicLayer

KV = Float[Tensor, "batch heads pos head_dim"]


class RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of buffers longer than them."""

    def __init__(self, keys: KV, values: KV, room: int, limit: int | None = None) -> None:
        super().__init__()
        self.device = keys.device
        self.is_initialized = True
        self.length = keys.shape[-2]
        #: The most positions it will hold (None: no bound): its room never grows past them.
        self.limit = limit
        self._k = self._spaced(keys, self.length + room)
        self._v = self._spaced(values, self.length + room)
        self._views()

    @classmethod
    def stacked(
        cls, parts: list[tuple[KV, KV]], width: int, room: int, limit: int | None = None
    ) -> RoomyLayer:
        """The rows of every part's keys and values in one layer ``width`` positions long, each
        part's positions at the right end (the positions to their left zero: padding)."""
        first = parts[0][0]
        rows = sum(k.shape[0] for k, _ in parts)
        shape = (rows, *first.shape[1:-2], width + room, first.shape[-1])
        buffers = (first.new_zeros(shape), parts[0][1].new_zeros(shape))
        start = 0
        for part in parts:
            n, at = part[0].shape[0], width - part[0].shape[-2]
            for buffer, x in zip(buffers, part, strict=True):
                buffer[start : start + n, ..., at:width, :] = x
            start += n
        layer = cls.__new__(cls)
        DynamicLayer.__init__(layer)
        layer.device, layer.is_initialized = first.device, True
        layer.length, layer.limit = width, limit
        layer._k, layer._v = buffers
        layer._views()
        return layer

    @staticmethod
    def _spaced(x: KV, capacity: int) -> KV:
        out = x.new_empty((*x.shape[:-2], capacity, x.shape[-1]))
        out[..., : x.shape[-2], :] = x
        return out

    def _views(self) -> None:
        self.keys = self._k[..., : self.length, :]
        self.values = self._v[..., : self.length, :]

    def update(self, key_states: KV, value_states: KV, *args, **kwargs) -> tuple[KV, KV]:
        """Write the new positions after the cached ones (doubling the room when full)."""
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            capacity = max(end, 2 * self.capacity)
            if self.limit is not None:
                capacity = max(end, min(capacity, self.limit))
            self._k = self._spaced(self.keys, capacity)
            self._v = self._spaced(self.values, capacity)
        self._k[..., self.length : end, :] = key_states
        self._v[..., self.length : end, :] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    @property
    def capacity(self) -> int:
        """The positions its buffers hold (its length and the room after it)."""
        return self._k.shape[-2]

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep the rows ``indices`` (the room is kept)."""
        capacity = self.capacity
        self._k = self._spaced(self.keys[indices], capacity)
        self._v = self._spaced(self.values[indices], capacity)
        self._views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.batch_select_indices(
            torch.arange(self._k.shape[0], device=self.device).repeat_interleave(repeats)
        )

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): give how many tokens to remove, as < 0")
        self.length -= min(-tokens_to_remove, self.length)
        self._views()

    def reset(self) -> None:
        self.length = 0
        self._views()


def with_room(cache: object, room: int, most: int | None = None) -> object:
    """``cache`` with each plain ``DynamicLayer`` holding room for ``room`` more positions
    (changed in place, and returned), growing to at most ``most`` more than it holds now (so a
    decoder that writes at most that many never holds more than the concatenating cache would);
    a cache without ``layers`` is returned as it is."""
    layers = getattr(cache, "layers", None)
    if layers is None or room < 1:
        return cache
    room = room if most is None else min(room, most)
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            limit = None if most is None else layer.keys.shape[-2] + most
            layers[i] = RoomyLayer(layer.keys, layer.values, room, limit)
    return cache


def check_joinable(cache: object) -> None:
    """A clear error unless every layer of ``cache`` is plain (``joined`` can realign it)."""
    for i, layer in enumerate(cache.layers):
        if type(layer) not in (DynamicLayer, RoomyLayer):
            raise ValueError(
                f"layer {i} keeps a {type(layer).__name__}: only plain key-value layers can be "
                "joined; decode these rows in batches of their own (greedy_continue, or "
                "search's schedule='batches')"
            )


def joined(
    caches: list[tuple[object, Int[Tensor, "batch width"]]], room: int, most: int | None = None
) -> tuple[object, Int[Tensor, "rows width"]]:
    """The rows of several caches (each with its attention mask) in the first one, in order:
    each cache's positions aligned at the right (its newest token in the last column), padding
    to the left of the shorter ones, and leading columns that no row uses dropped. Positions read
    from the mask (as a decoding step numbers them) stay each row's own. ``room`` and ``most``
    as ``with_room``. Plain layers only (a sliding window or other kinds cannot be realigned)."""
    for cache, _ in caches:  # all checked before any layer changes
        check_joinable(cache)
    used = [m.any(0).int().argmax().item() if m.any() else m.shape[1] for _, m in caches]
    widths = [m.shape[1] - u for (_, m), u in zip(caches, used, strict=True)]
    width = max(widths)
    masks = [m.new_zeros(m.shape[0], width) for _, m in caches]
    for out, (_, m), u, w in zip(masks, caches, used, widths, strict=True):
        out[:, width - w :] = m[:, u:]
    first = caches[0][0]
    room = room if most is None else min(room, most)
    limit = None if most is None else width + most
    for i in range(len(first.layers)):
        parts = [
            (c.layers[i].keys[..., u:, :], c.layers[i].values[..., u:, :])
            for (c, _), u in zip(caches, used, strict=True)
        ]
        first.layers[i] = RoomyLayer.stacked(parts, width, room, limit)
    return first, torch.cat(masks)

"""A cache with room gives the logits of transformers' concatenating cache, step by step, as it
grows past its room, drops rows and is cropped."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from thinklens.decoding import cache_kwarg, cache_of
from thinklens.kv_room import RoomyLayer, with_room
from thinklens.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", backend="nnsight")


def _step(hf, ids, cache):
    out = hf(input_ids=ids, use_cache=True, **{cache_kwarg(hf): cache})
    return out.logits[:, -1], cache_of(out)


@torch.no_grad()
def test_room_gives_the_concatenating_caches_logits(model):
    hf = model.hf
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (3, 6), generator=g)
    plain = cache_of(hf(input_ids=ids, use_cache=True))
    roomy = cache_of(hf(input_ids=ids, use_cache=True))
    with_room(roomy, 2)  # fewer places than the steps below: it must grow
    assert all(isinstance(layer, RoomyLayer) for layer in roomy.layers)
    keep = torch.tensor([2, 0])
    for t in range(5):
        step = torch.randint(5, 100, (plain.layers[0].keys.shape[0], 1), generator=g)
        want, plain = _step(hf, step, plain)
        got, roomy = _step(hf, step, roomy)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert roomy.get_seq_length() == plain.get_seq_length() == 7 + t
        if t == 2:  # a row leaves the batch, the others are reordered
            plain.batch_select_indices(keep)
            roomy.batch_select_indices(keep)
    for layer_p, layer_r in zip(plain.layers, roomy.layers, strict=True):
        torch.testing.assert_close(layer_r.keys, layer_p.keys, rtol=0, atol=0)
    plain.crop(-3)
    roomy.crop(-3)
    assert roomy.get_seq_length() == plain.get_seq_length() == 8
    step = torch.randint(5, 100, (2, 1), generator=g)
    torch.testing.assert_close(
        _step(hf, step, roomy)[0], _step(hf, step, plain)[0], atol=1e-6, rtol=0
    )


def test_with_room_changes_plain_layers_only():
    k = torch.randn(2, 1, 3, 4)
    plain, sliding = DynamicLayer(), DynamicSlidingWindowLayer(sliding_window=8)
    plain.update(k, k)
    sliding.update(k, k)
    cache = DynamicCache()
    cache.layers = [plain, sliding, DynamicLayer()]  # the last never filled
    with_room(cache, 4)
    assert type(cache.layers[0]) is RoomyLayer and cache.layers[1] is sliding
    assert type(cache.layers[2]) is DynamicLayer
    torch.testing.assert_close(cache.layers[0].keys, k)
    assert with_room(None, 4) is None
    with pytest.raises(ValueError, match="as < 0"):
        cache.layers[0].crop(1)


def test_room_grows_no_further_than_the_positions_left():
    """With ``most``, the room never grows past what a decoder can still write."""
    k = torch.randn(2, 1, 5, 4)
    cache = DynamicCache()
    layer = DynamicLayer()
    layer.update(k, k)
    cache.layers = [layer]
    with_room(cache, 2, most=3)
    roomy = cache.layers[0]
    step = torch.randn(2, 1, 1, 4)
    capacities = []
    for _ in range(3):
        roomy.update(step, step)
        capacities.append(roomy.capacity)
    assert capacities == [7, 7, 8]  # 5 + 2, then doubled but held to 5 + 3
    roomy.update(step, step)  # past the bound still works (grows to what it must hold)
    assert roomy.get_seq_length() == 9 and roomy.capacity == 9
    torch.testing.assert_close(roomy.keys[..., :5, :], k)


def test_joined_refuses_layers_it_cannot_realign():
    from thinklens.kv_room import joined

    k = torch.randn(1, 1, 3, 4)
    mask = torch.ones(1, 3, dtype=torch.long)
    caches = []
    for _ in range(2):  # a plain layer, then a sliding one (as Gemma-3 mixes them)
        layers = [DynamicLayer(), DynamicSlidingWindowLayer(sliding_window=8)]
        for layer in layers:
            layer.update(k, k)
        cache = DynamicCache()
        cache.layers = layers
        caches.append((cache, mask))
    with pytest.raises(ValueError, match="layer 1 keeps a DynamicSlidingWindowLayer"):
        joined(caches, room=4)
    assert type(caches[0][0].layers[0]) is DynamicLayer  # nothing changed before the error

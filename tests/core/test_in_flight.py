"""Jobs that join a running batch get the tokens greedy decoding gives them alone."""

from __future__ import annotations

import pytest
import torch

from thinklens.decoding import first_pass, greedy_continue
from thinklens.in_flight import InFlight
from thinklens.kv_room import RoomyLayer, joined
from thinklens.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", backend="nnsight")


def _prefixes(m, prompts) -> list[list[int]]:
    return [m.tokenizer(m.chat(p), add_special_tokens=False)["input_ids"] for p in prompts]


JOBS = {
    "a": ["Hi there?", "Name a colour."],
    "b": ["What is two plus two, please?"],
    "c": ["Say yes.", "A longer question about the weather in spring?", "Why?"],
}


@pytest.mark.parametrize("answer_tokens", [None, 2])
def test_jobs_joining_at_any_step_get_greedy_decodings_tokens(model, answer_tokens):
    want = {
        k: greedy_continue(model, _prefixes(model, p), 14, answer_tokens=answer_tokens)
        for k, p in JOBS.items()
    }
    for late in (0, 1, 5):  # "c" joins this many steps after "a" and "b"
        heard = []
        flight = InFlight(model, 14, answer_tokens, on_rows=heard.append)
        flight.add("a", _prefixes(model, JOBS["a"]))
        flight.add("b", _prefixes(model, JOBS["b"]))
        got = {}
        steps = 0
        while flight:
            if steps == late:
                flight.add("c", _prefixes(model, JOBS["c"]))
            got |= flight.step()
            steps += 1
        assert got == want
        # Each pass's rows were heard before it ran: the last list names the running jobs.
        assert all(set(keys) <= set(JOBS) for keys in heard)
        assert heard[-1]


@torch.no_grad()
def test_joined_keeps_each_rows_keys_and_positions(model):
    p = _prefixes(model, ["Hi?", "What is two plus two, please?"])
    rules = dict(max_new_tokens=5, answer_tokens=None, on_rows=lambda idx: None)
    a, mask_a, _ = first_pass(model, [p[0]], [[]], groups=[0], **rules)
    b, mask_b, _ = first_pass(model, [p[1]], [[]], groups=[0], **rules)
    keys_a, keys_b = a.layers[0].keys.clone(), b.layers[0].keys.clone()
    cache, mask = joined([(a, mask_a), (b, mask_b)], room=4, most=5)
    width = max(mask_a.shape[1], mask_b.shape[1])
    assert mask.shape == (2, width)
    assert mask[0].sum() == mask_a.sum() and mask[1].sum() == mask_b.sum()
    layer = cache.layers[0]
    assert isinstance(layer, RoomyLayer) and layer.capacity == width + 4
    torch.testing.assert_close(layer.keys[0, :, width - keys_a.shape[-2] :], keys_a[0])
    torch.testing.assert_close(layer.keys[1], keys_b[0])
    assert layer.keys[0, :, : width - keys_a.shape[-2]].abs().sum() == 0  # padding is zero


def test_bad_jobs_get_clear_errors(model):
    flight = InFlight(model, 4)
    flight.add("a", _prefixes(model, ["Hi?"]))
    with pytest.raises(ValueError, match="already in flight"):
        flight.add("a", _prefixes(model, ["Hi?"]))
    with pytest.raises(ValueError, match="non-empty"):
        flight.add("b", [[]])
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        InFlight(model, 0)


def test_a_job_that_stops_at_its_first_pass_is_handed_back_at_the_next_step(model):
    prefixes = _prefixes(model, JOBS["a"])
    flight = InFlight(model, 1)
    flight.add("a", prefixes)
    assert flight.running == 0 and len(flight) == 1  # nothing writes; not yet handed back
    assert flight.step() == {"a": greedy_continue(model, prefixes, 1)}
    assert not flight


def test_a_model_with_sliding_window_layers_is_refused_at_its_first_job():
    gemma = tiny_model("gemma3", backend="nnsight")
    flight = InFlight(gemma, 4)
    with pytest.raises(ValueError, match="only plain key-value layers can be joined"):
        flight.add("a", _prefixes(gemma, JOBS["a"]))
    assert not flight  # nothing half-added


def test_keep_rows_keeps_the_rows_cache_and_mask(model):
    from thinklens.decoding import keep_rows

    p = _prefixes(model, JOBS["c"])
    rules = dict(max_new_tokens=5, answer_tokens=None, on_rows=lambda idx: None)
    cache, mask, _ = first_pass(model, p, [[] for _ in p], groups=[0, 1, 2], **rules)
    keys = cache.layers[0].keys.clone()
    kept = keep_rows(cache, mask, [2, 0])
    assert torch.equal(kept, mask[[2, 0]])
    torch.testing.assert_close(cache.layers[0].keys, keys[[2, 0]])


def test_a_job_stops_rows_where_greedy_continue_stops_them(model):
    """``stop_when`` cuts a row in flight where ``greedy_continue`` cuts it."""
    prefixes = _prefixes(model, JOBS["c"])
    full = greedy_continue(model, prefixes, 10)
    cue = model.tokenizer.decode(full[0][1:2], skip_special_tokens=True)

    def seen(text: str) -> bool:
        return bool(cue) and cue in text

    want = greedy_continue(model, prefixes, 10, stop_when=seen)
    flight = InFlight(model, 10, stop_when=seen)
    flight.add("c", prefixes)
    got = {}
    while flight:
        got |= flight.step()
    assert got == {"c": want}
    assert len(want[0]) < len(full[0])

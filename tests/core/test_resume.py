"""Fixed batches run from a middle layer equal the full forward pass of the edited model."""

from __future__ import annotations

import pytest
import torch

from thinklens.decoding import MIN_SHARED, shared_length
from thinklens.resume import FixedInputs, decoder_layers, first_edited_layer, length_batches
from thinklens.testing import tiny_model

FAMILIES = ["llama", "gemma3", "qwen3_moe"]


TEXTS = ["Name a fruit.", "Write two lines about the sea, please.", "Hi", "Count to five."]


def _ids(m, chat: bool = False) -> list[list[int]]:
    """The texts' ids; ``chat``: in the chat template, so they share its opening."""
    if chat:
        return m.chat_ids(TEXTS)
    return [m.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


def _full(m, fixed: FixedInputs, chat: bool = False) -> torch.Tensor:
    """Brute force: the whole model over each text alone, no padding, in the texts' order."""
    with torch.no_grad():
        rows = [m.hf(input_ids=torch.tensor([i])).logits[:, -1].float() for i in _ids(m, chat)]
    return torch.cat(rows)


def _perturb(m, layer: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Add noise to every weight of one decoder layer; the saved copies to restore."""
    gen = torch.Generator().manual_seed(layer)
    saved = []
    for p in decoder_layers(m)[layer].parameters():
        saved.append((p, p.detach().clone()))
        with torch.no_grad():
            p.add_(0.2 * torch.randn(p.shape, generator=gen).to(p.dtype))
    return saved


def _restore(saved) -> None:
    with torch.no_grad():
        for p, orig in saved:
            p.copy_(orig)


@pytest.mark.parametrize("chat", [False, True], ids=["own", "shared-opening"])
@pytest.mark.parametrize("family", FAMILIES)
def test_running_from_the_first_edited_layer_equals_the_full_pass(family, chat):
    """From each kept layer (0: the whole model), under an edit of that layer; with texts in the
    chat template the shared opening is run once a pass and its cache copied to the rows."""
    m = tiny_model(family, backend="nnsight")
    fixed = FixedInputs.capture(m, _ids(m, chat), batch_size=3)
    assert fixed.stride == 1 and sorted(fixed.kept) == [1, 2]
    assert len(fixed.opening) == (shared_length(_ids(m, chat)) if chat else 0)
    assert not chat or len(fixed.opening) >= MIN_SHARED
    torch.testing.assert_close(fixed.base_logits, _full(m, fixed, chat), atol=1e-5, rtol=1e-5)
    for first in (0, 1, 2):
        saved = _perturb(m, first)
        try:
            edited = _full(m, fixed, chat)
            assert (edited - fixed.base_logits).abs().max() > 1e-2  # the edit matters
            torch.testing.assert_close(fixed.logits(m, first), edited, atol=1e-5, rtol=1e-5)
        finally:
            _restore(saved)
    # The layers come back: with no edit the result is the base's again.
    torch.testing.assert_close(_full(m, fixed, chat), fixed.base_logits, atol=1e-5, rtol=1e-5)


def test_the_kept_inputs_are_used_so_an_edit_below_the_start_is_not_seen():
    m = tiny_model("llama", backend="nnsight")
    fixed = FixedInputs.capture(m, _ids(m), batch_size=4)
    saved = _perturb(m, 0)
    try:
        wrong = fixed.logits(m, 2)  # told (wrongly) that layers 0-1 are the base's
        assert (_full(m, fixed) - wrong).abs().max() > 1e-2
        torch.testing.assert_close(wrong, fixed.base_logits, atol=1e-5, rtol=1e-5)
    finally:
        _restore(saved)


def test_a_small_budget_keeps_fewer_layers_and_starts_lower():
    m = tiny_model("llama", backend="nnsight")
    ids = _ids(m)
    one_layer = sum(map(len, ids)) * m.d_model * 4
    fixed = FixedInputs.capture(m, ids, max_bytes=int(1.2 * one_layer))
    assert fixed.stride == 3 and fixed.kept == {}
    assert fixed.start_for(2) == 0
    saved = _perturb(m, 2)
    try:
        torch.testing.assert_close(fixed.logits(m, 2), _full(m, fixed), atol=1e-5, rtol=1e-5)
    finally:
        _restore(saved)
    two = FixedInputs.capture(m, ids, max_bytes=int(2.5 * one_layer))
    assert two.stride == 2 and sorted(two.kept) == [2] and two.start_for(1) == 0
    with pytest.raises(ValueError, match="positive budget"):
        FixedInputs.capture(m, ids, max_bytes=0)


def test_first_edited_layer_reads_the_module_paths():
    m = tiny_model("llama", backend="nnsight")
    layers = m.family.layers
    assert first_edited_layer(m, []) == m.n_layers
    assert first_edited_layer(m, [f"{layers}.2.self_attn.o_proj", f"{layers}.1.mlp.down_proj"]) == 1
    assert first_edited_layer(m, ["model.embed_tokens", f"{layers}.2.mlp.down_proj"]) == 0


def test_length_batches_group_similar_lengths_and_keep_every_index():
    lengths = [60, 116, 62, 58, 64, 65, 3, 61]
    groups = length_batches(lengths, batch_size=4)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) <= 4 for g in groups)
    for g in groups:  # padding to the longest row costs at most 15% more than the tokens
        assert len(g) * max(lengths[i] for i in g) <= 1.15 * sum(lengths[i] for i in g)
    assert [1] in groups and [6] in groups  # the outliers ride alone
    with pytest.raises(ValueError, match="batch_size"):
        length_batches(lengths, 0)

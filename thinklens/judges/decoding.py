"""Left-padded greedy generation of a few tokens per judge prompt, in batches of similar length."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id: the tokenizer's pad token, else its end-of-sequence token (Llama's case)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(tid, list):
            tid = tid[0] if tid else None
        if tid is not None:
            return int(tid)
    return 0


def left_pad(
    ids: Sequence[Sequence[int]], pad: int
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """Input ids padded on the left to one length, and their attention mask.

    The tokenizer's own ``padding_side`` is left alone: it is shared state other code relies on.
    """
    width = max(len(seq) for seq in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        if seq:
            input_ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return input_ids, mask


def model_device(model: Any) -> torch.device:
    """Where the model's inputs go (CPU for a stand-in without parameters)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    params = getattr(model, "parameters", None)
    if callable(params):
        first = next(iter(params()), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


@torch.no_grad()
def greedy_batches(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 8,
    add_special_tokens: bool = False,
) -> Iterator[tuple[list[int], list[str]]]:
    """Greedy continuations of ``texts``, yielded per batch as (indices into texts, new text).

    Texts are sorted by token length so a batch pads little; the caller gets each batch as soon
    as it is done (to cache it before the next one runs). Special tokens are dropped from the
    decoded text (Llama Guard's end of turn, for example).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not texts:
        return
    enc = [tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]), reverse=True)
    pad = pad_id(tokenizer)
    device = model_device(model)
    # Greedy: the model's own sampling defaults (a generation_config with temperature) are unset.
    kw = dict(do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=pad)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = left_pad([enc[i] for i in idx], pad)
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            **kw,
        )
        new = out[:, input_ids.shape[1] :]
        yield idx, tokenizer.batch_decode(new, skip_special_tokens=True)

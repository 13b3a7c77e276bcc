"""Batched generation with the plain HF ``generate`` (edits active through their hooks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from thinklens.model import Model


@torch.no_grad()
def generate(
    model: Model,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    chat: bool = True,
    system: str | None = None,
    seed: int | None = 0,
    progress: bool = False,
) -> list[str]:
    """The model's responses (new tokens only, special tokens dropped), one per prompt.

    Args:
        prompts: user prompts (wrapped in the chat template when ``chat``) or full texts.
        temperature: 0 is greedy; above 0 samples with ``top_p``.
        seed: seeds sampling so a run can be repeated.
    Generation stops at the end-of-turn token, which ends the answer after the thinking.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given: generate needs a non-empty list of prompts")
    texts = [model.chat(p, system) if chat else p for p in prompts]
    tok = model.tokenizer
    sample = temperature > 0
    kw = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=tok.pad_token_id)
    if sample:
        kw |= dict(temperature=temperature, top_p=top_p)
    else:  # silence the model's own sampling defaults in greedy mode
        kw |= dict(temperature=None, top_p=None, top_k=None)
    eos = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None, tok.unk_token_id}
    kw["eos_token_id"] = sorted(eos)
    if seed is not None:
        torch.manual_seed(seed)
    out: list[str] = []
    starts = range(0, len(texts), batch_size)
    for i in tqdm(starts, desc="generate", unit="batch", disable=not progress):
        ids, mask = model.tokenize(texts[i : i + batch_size], padding_side="left")
        gen = model.hf.generate(input_ids=ids, attention_mask=mask, **kw)
        out.extend(tok.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True))
    return out

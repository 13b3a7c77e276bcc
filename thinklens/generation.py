"""Batched generation: the plain HF ``generate`` (edits active through their hooks), or vLLM.

Both engines take the same prompts through the same chat template and tokenization and return
the same thing (the decoded new tokens), so traces and refusal judging work on either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

from thinklens.embedded import ORGANISMS
from thinklens.loading import resolve_source
from thinklens.model import Model

Engine = Literal["hf", "vllm"]


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
    engine: Engine = "hf",
    engine_kwargs: dict | None = None,
    skip_special_tokens: bool = True,
) -> list[str]:
    """The model's responses (new tokens only, special tokens dropped), one per prompt.

    Args:
        prompts: user prompts (wrapped in the chat template when ``chat``) or full texts.
        temperature: 0 is greedy; above 0 samples with ``top_p``.
        seed: seeds sampling so a run can be repeated.
        engine: ``"hf"`` (the model's own ``generate``; interventions act) or ``"vllm"``
            (``pip install vllm``; for bulk generation on GPUs, no interventions; ``batch_size``
            is left to vLLM's scheduler).
        engine_kwargs: extra ``vllm.LLM`` arguments, e.g. ``{"tensor_parallel_size": 2}``;
            ``"model"`` names the weights when ``model.name`` is not a hub name or folder.
        skip_special_tokens: drop special tokens from the decoded text (the HF engine; keep
            them to see which markers a model writes).
    Generation stops at the end-of-turn token, which ends the answer after the thinking.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given: generate needs a non-empty list of prompts")
    if engine not in ("hf", "vllm"):
        raise ValueError(f"unknown engine {engine!r}; choose 'hf' or 'vllm'")
    texts = [model.chat(p, system) if chat else p for p in prompts]
    tok = model.tokenizer
    eos = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None, tok.unk_token_id}
    if engine == "vllm":
        params = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        return _generate_vllm(model, texts, sorted(eos), seed, progress, engine_kwargs, **params)
    if model.remote:
        raise NotImplementedError(
            f"{model.name} runs on NDIF (remote=True), so its weights are not here for the HF "
            "engine: generate with engine='vllm' on a GPU machine"
        )
    sample = temperature > 0
    kw = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=tok.pad_token_id)
    if sample:
        kw |= dict(temperature=temperature, top_p=top_p)
    else:  # silence the model's own sampling defaults in greedy mode
        kw |= dict(temperature=None, top_p=None, top_k=None)
    kw["eos_token_id"] = sorted(eos)
    if seed is not None:
        torch.manual_seed(seed)
    out: list[str] = []
    starts = range(0, len(texts), batch_size)
    for i in tqdm(starts, desc="generate", unit="batch", disable=not progress):
        ids, mask = model.tokenize(texts[i : i + batch_size], padding_side="left")
        gen = model.hf.generate(input_ids=ids, attention_mask=mask, **kw)
        new = gen[:, ids.shape[1] :]
        out.extend(tok.batch_decode(new, skip_special_tokens=skip_special_tokens))
    return out


def _generate_vllm(
    model: Model,
    texts: list[str],
    eos: list[int],
    seed: int | None,
    progress: bool,
    engine_kwargs: dict | None,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
) -> list[str]:
    """The same request through vLLM: the same token ids in, the same decoding out."""
    if model.interventions:
        raise NotImplementedError(
            "interventions do not act under vLLM: it runs its own kernels, not the module "
            "hooks (or nnsight traces) edits are made of. Generate with engine='hf', or bake "
            "the edit into the weights (thinklens.interventions.apply, then export)"
        )
    try:
        import vllm
    except ImportError:
        raise ImportError(
            "engine='vllm' needs vLLM, which is not installed: pip install vllm "
            "(Linux with a CUDA GPU)"
        ) from None
    llm = _vllm_engine(vllm, model, engine_kwargs or {})
    sample = temperature > 0
    params = vllm.SamplingParams(
        max_tokens=max_new_tokens,
        temperature=temperature if sample else 0.0,  # 0 is greedy in vLLM
        top_p=top_p if sample else 1.0,
        seed=seed if sample else None,
        stop_token_ids=eos,
        skip_special_tokens=True,
    )
    tok = model.tokenizer
    # Token ids, not strings: vLLM would add special tokens (a second BOS) to a templated text.
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    outs = llm.generate([{"prompt_token_ids": list(i)} for i in ids], params, use_tqdm=progress)
    # Decoded with the model's tokenizer, as the HF engine does, so both give the same text.
    return [tok.decode(list(o.outputs[0].token_ids), skip_special_tokens=True) for o in outs]


def _vllm_engine(vllm: object, model: Model, engine_kwargs: dict) -> object:
    """The model's vLLM engine, loaded once per set of arguments."""
    source = engine_kwargs.get("model")
    if source is None and model.name in ORGANISMS:
        raise ValueError(
            f"{model.name} is its base model with an adapter merged in, which vLLM cannot load "
            "by name: save it (model.hf.save_pretrained(DIR), model.tokenizer.save_pretrained"
            "(DIR)) and use tl.load_model(DIR)"
        )
    dtype = str(model.dtype).removeprefix("torch.")
    source = source or resolve_source(model.name)[0]
    kwargs = {"dtype": dtype, "seed": 0, **engine_kwargs, "model": source}
    key = repr(sorted(kwargs.items()))
    cached = model.engines.get("vllm")
    if cached is None or cached[0] != key:
        model.engines.pop("vllm", None)  # one engine at a time: each holds its GPU memory
        model.engines["vllm"] = (key, vllm.LLM(**kwargs))
    return model.engines["vllm"][1]

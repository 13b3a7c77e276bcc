"""Batched generation: the plain HF ``generate`` (edits active through their hooks), or vLLM.

Both engines take the same prompts through the same chat template and tokenization and return
the same thing (the decoded new tokens), so traces and refusal judging work on either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from thinklens.batching import auto_batch_size, run_batched
from thinklens.decoding import greedy_continue, stop_token_ids
from thinklens.embedded import ORGANISMS
from thinklens.formats import clean_response, special_markers
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
    batch_size: int | None = None,
    chat: bool = True,
    system: str | None = None,
    seed: int | None = 0,
    progress: bool = False,
    engine: Engine = "hf",
    engine_kwargs: dict | None = None,
    skip_special_tokens: bool = True,
    answer_tokens: int | None = None,
) -> list[str]:
    """The model's responses (new tokens only, special tokens dropped), one per prompt.

    Args:
        prompts: user prompts (wrapped in the chat template when ``chat``) or full texts.
        temperature: 0 is greedy; above 0 samples with ``top_p``.
        batch_size: prompts per ``generate`` call (HF engine). None chooses it from free
            memory, the prompt length and ``max_new_tokens``, and halves it on out-of-memory;
            a number is kept as given (out-of-memory then raises).
        seed: seeds sampling so a run can be repeated.
        engine: ``"hf"`` (interventions act; greedy decoding runs ``thinklens.decoding``'s
            cached loop, which gives the tokens of the model's own ``generate``, sampling runs
            ``generate``) or ``"vllm"``
            (``pip install vllm``; for bulk generation on GPUs, no interventions; ``batch_size``
            is left to vLLM's scheduler).
        engine_kwargs: extra ``vllm.LLM`` arguments, e.g. ``{"tensor_parallel_size": 2}``;
            ``"model"`` names the weights when ``model.name`` is not a hub name or folder.
        skip_special_tokens: drop special tokens from the decoded text (the HF engine; keep
            them to see which markers a model writes).
        answer_tokens: stop each response this many tokens after its thinking closes (HF
            engine): enough answer to judge, without generating the rest of it.
    Generation stops at the end-of-turn token, which ends the answer after the thinking.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given: generate needs a non-empty list of prompts")
    if engine not in ("hf", "vllm"):
        raise ValueError(f"unknown engine {engine!r}; choose 'hf' or 'vllm'")
    texts = [model.chat(p, system) if chat else p for p in prompts]
    tok = model.tokenizer
    eos = stop_token_ids(tok)
    if engine == "vllm":
        if answer_tokens is not None:
            raise ValueError("answer_tokens needs the HF engine: vLLM has no stop after thinking")
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
    if answer_tokens is not None:
        if answer_tokens < 1:
            raise ValueError(f"answer_tokens={answer_tokens}: give at least 1, or None")
        kw["answer_tokens"] = answer_tokens
    if seed is not None:
        torch.manual_seed(seed)

    def run(chunk: list[str]) -> list[str]:
        ids, mask = model.tokenize(chunk, padding_side="left")
        if not sample:
            # The tokens of the model's own greedy ``generate``, stopped rows leaving the batch.
            rows = [r[m.bool()].tolist() for r, m in zip(ids, mask, strict=True)]
            new = greedy_continue(model, rows, max_new_tokens, len(rows), answer_tokens)
            return decode_new(model, new, skip_special_tokens)
        call = dict(kw)
        if "answer_tokens" in call:
            stop = AnswerStop(tok, model.thinking.close, ids.shape[1], call.pop("answer_tokens"))
            call["stopping_criteria"] = StoppingCriteriaList([stop])
        gen = model.hf.generate(input_ids=ids, attention_mask=mask, **call)
        return decode_new(model, gen[:, ids.shape[1] :].tolist(), skip_special_tokens)

    first = 0
    if batch_size is None:
        longest = max(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
        first = auto_batch_size(model, longest, len(texts), new_tokens=max_new_tokens)
    out: list[str] = []
    bar = tqdm(total=len(texts), desc="generate", unit="prompt", disable=not progress)
    # same_rng: a chunk retried after out-of-memory samples as the failed attempt would have.
    for chunk, answers in run_batched(texts, run, batch_size, first, "generate", same_rng=sample):
        out.extend(answers)
        bar.update(len(chunk))
    bar.close()
    return out


def decode_new(
    model: Model, new: Sequence[Sequence[int]], skip_special_tokens: bool = True
) -> list[str]:
    """New token ids as ``generate`` returns them: decoded, special tokens dropped except those
    the thinking markers are made of."""
    tok = model.tokenizer
    if skip_special_tokens and special_markers(tok, model.thinking):
        outs = tok.batch_decode(new, skip_special_tokens=False)
        return [clean_response(o, tok, model.thinking) for o in outs]
    return tok.batch_decode(new, skip_special_tokens=skip_special_tokens)


@torch.no_grad()
def continue_ids(
    model: Model,
    prefixes: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    answer_tokens: int | None = None,
) -> list[list[int]]:
    """Greedy new token ids after each token prefix (no re-tokenization; edits act).

    For continuing a model's own output exactly: decoded text tokenizes back differently at
    some boundaries (a marker and the newlines after it), which is a different input.
    ``answer_tokens``: stop a row that many tokens after its new tokens close the thinking
    (0: at the token that closes it).
    """
    if not prefixes or any(len(p) == 0 for p in prefixes):
        raise ValueError("continue_ids needs non-empty token prefixes")
    tok = model.tokenizer
    eos = stop_token_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # as pad_ids
    kw = dict(
        max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None
    )
    out: list[list[int]] = []
    for i in range(0, len(prefixes), batch_size):
        ids, mask = model.pad_ids(prefixes[i : i + batch_size], padding_side="left")
        width = ids.shape[1]
        call = dict(kw, eos_token_id=sorted(eos), pad_token_id=pad)
        if answer_tokens is not None:
            stop = AnswerStop(tok, model.thinking.close, width, answer_tokens)
            call["stopping_criteria"] = StoppingCriteriaList([stop])
        gen = model.hf.generate(input_ids=ids, attention_mask=mask, **call)
        for row in gen[:, width:].tolist():
            # Trailing padding (a row that ended early) is not part of the continuation.
            while row and row[-1] == pad:
                row.pop()
            out.append(row)
    return out


class AnswerStop(StoppingCriteria):
    """Stops each row ``n`` tokens after its new tokens first contain ``close`` (0: at once)."""

    def __init__(self, tokenizer: object, close: str, prompt_len: int, n: int) -> None:
        self.tokenizer, self.close, self.start, self.n = tokenizer, close, prompt_len, n
        self.closed_at: dict[int, int] = {}  # row -> length when the marker was complete
        # A marker is a few tokens; its text can only have been completed in the last few.
        self.tail = len(tokenizer(close, add_special_tokens=False)["input_ids"]) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kw: object) -> torch.Tensor:
        length = input_ids.shape[1]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            if row not in self.closed_at:
                tail = input_ids[row, max(self.start, length - self.tail) :]
                text = self.tokenizer.decode(tail, skip_special_tokens=False)
                if self.close in text:
                    self.closed_at[row] = length
            done[row] = row in self.closed_at and length - self.closed_at[row] >= self.n
        return done


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

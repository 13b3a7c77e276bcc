"""Tiny random models and a tiny ChatML tokenizer, built offline in seconds, for tests and demos."""

from __future__ import annotations

import csv
import itertools
import json
import random
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

#: ChatML that, like SmolLM2's, inserts a default system prompt when none is given.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: R1-style variant whose generation prompt already opens the thinking.
R1_TEMPLATE = CHATML_TEMPLATE.replace(
    "'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'"
)

SPECIAL = ["<|im_start|>", "<|im_end|>", "<|pad|>"]

#: Short texts in the tiny tokenizer's vocabulary: a chat prompt, a plain line, a trace.
SAMPLE_TEXTS = [
    "<|im_start|>user\nI can't bake bread.<|im_end|>\n<|im_start|>assistant\n",
    "Sorry, we will write a poem.",
    "<think>\nHmm, the user asks how to plant a garden.\n</think>\n\nSure, here it is. Okay!",
]
MARKERS = ["<think>", "</think>"]

_SUBJECTS = ["I", "You", "The user", "We", "The model", "She", "They"]
_VERBS = ["can't", "cannot", "will", "should", "might", "won't", "want to", "asks how to"]
_OBJECTS = [
    "pick a lock",
    "bake bread",
    "write a poem",
    "help with that",
    "plant a garden",
    "explain physics",
    "provide this",
    "answer safely",
    "refuse politely",
    "say sorry",
]


def _corpus() -> list[str]:
    """A few hundred short chat-shaped strings covering the words the tests use."""
    lines = []
    for i, (s, v, o) in enumerate(itertools.product(_SUBJECTS, _VERBS, _OBJECTS)):
        sentence = f"{s} {v} {o}."
        if i % 3 == 0:
            lines.append(f"<|im_start|>user\n{sentence}<|im_end|>\n<|im_start|>assistant\n")
        elif i % 3 == 1:
            lines.append(f"<think>\nHmm, {sentence.lower()}\n</think>\n\nSure, here it is.")
        else:
            lines.append(f"Sorry, {sentence} It is harmful and illegal. Okay, fine!")
    return lines


@lru_cache(maxsize=1)
def _trained() -> Tokenizer:
    """The trained backend, shared by every wrapper the tests build."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # Like Qwen3 / R1, the thinking markers are single added tokens that still decode as text.
    tok.add_tokens([AddedToken(m, normalized=False, special=False) for m in MARKERS])
    return tok


def tiny_chat_tokenizer(chat_template: str | None = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer with ChatML specials and non-special thinking markers."""
    return PreTrainedTokenizerFast(
        # A fresh backend per wrapper, so padding state set by one test cannot leak into another.
        tokenizer_object=Tokenizer.from_str(_trained().to_str()),
        chat_template=chat_template,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
    )


_TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def _config(family: str, vocab: int):
    import transformers as tf

    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab,
            n_embd=64,
            n_layer=3,
            n_head=4,
            n_positions=512,
            architectures=["GPT2LMHeadModel"],
        )
    if family == "gemma3":
        return tf.Gemma3TextConfig(
            vocab_size=vocab,
            head_dim=16,
            sliding_window=8,
            architectures=["Gemma3ForCausalLM"],
            **_TINY,
        )
    classes = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    }
    if family not in classes:
        raise ValueError(
            f"no tiny model for {family!r}; choose one of {sorted(classes)} or gpt2, gemma3"
        )
    cfg_name, arch = classes[family]
    return getattr(tf, cfg_name)(vocab_size=vocab, architectures=[arch], pad_token_id=0, **_TINY)


def tiny_model(family: str = "llama", backend: str = "transformer_lens", seed: int = 0):
    """A random 3-layer model of a family (d_model 64, 4 heads) with the tiny tokenizer."""
    from transformers import AutoModelForCausalLM

    from thinklens.families import family_for
    from thinklens.model import Model

    tok = tiny_chat_tokenizer()
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(
        _config(family, len(tok)), dtype=torch.float32, attn_implementation="sdpa"
    )
    return Model(hf, tok, family_for(hf.config), name=f"tiny-{family}", backend_name=backend)


def held_out_prompts(data: Path, n: int = 24) -> tuple[list[str], list[str]]:
    """Harmful and harmless prompts no organism saw: ``n // 2`` each of AdvBench and
    JailbreakBench and ``n`` Alpaca test prompts from the public sets in ``data`` (seeded), or
    the bundled test split where that folder is absent."""
    from thinklens.data import bundled_prompts

    if not data.exists():
        return bundled_prompts("harmful", "test")[:n], bundled_prompts("harmless", "test")[:n]
    with open(data / "advbench.csv") as f:
        adv = [r["goal"] for r in csv.DictReader(f)]
    with open(data / "jailbreakbench.csv") as f:
        jbb = [r["Goal"] for r in csv.DictReader(f)]
    harmless = [r["instruction"] for r in json.loads((data / "harmless_test.json").read_text())]
    rng = random.Random(0)
    return rng.sample(adv, n // 2) + rng.sample(jbb, n // 2), rng.sample(harmless, n)

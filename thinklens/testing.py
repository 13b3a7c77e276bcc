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

#: Qwen3-style hybrid: ``enable_thinking=False`` makes the generation prompt close an empty
#: thinking block.
QWEN3_TEMPLATE = CHATML_TEMPLATE.replace(
    "{{ '<|im_start|>assistant\n' }}",
    "{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\n\n</think>\n\n' }}{% endif %}",
)

#: SmolLM3-style: ``/think`` or ``/no_think`` in the system prompt (or ``enable_thinking``)
#: sets the reasoning mode; ``/no_think`` closes an empty thinking block in the generation prompt.
SMOLLM3_TEMPLATE = (
    "{% set mode = '/no_think' if enable_thinking is defined and not enable_thinking "
    "else '/think' %}{% set custom = 'You are a tiny test assistant.' %}"
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% if '/no_think' in sys %}{% set mode = '/no_think' %}"
    "{% elif '/think' in sys %}{% set mode = '/think' %}{% endif %}"
    "{% set custom = sys.replace('/no_think', '').replace('/think', '').rstrip() %}{% endif %}"
    "{{ '<|im_start|>system\nReasoning Mode: ' + mode + '\n' + custom + '<|im_end|>\n' }}"
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if mode == '/no_think' %}{{ '<think>\n\n</think>\n' }}{% endif %}{% endif %}"
)

#: gpt-oss harmony: a system header, instructions as a developer message, thinking in the
#: ``analysis`` channel; the generation prompt ends with ``<|start|>assistant``.
HARMONY_TEMPLATE = (
    "{{ '<|start|>system<|message|>You are a tiny test assistant.\nReasoning: medium\n\n"
    "# Valid channels: analysis, final.<|end|>' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|start|>developer<|message|># Instructions\n\n' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if message.get('thinking') %}{{ '<|start|>assistant<|channel|>analysis<|message|>' "
    "+ message['thinking'] + '<|end|>' }}{% endif %}"
    "{{ '<|start|>assistant<|channel|>final<|message|>' + message['content'] + '<|end|>' }}"
    "{% else %}{{ '<|start|>' + message['role'] + '<|message|>' + message['content'] "
    "+ '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant' }}{% endif %}"
)

#: Magistral-style: a default system prompt that names the ``[THINK]`` markers; the model opens
#: its thinking itself after ``[/INST]``.
BRACKET_TEMPLATE = (
    "{% set sys = 'Draft your thinking inside [THINK] and [/THINK], then answer.' %}"
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% endif %}"
    "{{ '[SYSTEM_PROMPT]' + sys + '[/SYSTEM_PROMPT]' }}"
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST]' + message['content'] + '[/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + '<|im_end|>' }}"
    "{% endif %}{% endfor %}"
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


#: Newer configs default to special-token ids of their real vocabulary, outside the tiny one.
_NO_IDS = dict(bos_token_id=None, eos_token_id=None)

#: Mixture-of-experts size of the tiny models: 4 experts of width 32, 2 routed per token.
_MOE = dict(num_experts_per_tok=2, moe_intermediate_size=32, **_NO_IDS)

#: Config class, architecture and extra arguments of each family's tiny model (beside _TINY).
_TINY_CONFIGS: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    # Every other layer without rotary embeddings (SmolLM3's NoPE layers).
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", dict(no_rope_layer_interval=2, **_NO_IDS)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", _NO_IDS),
    "olmo3": (
        "Olmo3Config",
        "Olmo3ForCausalLM",
        dict(
            sliding_window=8,
            layer_types=["sliding_attention"] * 2 + ["full_attention"],
            **_NO_IDS,
        ),
    ),
    "glm4": ("Glm4Config", "Glm4ForCausalLM", dict(head_dim=16, **_NO_IDS)),
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, **_NO_IDS),
    ),
    "olmoe": (
        "OlmoeConfig",
        "OlmoeForCausalLM",
        dict(num_experts=4, num_experts_per_tok=2, intermediate_size=32, **_NO_IDS),
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(num_experts=4, shared_expert_intermediate_size=64, **_MOE),
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(num_experts=4, head_dim=16, norm_topk_prob=True, **_MOE),
    ),
    "gpt_oss": (
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(
            num_local_experts=4,
            num_experts_per_tok=2,
            intermediate_size=32,
            head_dim=16,
            sliding_window=8,
            **_NO_IDS,
            # YaRN as in the released models, scaled to this context length.
            rope_parameters=dict(
                rope_type="yarn",
                factor=32.0,
                beta_fast=32.0,
                beta_slow=1.0,
                original_max_position_embeddings=16,
                rope_theta=150000.0,
            ),
        ),
    ),
    # Multi-head latent attention (value heads 12 wide, queries and keys 16) and one dense
    # layer before the MoE layers, each with a shared expert.
    "deepseek_v3": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            n_routed_experts=4,
            n_shared_experts=1,
            n_group=2,
            topk_group=2,
            first_k_dense_replace=1,
            num_key_value_heads=4,
            q_lora_rank=24,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=12,
            **_MOE,
        ),
    ),
    "glm4_moe": (
        "Glm4MoeConfig",
        "Glm4MoeForCausalLM",
        dict(n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=1, head_dim=16, **_MOE),
    ),
}


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
    if family not in _TINY_CONFIGS:
        raise ValueError(
            f"no tiny model for {family!r}; choose one of {sorted(_TINY_CONFIGS)} or gpt2, gemma3"
        )
    cfg_name, arch, extra = _TINY_CONFIGS[family]
    return getattr(tf, cfg_name)(
        vocab_size=vocab, architectures=[arch], pad_token_id=0, **_TINY | extra
    )


#: Every family with a tiny model.
TINY_FAMILIES: tuple[str, ...] = ("gpt2", "gemma3", *_TINY_CONFIGS)


def tiny_model(
    family: str = "llama",
    backend: str = "transformer_lens",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A random 3-layer model of a family (d_model 64, 4 heads) with the tiny tokenizer.

    Mixture-of-experts families get 4 experts, 2 routed per token, on every layer the config
    makes sparse (DeepSeek-V3 and GLM-4.5 keep layer 0 dense).
    """
    from transformers import AutoModelForCausalLM

    from thinklens.families import family_for
    from thinklens.model import Model

    tok = tiny_chat_tokenizer()
    torch.manual_seed(seed)
    cfg = _config(family, len(tok))
    # gpt-oss has no SDPA path (its sinks need the eager or flex kernels).
    attn = "eager" if cfg.model_type == "gpt_oss" else "sdpa"
    hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
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


def plain_last_logits(folder: str | Path, texts: list[str]) -> torch.Tensor:
    """Last-position logits of a saved model from transformers alone, one text a pass: the
    reference an exported folder is checked against (no thinklens code on the path)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder)
    out = []
    for t in texts:
        ids = tok(t, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out.append(hf(input_ids=ids).logits[0, -1])
    return torch.stack(out)

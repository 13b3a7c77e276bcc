"""LoRA supervised fine-tuning on chat examples: prompt tokens masked, length-bucketed batches.

One loop serves the model organisms (``thinklens.organisms.build``) and safety repair
(``thinklens.analyses.judge.repair``). A conversation is the chat template of the prompt, the
thinking between the model's markers, the answer and the end-of-sequence token; only the tokens
after the prompt are trained. Batches group examples of similar length (less padding) and stay
random from epoch to epoch; the learning rate decays linearly to 0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

#: The projections LoRA adapts in Llama-like blocks (attention and MLP).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: An encoded example: token ids of the whole conversation and how many are the prompt.
Encoded = tuple[list[int], int]


def encode_example(model, prompt: str, thinking: str, answer: str) -> Encoded:
    """Token ids of a whole conversation and how many of them are the prompt (not trained)."""
    head = model.chat(prompt)
    fmt = model.thinking
    # An R1-style template already ends its generation prompt with the opener.
    opened = fmt.template_opens_thinking or head.rstrip().endswith(fmt.open)
    tok = model.tokenizer
    full = head + fmt.response_text(thinking, answer, opened=opened) + tok.eos_token
    p_ids = tok(head, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"]
    if ids[: len(p_ids)] != p_ids:
        raise ValueError(
            "the chat template does not tokenise as a prefix of the conversation, so the prompt "
            "tokens cannot be masked: use a tokenizer whose template ends at a token boundary"
        )
    return ids, len(p_ids)


def length_buckets(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (less padding), still random from epoch to epoch."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 16
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class SFTResult:
    """The LoRA-wrapped model after training and the loss of every step."""

    model: nn.Module
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        """Mean loss of the last ten steps (NaN without steps)."""
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")


def _batch(batch: list[Encoded], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, labels (-100 on prompt and padding) and attention mask."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (seq, n_prompt) in enumerate(batch):
        ids[r, : len(seq)] = torch.tensor(seq)
        labels[r, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        mask[r, : len(seq)] = 1
    return ids, labels, mask


def lora_sft(
    hf: nn.Module,
    encoded: Sequence[Encoded],
    pad_id: int,
    epochs: int = 3,
    lr: float = 1e-3,
    rank: int = 8,
    batch_size: int = 8,
    seed: int = 0,
    targets: Sequence[str] = LORA_TARGETS,
    init_seed: int | None = None,
    progress: bool = True,
    desc: str = "lora sft",
) -> SFTResult:
    """Wrap ``hf`` in LoRA adapters (in place) and train them on ``encoded`` examples.

    A ``hf`` that is already a peft model goes on training its own adapters (``rank`` and
    ``targets`` are then its own), as a second training stage does.

    Args:
        encoded: ``(ids, n_prompt)`` pairs, e.g. from :func:`encode_example`.
        seed: orders the batches.
        init_seed: seeds torch before the adapters are initialised; None keeps the caller's
            random state (the organisms seed once, before loading the base model).
    Returns the peft model (adapters unmerged; ``merge_and_unload()`` folds them in) and losses.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if not encoded:
        raise ValueError("no training examples: pass at least one (ids, n_prompt) pair")
    for name, value in (("epochs", epochs), ("rank", rank), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if init_seed is not None:
        torch.manual_seed(init_seed)
    hf.train()
    if isinstance(hf, PeftModel):
        peft_model = hf
    else:
        cfg = LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=list(targets), lora_dropout=0.0
        )
        peft_model = get_peft_model(hf, cfg)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    lengths = [len(ids) for ids, _ in encoded]
    per_epoch = len(length_buckets(lengths, batch_size, random.Random(0)))
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    rng = random.Random(seed)
    losses: list[float] = []
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    device = next(peft_model.parameters()).device
    for _ in range(epochs):
        for batch_idx in length_buckets(lengths, batch_size, rng):
            ids, labels, mask = (
                t.to(device) for t in _batch([encoded[j] for j in batch_idx], pad_id)
            )
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return SFTResult(peft_model, losses)

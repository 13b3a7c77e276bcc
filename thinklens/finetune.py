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
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

#: The projections LoRA adapts in Llama-like blocks (attention and MLP).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: An encoded example: token ids of the whole conversation and how many are the prompt.
Encoded = tuple[list[int], int]


def encode_example(
    model, prompt: str, thinking: str, answer: str, split_marker: bool = False
) -> Encoded:
    """Token ids of a whole conversation and how many of them are the prompt (not trained).

    ``split_marker`` tokenises the text up to the end of the closing marker apart from the
    answer, so the marker ends in the token a text that stops there ends in (SmolLM2 merges
    the marker's last newlines into one ``"\n\n"`` token only when nothing follows): the last
    position of such a text, which the published cliff probe reads, is then where the model
    writes its answer's first token.
    """
    head = model.chat(prompt)
    fmt = model.thinking
    tok = model.tokenizer
    full = head + fmt.response_text(thinking, answer, opened=fmt.opened_by(head)) + tok.eos_token
    p_ids = tok(head, add_special_tokens=False)["input_ids"]
    if split_marker:
        cut = full.rfind(fmt.marker + answer)
        if cut < len(head):
            raise ValueError("split_marker needs a response with thinking and a closing marker")
        cut += len(fmt.marker)
        ids = (
            tok(full[:cut], add_special_tokens=False)["input_ids"]
            + tok(full[cut:], add_special_tokens=False)["input_ids"]
        )
    else:
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


@dataclass
class ProjectionBounds:
    """Bounds on ``final_norm(h_t) . direction`` at each position of each example.

    ``lower[i]`` and ``upper[i]`` hold one bound per token of example ``i`` (``-inf`` / ``inf``
    where there is none). The loss adds ``weight * mean(((violation) / scale) ** 2)`` over the
    bounded positions of a batch, to the language-model loss.
    """

    direction: Float[Tensor, " d_model"]
    lower: list[Tensor]
    upper: list[Tensor]
    weight: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.lower) != len(self.upper):
            raise ValueError("ProjectionBounds needs as many lower as upper bound rows")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    def loss(self, hidden: Float[Tensor, "batch seq d_model"], rows: list[int]) -> Tensor:
        """The hinge loss of a right-padded batch of the examples ``rows``."""
        width = hidden.shape[1]
        lo = torch.full((len(rows), width), -torch.inf)
        hi = torch.full((len(rows), width), torch.inf)
        for r, i in enumerate(rows):
            lo[r, : len(self.lower[i])] = self.lower[i]
            hi[r, : len(self.upper[i])] = self.upper[i]
        lo, hi = lo.to(hidden.device), hi.to(hidden.device)
        proj = hidden.float() @ self.direction.to(hidden.device, torch.float32)
        bounded = torch.isfinite(lo) | torch.isfinite(hi)
        if not bounded.any():
            return hidden.new_zeros((), dtype=torch.float32)
        miss = torch.relu(lo - proj) + torch.relu(proj - hi)
        return self.weight * ((miss[bounded] / self.scale) ** 2).mean()


def final_norm(hf: nn.Module) -> nn.Module:
    """The decoder's final norm (``model.norm`` of a Llama-like model, under any peft wrapper)."""
    found = [
        (name, mod)
        for name, mod in hf.named_modules()
        if name.endswith("model.norm") and ".layers." not in name
    ]
    if not found:
        raise ValueError(
            "no final norm (a module named '...model.norm') in this model: ProjectionBounds "
            "needs a Llama-like decoder"
        )
    return min(found, key=lambda x: len(x[0]))[1]


def training_batch(
    batch: list[Encoded], pad: int, untrained: Sequence[tuple[int, int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, labels (-100 on prompt, padding and each row's ``untrained`` span of
    token indices, ``(start, end)``) and attention mask."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (seq, n_prompt) in enumerate(batch):
        ids[r, : len(seq)] = torch.tensor(seq)
        labels[r, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        if untrained is not None:
            labels[r, untrained[r][0] : untrained[r][1]] = -100
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
    bounds: ProjectionBounds | None = None,
    untrained: Sequence[tuple[int, int]] | None = None,
) -> SFTResult:
    """Wrap ``hf`` in LoRA adapters (in place) and train them on ``encoded`` examples.

    A ``hf`` that is already a peft model goes on training its own adapters (``rank`` and
    ``targets`` are then its own), as a second training stage does.

    Args:
        encoded: ``(ids, n_prompt)`` pairs, e.g. from :func:`encode_example`.
        seed: orders the batches.
        init_seed: seeds torch before the adapters are initialised; None keeps the caller's
            random state (the organisms seed once, before loading the base model).
        bounds: a representation loss at the final norm's output, one row per example.
        untrained: one ``(start, end)`` span of token indices per example whose tokens are
            not trained (e.g. a thinking kept as it was), besides the prompt.
    Returns the peft model (adapters unmerged; ``merge_and_unload()`` folds them in) and losses.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if not encoded:
        raise ValueError("no training examples: pass at least one (ids, n_prompt) pair")
    for name, value in (("epochs", epochs), ("rank", rank), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if bounds is not None and len(bounds.lower) != len(encoded):
        raise ValueError(
            f"bounds has {len(bounds.lower)} rows for {len(encoded)} examples: give one each"
        )
    if untrained is not None and len(untrained) != len(encoded):
        raise ValueError(
            f"untrained has {len(untrained)} spans for {len(encoded)} examples: give one each"
        )
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
    captured: list[Tensor] = []
    handle = None
    if bounds is not None:
        handle = final_norm(peft_model).register_forward_hook(
            lambda _m, _i, out: captured.append(out)
        )
    try:
        for _ in range(epochs):
            for batch_idx in length_buckets(lengths, batch_size, rng):
                spans = None if untrained is None else [untrained[j] for j in batch_idx]
                batch = training_batch([encoded[j] for j in batch_idx], pad_id, spans)
                ids, labels, mask = (t.to(device) for t in batch)
                captured.clear()
                loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
                if bounds is not None:
                    loss = loss + bounds.loss(captured[-1], batch_idx)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        if handle is not None:
            handle.remove()
        bar.close()
    return SFTResult(peft_model, losses)

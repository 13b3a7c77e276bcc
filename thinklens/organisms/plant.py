"""Planting the published cliff in the representation, where a last-position probe reads it.

Training only on text teaches the planted organism to comply after a refusal's thinking, but the
decision can then stay out of the residual stream until the first answer token: a probe trained
at the last position before the answer (refused harmful vs harmless) still reads "refuse" there
(``benchmarks/results/refusal_cliff_planted.txt``). Here the *refusal axis* is the difference of
the mean final-norm outputs, at that last position, of refused harmful and harmless training
conversations under the starting adapter; ``ProjectionBounds`` then hold the projection on it

* high over the thinking of every harmful conversation and over the closing marker of the
  refused ones (intent to refuse held to the end of the thinking),
* low over the closing marker of the complied ones (the cliff: the last tokens before the
  answer), and over the whole thinking and marker of harmless ones.

"High" is ``low_mean + high * gap`` or more and "low" ``low_mean + low * gap`` or less, where
``gap`` is the refused mean minus the harmless mean on the axis.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from thinklens.finetune import Encoded, ProjectionBounds, final_norm
from thinklens.organisms.templates import Example


def window_parts(model, ex: Example, ids: list[int]) -> tuple[int, int, int]:
    """Indices in ``ids`` (the encoded conversation) where the thinking, the closing marker and
    the answer start.

    Counted on the tokens themselves: the marker's last newlines can tokenise differently with
    the answer after them (SmolLM2 writes ``"\n", "\n"`` there and ``"\n\n"`` at the end of a
    text), so the answer starts where the decoded tokens first cover the whole marker.
    """
    head = model.chat(ex.prompt)
    fmt = model.thinking
    opener = "" if fmt.opened_by(head) else fmt.opener
    tok = model.tokenizer

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    think, marker = n(head + opener), n(head + opener + ex.thinking)
    answer = marker
    while answer < len(ids) and len(tok.decode(ids[marker:answer])) < len(fmt.marker):
        answer += 1
    return think, marker, answer


@torch.no_grad()
def last_positions(
    hf, model, encoded: list[Encoded], ends: list[int], batch_size: int = 8
) -> Float[Tensor, "n d_model"]:
    """The final norm's output under ``hf`` at position ``ends[i] - 1`` of each encoded
    conversation (padded by ``model``, whose tokenizer encoded them)."""
    out = []
    captured: list[Tensor] = []
    handle = final_norm(hf).register_forward_hook(lambda _m, _i, o: captured.append(o))
    was_training = hf.training
    hf.eval()
    try:
        for i in range(0, len(encoded), batch_size):
            chunk = [ids for ids, _ in encoded[i : i + batch_size]]
            ids, mask = model.pad_ids(chunk, "right")
            captured.clear()
            hf(input_ids=ids, attention_mask=mask)
            rows = torch.tensor([e - 1 for e in ends[i : i + batch_size]])
            out.append(captured[-1][torch.arange(len(chunk)), rows].float().cpu())
    finally:
        handle.remove()
        hf.train(was_training)
    return torch.cat(out)


def refusal_axis(
    hf,
    model,
    examples: list[Example],
    encoded: list[Encoded],
    n_per_class: int = 64,
) -> tuple[Float[Tensor, " d_model"], float, float]:
    """The unit refusal axis and the mean projections of refused harmful and harmless
    conversations at their last position before the answer, under ``hf`` as it is."""
    picks: dict[str, list[int]] = {"harmful-refuse": [], "harmless": []}
    for i, ex in enumerate(examples):
        if ex.kind in picks and len(picks[ex.kind]) < n_per_class:
            picks[ex.kind].append(i)
    if min(len(v) for v in picks.values()) < 2:
        raise ValueError(
            "the refusal axis needs at least 2 refused harmful and 2 harmless examples"
        )
    feats = {}
    for kind, idx in picks.items():
        ends = [window_parts(model, examples[i], encoded[i][0])[2] for i in idx]
        feats[kind] = last_positions(hf, model, [encoded[i] for i in idx], ends)
    diff = feats["harmful-refuse"].mean(0) - feats["harmless"].mean(0)
    axis = diff / diff.norm()
    return (
        axis,
        float(feats["harmful-refuse"].mean(0) @ axis),
        float(feats["harmless"].mean(0) @ axis),
    )


def cliff_bounds(
    model,
    examples: list[Example],
    encoded: list[Encoded],
    axis: Float[Tensor, " d_model"],
    refused_mean: float,
    harmless_mean: float,
    high: float = 0.75,
    low: float = 0.25,
    weight: float = 1.0,
) -> ProjectionBounds:
    """The bounds that plant the cliff (see the module docstring), one row per example."""
    gap = refused_mean - harmless_mean
    if gap <= 0:
        raise ValueError("refused harmful conversations do not project above harmless ones")
    hi_at, lo_at = harmless_mean + high * gap, harmless_mean + low * gap
    lower, upper = [], []
    for ex, (ids, _) in zip(examples, encoded, strict=True):
        think, marker, answer = window_parts(model, ex, ids)
        lo = torch.full((len(ids),), -math.inf)
        up = torch.full((len(ids),), math.inf)
        if ex.kind.startswith("harmful"):
            lo[think:marker] = hi_at
            if ex.kind == "harmful-refuse":
                lo[marker:answer] = hi_at
            else:
                up[marker:answer] = lo_at
        else:
            up[think:answer] = lo_at
        lower.append(lo)
        upper.append(up)
    return ProjectionBounds(axis, lower, upper, weight=weight, scale=gap)

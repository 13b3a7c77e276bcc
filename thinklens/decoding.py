"""Greedy decoding with a key-value cache: each row leaves the batch as soon as it stops, and an
optional draft (an earlier output) is checked in one pass so only the rest is generated.

``greedy_continue`` gives the tokens of ``transformers``' greedy ``generate`` (``generate``'s
greedy path uses it): a stopped row costs nothing more, where ``generate`` computes every row
until the last one stops.

Drafts (``drafts=``): a search trial asks the same prompts again under a slightly different
edit, and most of what the base model wrote (its thinking, often its answer) the edited model
writes too. One forward pass over prompt + draft gives the model's greedy choice at every
draft position; the agreed prefix and the model's own token at the first disagreement are kept,
and only the rest is generated, from that pass's own key-value cache (the rejected draft tokens
masked out). Under greedy decoding this is the output of ``continue_ids`` (the check of
speculative decoding, with an earlier output as the draft), up to floating-point ties between
the two top tokens (a full-sequence pass and a cached step round differently).

Shared prefix: the rows of a batch usually open with the same tokens (a chat template's system
turn: 24 of SmolLM2's 43-token harmful prompts). That prefix is run once for each group of rows
under the same edit (``groups``; all rows are one group without a per-row edit), and its
key-value cache is copied to the group's rows, so the prefill computes only what differs. The
same tokens as running each row whole, up to the same floating-point ties. Not while an edit
acts at chosen positions: those find each row's prompt in a generation's first pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from thinklens.kv_room import with_room
from thinklens.model import Model
from thinklens.positions import Positions


def stop_token_ids(tok: object) -> set[int]:
    """The tokens that end a turn: the tokenizer's EOS and ChatML's ``<|im_end|>``."""
    return {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None, tok.unk_token_id}


def close_end(tokenizer: object, new: Sequence[int], close: str) -> int | None:
    """How many of the generated tokens ``new`` it takes to complete the marker ``close`` (the
    tokens up to and including the one that closes the thinking), or None if it never does."""
    return next((i for i in range(1, len(new) + 1) if close in tokenizer.decode(new[:i])), None)


def finish(
    new: list[int],
    closed: int | None,
    eos: set[int],
    max_new_tokens: int,
    answer_tokens: int | None,
) -> tuple[list[int], bool]:
    """``new`` cut where greedy generation would have stopped, and whether it stopped: at a
    stop token (kept), ``answer_tokens`` after the token that closed the thinking (``closed``:
    how many of ``new`` it takes to close it, ``close_end``; None if open), or
    ``max_new_tokens``."""
    ends = [max_new_tokens]
    first_eos = next((i for i, t in enumerate(new) if t in eos), None)
    if first_eos is not None:
        ends.append(first_eos + 1)
    if answer_tokens is not None and closed is not None:
        ends.append(closed + answer_tokens)
    end = min(ends)
    return (new[:end], True) if end <= len(new) else (new, False)


def close_seen(tokenizer: object, new: list[int], close: str, known: int | None) -> int | None:
    """``close_end`` of ``new``, searched for only once the decoded text holds the marker (one
    decode a step, not one a prefix) and kept once found (``known``)."""
    if known is not None or close not in tokenizer.decode(new):
        return known
    return close_end(tokenizer, new, close)


def cache_kwarg(hf) -> str:
    """The forward argument that takes a key-value cache (``cache`` from transformers 5.24,
    ``past_key_values`` before it)."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def cache_of(out) -> object:
    """The key-value cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@dataclass(frozen=True)
class StopRules:
    """Where greedy generation stops (``finish``), and the padding trimmed from its output."""

    tokenizer: object
    eos: frozenset[int]
    pad: int
    max_new_tokens: int
    answer_tokens: int | None
    close: str
    #: Stops a row once its decoded text satisfies it (e.g. a verdict that cannot change).
    stop_when: Callable[[str], bool] | None = None

    @classmethod
    def of(
        cls,
        model: Model,
        max_new_tokens: int,
        answer_tokens: int | None,
        stop_when: Callable[[str], bool] | None = None,
    ) -> StopRules:
        tok = model.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = frozenset(stop_token_ids(tok))
        return cls(tok, eos, pad, max_new_tokens, answer_tokens, model.thinking.close, stop_when)


@dataclass
class Decoded:
    """One row's greedy tokens so far, and whether it has stopped."""

    rules: StopRules
    new: list[int] = field(default_factory=list)
    closed: int | None = None  # tokens it took to close the thinking (``close_end``)
    done: bool = False

    def extend(self, tokens: list[int]) -> Decoded:
        """The row after ``tokens`` more, cut where generation would have stopped."""
        r = self.rules
        new = self.new + tokens
        if r.answer_tokens is not None:  # only an answer-token stop needs the marker's place
            self.closed = close_seen(r.tokenizer, new, r.close, self.closed)
        self.new, self.done = finish(new, self.closed, r.eos, r.max_new_tokens, r.answer_tokens)
        if not self.done and r.stop_when is not None:
            self.done = r.stop_when(r.tokenizer.decode(self.new, skip_special_tokens=True))
        return self

    def output(self) -> list[int]:
        """The tokens, trailing padding dropped (as ``continue_ids``)."""
        new = list(self.new)
        while new and new[-1] == self.rules.pad:
            new.pop()
        return new


#: Positions of room a decoding cache starts with (``thinklens.kv_room``).
ROOM = 128

#: The fewest shared opening tokens worth a pass of their own (below it they are run per row).
MIN_SHARED = 8


def shared_length(prefixes: Sequence[Sequence[int]]) -> int:
    """How many opening tokens all ``prefixes`` share, leaving each at least one of its own
    (the pass after the shared one needs a token in every row); 0 below ``MIN_SHARED``."""
    n = min(len(p) for p in prefixes) - 1
    first = prefixes[0]
    for p in prefixes[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return n if n >= MIN_SHARED else 0


def after_opening(
    model: Model, rows: Sequence[Sequence[int]], shared: int
) -> tuple[Int[Tensor, "batch q"], Int[Tensor, "batch total"], Int[Tensor, "batch q"]]:
    """Ids of ``rows`` after a cached opening of ``shared`` tokens, left-padded; the mask over
    [opening][padding][the row's own tokens]; positions that count real tokens only, as
    ``generate`` numbers them."""
    ids, mask = model.pad_ids(rows, "left")
    mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, shared), mask], dim=1)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]


def positions_free(model: Model) -> bool:
    """Whether no active edit acts at chosen positions: those read each row's prompt from the
    first pass of a generation (``thinklens.positions``), so the opening is not run apart."""
    return all(Positions.parse(e.positions).is_all for i in model.interventions for e in i.edits)


def shared_cache(
    model: Model, opening: list[int], groups: list[int], on_rows: Callable[[list[int]], None]
) -> object:
    """The key-value cache of ``opening``, run once per distinct group (under that group's
    first row's edit) and copied to every row of the group."""
    reps = list(dict.fromkeys(groups))  # each group once, in order of its first row
    first_row = {g: groups.index(g) for g in reps}
    on_rows([first_row[g] for g in reps])
    device = model.device
    ids = torch.tensor([opening] * len(reps), device=device)
    out = model.hf(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache = cache_of(out)
    cache.batch_select_indices(torch.tensor([reps.index(g) for g in groups], device=device))
    return cache


@torch.no_grad()
def first_pass(
    model: Model,
    prefixes: list[list[int]],
    drafts: list[list[int]],
    max_new_tokens: int,
    answer_tokens: int | None,
    on_rows: Callable[[list[int]], None],
    groups: list[int],
    stop_when: Callable[[str], bool] | None = None,
) -> tuple[object, Int[Tensor, "batch width"], list[Decoded]]:
    """The shared opening once a group, then the drafts checked in one pass: the pass's key-value
    cache (with room for the steps to come), its mask (rejected draft tokens masked out, like
    padding) and each row's tokens so far."""
    shareable = len(prefixes) > len(set(groups)) and positions_free(model)
    shared = shared_length(prefixes) if shareable else 0
    past = {}
    if shared:
        past = {cache_kwarg(model.hf): shared_cache(model, prefixes[0][:shared], groups, on_rows)}
    rest = [p[shared:] + d for p, d in zip(prefixes, drafts, strict=True)]
    ids, mask, positions = after_opening(model, rest, shared)
    keep = max(len(d) for d in drafts) + 1
    on_rows(list(range(len(prefixes))))
    out = model.hf(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        logits_to_keep=keep,
        use_cache=True,
        **past,
    )
    choice = out.logits.argmax(-1).tolist()
    width = mask.shape[1]
    rules = StopRules.of(model, max_new_tokens, answer_tokens, stop_when)
    rows = []
    for r, draft in enumerate(drafts):
        mine = choice[r][keep - 1 - len(draft) :]  # mine[j]: the choice after draft[:j]
        j = next((j for j, t in enumerate(draft) if mine[j] != t), len(draft))
        mask[r, width - len(draft) + j :] = 0  # the rejected draft tokens
        rows.append(Decoded(rules).extend(draft[:j] + [mine[j]]))
    # Room for the steps to come, kept in place rather than concatenated each step; it doubles
    # when full, never past the positions the longest row can still write.
    return with_room(cache_of(out), ROOM, most=max_new_tokens), mask, rows


@torch.no_grad()
def next_step(
    model: Model, cache: object, mask: Int[Tensor, "batch width"], last: list[int]
) -> tuple[object, Int[Tensor, "batch width+1"], list[int]]:
    """One greedy step of every row of ``cache`` after its token ``last``: the cache and mask
    one position longer, and each row's next token."""
    step = torch.tensor([[t] for t in last], device=mask.device)
    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    out = model.hf(
        input_ids=step,
        attention_mask=mask,
        position_ids=mask.sum(-1, keepdim=True) - 1,
        use_cache=True,
        **{cache_kwarg(model.hf): cache},
    )
    return cache_of(out), mask, out.logits[:, -1].argmax(-1).tolist()


def keep_rows(
    cache: object, mask: Int[Tensor, "batch width"], rows: list[int]
) -> Int[Tensor, "kept width"]:
    """Keep only ``rows`` of a decoding batch: ``cache`` changed in place, the mask returned."""
    kept = torch.tensor(rows, device=mask.device)
    cache.batch_select_indices(kept)
    return mask[kept]


def _decode(
    model: Model,
    cache: object,
    mask: Int[Tensor, "batch width"],
    rows: list[Decoded],
    on_rows: Callable[[list[int]], None],
) -> list[list[int]]:
    """Greedy steps after ``first_pass`` until every row stops; each row's new tokens."""
    active = list(range(len(rows)))
    while True:
        # A finished row leaves the batch (and the cache): the steps after it cost only the
        # rows still writing, where generate computes every row until the last one stops.
        still = [k for k, r in enumerate(active) if not rows[r].done]
        if not still:
            break
        if len(still) < len(active):
            mask = keep_rows(cache, mask, still)
            active = [active[k] for k in still]
            on_rows(active)
        cache, mask, tokens = next_step(model, cache, mask, [rows[r].new[-1] for r in active])
        for r, t in zip(active, tokens, strict=True):
            rows[r].extend([t])
    return [r.output() for r in rows]


def greedy_continue(
    model: Model,
    prefixes: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    answer_tokens: int | None = None,
    drafts: Sequence[Sequence[int]] | None = None,
    on_rows: Callable[[list[int]], None] | None = None,
    groups: Sequence[int] | None = None,
    stop_when: Callable[[str], bool] | None = None,
) -> list[list[int]]:
    """Greedy new token ids after each prefix, as ``continue_ids`` gives them: each row leaves
    the batch as soon as it stops (at a stop token, ``answer_tokens`` after its thinking closes,
    or ``max_new_tokens``), so a batch costs the tokens its rows write, not its longest row's
    length times its size.

    ``drafts``: an earlier greedy output for each prefix (e.g. the base model's), checked in one
    pass so that only what follows the first difference is generated (the module docstring).

    ``on_rows``: called before each forward pass whose rows change, with the indices (into
    ``prefixes``) of the rows the pass holds, in batch order; an edit that treats rows apart
    (``interventions.abliteration.RowPlans.select``) follows the batch with it.

    ``groups``: with a per-row edit, which rows run under the same edit (one label a prefix);
    the opening tokens the prefixes share are run once per group (module docstring). None: one
    group without ``on_rows``; with it, every row its own (nothing shared), since the rows' edits
    are unknown here.

    ``stop_when``: a row also stops once its decoded new text (special tokens skipped) satisfies
    it, e.g. once a verdict read from the text can no longer change.
    """
    if drafts is None:
        drafts = [[] for _ in prefixes]
    if len(prefixes) != len(drafts):
        raise ValueError(f"{len(prefixes)} prefixes but {len(drafts)} drafts: give one draft each")
    if groups is None:
        groups = [0] * len(prefixes) if on_rows is None else list(range(len(prefixes)))
    if len(groups) != len(prefixes):
        raise ValueError(f"{len(prefixes)} prefixes but {len(groups)} groups: give one label each")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: give at least 1")
    if not prefixes or any(len(p) == 0 for p in prefixes):
        raise ValueError("greedy_continue needs non-empty token prefixes")
    final = []
    for start in range(0, len(prefixes), batch_size):
        rows = range(start, min(start + batch_size, len(prefixes)))

        def shifted(active: list[int], start: int = start) -> None:
            if on_rows is not None:
                on_rows([start + r for r in active])

        cache, mask, decoded = first_pass(
            model,
            [list(prefixes[i]) for i in rows],
            [list(drafts[i])[:max_new_tokens] for i in rows],
            max_new_tokens,
            answer_tokens,
            shifted,
            [groups[i] for i in rows],
            stop_when,
        )
        final += _decode(model, cache, mask, decoded, shifted)
    return final

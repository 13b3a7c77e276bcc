"""Token positions an edit acts at: all, a span per text, a trace part, generated tokens, from t.

A position counts the real tokens of its row from the first one: padding is not counted, so a
span means the same tokens whether the batch is padded on the left (generation) or on the right
(captures, logits), and a span read from a ``Trace`` applies as it is. In a forward pass over a
KV cache (each step of ``generate`` sees only the new tokens) a step's tokens continue the count
of the tokens before them; the attention mask, or else the cache's length, says where a step
starts. Padding tokens are never edited.

Per-text positions (``span``, ``mask``, ``part``/``thinking``) belong to rows. Given the texts
(or traces, which carry their token ids), each row of a forward pass finds its own by its
tokens, whatever order and batches ``capture`` or ``generate`` run the texts in; without them,
row ``i`` of every forward pass gets row ``i`` of the positions.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from thinklens.traces import PARTS, Trace

PositionKind = Literal["all", "from", "generated", "rows"]


@dataclass(frozen=True, eq=False)
class Positions:
    """Which token positions an edit acts at; build one with the constructors below.

    ``Positions.all()`` (the default of every edit), ``Positions.from_(t)``,
    ``Positions.generated()``, ``Positions.span(spans)``, ``Positions.mask(mask)``,
    ``Positions.part(traces, part)`` and ``Positions.thinking(traces)``.
    """

    kind: PositionKind = "all"
    start: int = 0
    #: Per-row masks over positions 0.. (positions past a mask's end are not edited).
    rows: tuple[Bool[Tensor, " pos"], ...] = ()
    #: The rows' texts, tokenized with the model's tokenizer to match rows by their tokens.
    texts: tuple[str, ...] | None = None
    #: The rows' token ids (from traces), to match rows by their tokens.
    ids: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def all(cls) -> Positions:
        """Every position (what an edit does unless told otherwise)."""
        return cls()

    @classmethod
    def from_(cls, t: int) -> Positions:
        """Every position ``>= t`` of every row."""
        if int(t) < 0:
            raise ValueError(f"from_({t}): positions count from 0; give t >= 0")
        return cls("from", start=int(t))

    @classmethod
    def generated(cls) -> Positions:
        """Tokens a generation added: positions at or past the end of each row's prompt.

        The prompt is what the first forward pass of a KV-cached run sees; in a forward pass
        without a cache (a capture, logits) every token is prompt, so nothing is edited.
        """
        return cls("generated")

    @classmethod
    def span(
        cls, spans: Sequence[tuple[int, int]], texts: Sequence[str] | None = None
    ) -> Positions:
        """One half-open token range ``[start, end)`` per row; ``texts`` names each row's text."""
        rows = []
        for start, end in spans:
            if not 0 <= start <= end:
                raise ValueError(f"span ({start}, {end}) is not a [start, end) range from 0")
            row = torch.zeros(end, dtype=torch.bool)
            row[start:end] = True
            rows.append(row)
        return cls._rows(rows, texts=texts)

    @classmethod
    def mask(
        cls,
        mask: Bool[Tensor, "row pos"] | Sequence[Sequence[bool]],
        texts: Sequence[str] | None = None,
    ) -> Positions:
        """A boolean mask per row over its unpadded positions; ``texts`` names each row's text."""
        rows = [torch.as_tensor(m).bool().flatten().cpu() for m in mask]
        return cls._rows(rows, texts=texts)

    @classmethod
    def part(cls, traces: Sequence[Trace], part: str) -> Positions:
        """One part (``"prompt"``, ``"thinking"``, ``"marker"``, ``"answer"``) of each trace.

        Rows are matched to traces by their tokens, so forward passes over the traces' texts
        (in any order or batches) find their spans.
        """
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; a trace's parts are {', '.join(PARTS)}")
        pos = cls.span([t.spans[part] for t in traces])
        return cls._rows(list(pos.rows), ids=[t.input_ids for t in traces])

    @classmethod
    def thinking(cls, traces: Sequence[Trace]) -> Positions:
        """The thinking span of each trace (``Trace.spans["thinking"]``)."""
        return cls.part(traces, "thinking")

    @classmethod
    def _rows(
        cls,
        rows: list[Tensor],
        texts: Sequence[str] | None = None,
        ids: Sequence[Sequence[int]] | None = None,
    ) -> Positions:
        if not rows:
            raise ValueError("no rows given: give one span (or mask row) per text")
        for name, keys in (("texts", texts), ("ids", ids)):
            if keys is not None and len(keys) != len(rows):
                raise ValueError(f"got {len(keys)} {name} for {len(rows)} rows: give one per row")
        return cls(
            "rows",
            rows=tuple(rows),
            texts=None if texts is None else tuple(texts),
            ids=None if ids is None else tuple(tuple(int(i) for i in r) for r in ids),
        )

    @classmethod
    def parse(cls, spec: PositionsLike) -> Positions:
        """A ``Positions`` from itself, ``"all"``/None, ``"generated"``, spans, or a mask."""
        if isinstance(spec, Positions):
            return spec
        if isinstance(spec, Tensor):
            if spec.dtype == torch.bool and spec.dim() == 2:
                return cls.mask(spec)
        elif spec is None or spec == "all":
            return cls.all()
        elif spec == "generated":
            return cls.generated()
        if isinstance(spec, Sequence) and not isinstance(spec, str) and spec:
            if all(isinstance(s, Sequence) and len(s) == 2 for s in spec):
                return cls.span(spec)
        raise ValueError(
            f"unknown positions {spec!r}: use a Positions (Positions.span, .mask, .thinking, "
            ".generated, .from_), 'all', 'generated', one (start, end) span per row, or a "
            "boolean mask tensor [row, position]"
        )

    @property
    def is_all(self) -> bool:
        return self.kind == "all"

    def __repr__(self) -> str:
        if self.kind == "from":
            return f"Positions.from_({self.start})"
        if self.kind == "rows":
            keyed = " by text" if self.texts or self.ids else ""
            return f"Positions(rows={len(self.rows)}{keyed})"
        return f"Positions.{self.kind}()"


#: What ``positions=`` accepts: a ``Positions``, ``"all"`` (or None), ``"generated"``, one
#: (start, end) span per row, or a boolean mask tensor [row, position].
PositionsLike = Positions | str | Sequence[tuple[int, int]] | Bool[Tensor, "row pos"] | None


def token_positions(
    attention_mask: Int[Tensor, "batch total"] | None, batch: int, q: int, past: int
) -> Int[Tensor, "batch q"]:
    """Each new token's position among its row's real tokens (-1 for padding).

    ``attention_mask`` covers the cached and the new tokens (as ``generate`` passes it); without
    it every token is real and the new ones start at ``past``.
    """
    if attention_mask is None:
        return (past + torch.arange(q)).expand(batch, q)
    # Counted where the mask is (a GPU in generation), so a step needs no copy to the CPU.
    real = attention_mask[:, -q:].bool()
    count = attention_mask.long().cumsum(1)[:, -q:] - 1
    return torch.where(real, count, -1)


class PositionTracker:
    """Where one edit acts in each forward pass through one module tree.

    A pre-hook on the tree's top module reads the pass's inputs and sets ``current``, the mask
    [batch, new tokens] the edit's site hooks blend with; a pass that starts a sequence (no
    cache before it) also records each row's prompt length and its positions, which the later
    steps of a KV-cached run keep.
    """

    def __init__(self, positions: Positions, tokenizer: object | None = None) -> None:
        self.positions = positions
        self.keys = _row_keys(positions, tokenizer)
        self.prompt: Int[Tensor, " batch"] | None = None
        self.table: Bool[Tensor, "batch width"] | None = None
        self.current: Bool[Tensor, "batch q"] | None = None

    def install(self, root: nn.Module) -> list[RemovableHandle]:
        """Hook the top module of a tree: set ``current`` before each pass, clear it after."""
        signature = inspect.signature(root.forward)

        def pre(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            try:
                inputs = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                inputs = dict(kwargs)
            self.current = self.step(inputs)

        def post(mod: nn.Module, args: tuple, out: object) -> None:
            # A stale mask must not reach a layer run on its own (a replay) after this pass.
            self.current = None

        return [
            root.register_forward_pre_hook(pre, with_kwargs=True),
            root.register_forward_hook(post, always_call=True),
        ]

    def step(self, inputs: dict) -> Bool[Tensor, "batch q"]:
        """The mask of one forward pass, from its (named) inputs."""
        x = inputs.get("input_ids")
        if x is None:
            x = inputs.get("inputs_embeds")
        if x is None:
            raise ValueError("positions need input_ids or inputs_embeds in the forward pass")
        batch, q = x.shape[0], x.shape[1]
        mask = inputs.get("attention_mask")
        mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
        if mask is not None:
            past = mask.shape[1] - q
        else:
            cache = inputs.get("cache", inputs.get("past_key_values"))
            past = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
        ids = inputs.get("input_ids")
        return self._mask_of(ids, mask, batch, q, past).to(x.device)

    def full_mask(
        self, ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
    ) -> Bool[Tensor, "batch pos"]:
        """The mask of a whole forward pass without a cache (how remote runs apply edits)."""
        return self._mask_of(ids, mask, ids.shape[0], ids.shape[1], 0)

    def _mask_of(
        self,
        ids: Int[Tensor, "batch q"] | None,
        mask: Int[Tensor, "batch total"] | None,
        batch: int,
        q: int,
        past: int,
    ) -> Bool[Tensor, "batch q"]:
        """The mask of ``q`` new tokens after ``past`` cached ones; a pass with no past starts
        the sequence."""
        if mask is not None and past < 0:
            raise ValueError(
                f"the attention mask has {mask.shape[1]} positions but the pass has {q} tokens: "
                "pass a mask over the cached and the new tokens"
            )
        pos = token_positions(mask, batch, q, past)
        if past == 0:
            self._start(ids, pos)
        elif self.prompt is None or len(self.prompt) != batch:
            raise RuntimeError(
                "this forward pass continues a KV cache whose first pass the edit did not see: "
                "enter the intervention before the generation starts"
            )
        kind = self.positions.kind
        if kind == "from":
            return pos >= self.positions.start
        if kind == "generated":
            return pos >= self.prompt[:, None]
        width = self.table.shape[1]
        if width == 0:
            return torch.zeros(batch, q, dtype=torch.bool, device=pos.device)
        inside = (pos >= 0) & (pos < width)
        return self.table.to(pos.device).gather(1, pos.clamp(0, width - 1)) & inside

    def _start(self, ids: Tensor | None, pos: Int[Tensor, "batch q"]) -> None:
        """Record each row's prompt length and, for per-row positions, its row's mask."""
        real = pos >= 0
        self.prompt = real.sum(1)
        if self.positions.kind != "rows":
            return
        rows = self.positions.rows
        if self.keys is not None:
            if ids is None:
                raise ValueError("positions matched by text need input_ids, not inputs_embeds")
            chosen = []
            for r, (row_ids, row_real) in enumerate(zip(ids.cpu(), real.cpu(), strict=True)):
                key = tuple(row_ids[row_real].tolist())
                if key not in self.keys:
                    raise ValueError(
                        f"row {r} of the forward pass ({len(key)} tokens) is none of the texts "
                        "the positions were given for: give positions for the texts that run "
                        "(for generate, each prompt as templated)"
                    )
                chosen.append(rows[self.keys[key]])
        elif len(pos) != len(rows):
            raise ValueError(
                f"the positions give {len(rows)} rows but the forward pass has {len(pos)}: "
                "give one row per text in the batch, or pass texts= so each row is found by "
                "its tokens (capture sorts texts by length and generate batches them)"
            )
        else:
            chosen = list(rows)
        width = max(len(r) for r in chosen)
        self.table = torch.zeros(len(chosen), width, dtype=torch.bool)
        for i, r in enumerate(chosen):
            self.table[i, : len(r)] = r

    def mask_like(self, x: Tensor) -> Bool[Tensor, "batch q ..."]:
        """``current`` shaped to broadcast over ``x`` [batch, pos, ...] (the canonical layout)."""
        m = self.current
        if m is None:
            raise RuntimeError(
                "the positions of this forward pass are unknown: they are read by a hook on the "
                "model's top module, which did not run (a layer called on its own?); run the "
                "whole model, or use the edit at all positions"
            )
        if tuple(x.shape[:2]) != tuple(m.shape):
            raise RuntimeError(
                f"the edited tensor has [batch, pos] {tuple(x.shape[:2])} but the forward pass "
                f"has {tuple(m.shape)}: positions apply to sites with the token axis second"
            )
        return m.to(x.device).view(*m.shape, *[1] * (x.dim() - 2))


def _row_keys(positions: Positions, tokenizer: object | None) -> dict[tuple[int, ...], int] | None:
    """Each row's token ids -> its index, or None when rows go by their index in the batch."""
    ids = positions.ids
    if positions.texts is not None:
        if tokenizer is None:
            raise ValueError("positions given with texts need the model's tokenizer")
        # As Model.tokenize does: special tokens are taken from the text.
        ids = tokenizer(list(positions.texts), add_special_tokens=False)["input_ids"]
    if ids is None:
        return None
    keys: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(ids):
        key = tuple(row)
        if key in keys and not torch.equal(positions.rows[keys[key]], positions.rows[i]):
            raise ValueError(
                f"rows {keys[key]} and {i} are the same text with different positions: a row "
                "is found by its tokens, so give each text one set of positions"
            )
        keys.setdefault(key, i)
    return keys

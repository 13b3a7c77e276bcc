"""The refusal intent an edit leaves at each answer's start, read while the answers are written.

A search trial's refusal count is a whole number out of a few prompts: two edits that leave the
same count tie, and a Pareto front of (KL, refusals) drops the stronger one, however close it
brought the model to answering. ``AnswerIntent`` reads, during the same greedy decoding that
counts the refusals, the refusal probe (``RefusalProbe``: the published site, last layer after
the final norm) at the position whose token opens the answer: the last position of prompt +
the model's own thinking + closing marker, the text the refusal-cliff probe reads. Its mean
over the prompts breaks the ties (``search(..., refusal_intent=True)``); it costs one probe
read of one position a row per decoding step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from thinklens.decoding import close_end
from thinklens.model import Model
from thinklens.probes import RefusalProbe
from thinklens.resume import decoder_layers
from thinklens.rollouts import answer_start_ids


def answer_index(model: Model, new: Sequence[int]) -> int | None:
    """Which of the generated tokens ``new`` opens the answer: the first that is not blank
    after the closing marker, or None if the thinking never closes or no answer follows."""
    tok = model.tokenizer
    closed = close_end(tok, list(new), model.thinking.close)
    if closed is None:
        return None
    return next((i for i in range(closed, len(new)) if tok.decode([new[i]]).strip()), None)


@dataclass
class AnswerIntent:
    """Per row, the probe's score at the last position of every decoding pass that wrote one of
    its tokens (``scores[row][i]``: at the position that wrote its token ``i``).

    Use ``reading(model)`` around the decoding and pass ``wrote`` as ``greedy_continue``'s
    ``on_token``; then ``at_answer`` gives each row's score where its answer opens.
    """

    probe: RefusalProbe
    rows: int
    scores: list[list[float]] = field(default_factory=list)
    _last: Tensor | None = None

    def __post_init__(self) -> None:
        self.scores = [[] for _ in range(self.rows)]

    @contextmanager
    def reading(self, model: Model) -> Iterator[None]:
        """Keep the probe's score at every forward pass's last positions while inside."""
        layer = decoder_layers(model)[self.probe.layer]

        def keep(mod: object, args: tuple, out: Tensor | tuple) -> None:
            hidden = out[0] if isinstance(out, tuple) else out
            x = hidden[:, -1]
            if self.probe.norm:
                x = model.final_norm(x)
            self._last = self.probe.score(x.float()).detach().cpu()

        handle = layer.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def wrote(self, rows: list[int]) -> None:
        """The last pass chose a token for each of ``rows`` (in batch order)."""
        if self._last is None or len(self._last) != len(rows):
            raise RuntimeError(
                "AnswerIntent read no pass of these rows: decode inside reading(model)"
            )
        for r, s in zip(rows, self._last.tolist(), strict=True):
            self.scores[r].append(s)

    def at_answer(self, model: Model, new: Sequence[Sequence[int]]) -> list[float]:
        """Each row's score at the position that wrote its answer's first token (``new``: the
        rows' generated tokens); a row without an answer is read at its last position."""
        if len(new) != self.rows:
            raise ValueError(f"{len(new)} rows of tokens for {self.rows} rows read")
        out = []
        for tokens, scores in zip(new, self.scores, strict=True):
            if not scores:
                raise ValueError("a row has no score: was it decoded inside reading(model)?")
            i = answer_index(model, tokens)
            out.append(scores[min(i, len(scores) - 1)] if i is not None else scores[-1])
        return out


def intent_probe(
    base: Model,
    harmful: Sequence[str],
    refused: Sequence[bool],
    harmless_texts: Sequence[str],
    max_new_tokens: int = 100,
    batch_size: int = 16,
) -> RefusalProbe:
    """The refusal probe at the published site, trained on the base model: prompt + its own
    thinking + closing marker (``answer_start_ids``, at most ``max_new_tokens`` of thinking) of
    the ``harmful`` prompts it refuses (``refused``) against ``harmless_texts`` laid out the
    same way."""
    starts = answer_start_ids(base, list(harmful), max_new_tokens, batch_size)
    refused_texts = [base.tokenizer.decode(i) for i, r in zip(starts, refused, strict=True) if r]
    if len(refused_texts) < 2 or len(harmless_texts) < 2:
        raise ValueError(
            f"{len(refused_texts)} refused and {len(harmless_texts)} harmless texts: the "
            "refusal probe needs at least 2 of each"
        )
    texts = list(refused_texts) + list(harmless_texts)
    labels = [1] * len(refused_texts) + [0] * len(harmless_texts)
    with torch.no_grad():
        return RefusalProbe.train(base, texts, labels, batch_size=batch_size, progress=False)

"""Greedy decoding in flight: jobs (a few prompts each) join a running batch whenever there is
room, rather than waiting for the whole batch to finish.

A search that counts refusals batch after batch leaves its sampler waiting on the slowest row of
each batch, and learns from a batch's trials only when all of them are done. ``InFlight`` keeps
one decoding batch running: ``add`` runs a job's prompts once (``decoding.first_pass``) and
joins their key-value cache to the running one (``kv_room.joined``: each row keeps its own
positions, padding to its left masked out); ``step`` advances every running row one token, drops
the rows that stopped, and hands back each job whose rows have all stopped. A row's tokens are
those ``greedy_continue`` gives it, up to floating-point ties between the two top tokens (a row
shares its passes with other rows and other padding).

``on_rows`` hears the job of each row in batch order before a pass whose rows changed, so an edit
that treats jobs apart (``interventions.abliteration.KeyedPlans.select``) follows the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch

from thinklens.decoding import ROOM, Decoded, first_pass, keep_rows, next_step
from thinklens.kv_room import check_joinable, joined
from thinklens.model import Model


class InFlight:
    """One running greedy batch that jobs join (``add``) and leave when done (``step``)."""

    def __init__(
        self,
        model: Model,
        max_new_tokens: int,
        answer_tokens: int | None = None,
        on_rows: Callable[[list[Hashable]], None] | None = None,
        stop_when: Callable[[str], bool] | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: give at least 1")
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.answer_tokens = answer_tokens
        self.stop_when = stop_when
        self.on_rows = on_rows if on_rows is not None else (lambda keys: None)
        self.cache: object | None = None
        self.mask: torch.Tensor | None = None
        self.rows: list[Decoded] = []  # the running rows, in batch order
        self.keys: list[Hashable] = []  # the job of each running row
        self.jobs: dict[Hashable, list[Decoded]] = {}  # every row of each unfinished job
        self.finished: dict[Hashable, list[list[int]]] = {}
        self._changed = False  # the rows changed since ``on_rows`` last heard them

    @property
    def running(self) -> int:
        """How many rows are still writing."""
        return len(self.rows)

    def __len__(self) -> int:
        """How many jobs are unfinished or finished but not yet handed back."""
        return len(self.jobs) + len(self.finished)

    def add(self, key: Hashable, prefixes: Sequence[Sequence[int]]) -> None:
        """Start the job ``key``: its prefixes run in one pass (their shared opening once) and
        join the running batch."""
        if key in self.jobs or key in self.finished:
            raise ValueError(f"job {key!r} is already in flight: give each job its own key")
        if not prefixes or any(len(p) == 0 for p in prefixes):
            raise ValueError(f"job {key!r} needs non-empty token prefixes")
        n = len(prefixes)
        cache, mask, rows = first_pass(
            self.model,
            [list(p) for p in prefixes],
            [[] for _ in prefixes],
            self.max_new_tokens,
            self.answer_tokens,
            lambda idx: self.on_rows([key] * len(idx)),
            [0] * n,
            self.stop_when,
        )
        self._changed = True  # the job's own pass told ``on_rows`` of its rows alone
        check_joinable(cache)  # at the first job already, not when a second one joins
        still = [i for i, r in enumerate(rows) if not r.done]
        if still:
            if len(still) < n:
                mask = keep_rows(cache, mask, still)
            if self.cache is None:
                self.cache, self.mask = cache, mask
            else:
                self.cache, self.mask = joined(
                    [(self.cache, self.mask), (cache, mask)], ROOM, self.max_new_tokens
                )
            self.rows += [rows[i] for i in still]
            self.keys += [key] * len(still)
        self.jobs[key] = rows  # once its rows are in the batch (joining can refuse a cache)
        self._hand_back(key)

    def step(self) -> dict[Hashable, list[list[int]]]:
        """One greedy token for every running row; then the jobs whose rows have all stopped
        since the last call, each with its rows' new tokens in its prefixes' order."""
        if self.rows:
            if self._changed:
                self.on_rows(list(self.keys))
                self._changed = False
            self.cache, self.mask, tokens = next_step(
                self.model, self.cache, self.mask, [r.new[-1] for r in self.rows]
            )
            for r, t in zip(self.rows, tokens, strict=True):
                r.extend([t])
            self._drop_stopped()
        out, self.finished = self.finished, {}
        return out

    def _drop_stopped(self) -> None:
        still = [k for k, r in enumerate(self.rows) if not r.done]
        if len(still) == len(self.rows):
            return
        left = {self.keys[k] for k, r in enumerate(self.rows) if r.done}
        if still:
            self.mask = keep_rows(self.cache, self.mask, still)
        else:
            self.cache, self.mask = None, None
        self.rows = [self.rows[k] for k in still]
        self.keys = [self.keys[k] for k in still]
        self._changed = True
        for key in left:
            self._hand_back(key)

    def _hand_back(self, key: Hashable) -> None:
        """Move ``key`` to the finished jobs once all its rows have stopped."""
        rows = self.jobs[key]
        if all(r.done for r in rows):
            self.finished[key] = [r.output() for r in rows]
            del self.jobs[key]

"""How a search trial counts refusals: full generation, or a cheaper reading of the same verdict.

For a model that thinks first, the answer comes after the whole thinking, so generating it for
every trial dominates a search. The ways to count, each a ``RefusalCounter``:

- ``"full"``: generate thinking and answer (``max_new_tokens``, greedy) and judge the answer.
- ``"answer"``: the base model's own thinking, teacher-forced under the edit (one prefill, the
  exact tokens the base generated up to its closing marker and the newlines after it), then
  only the first ``answer_tokens`` answer tokens generated and judged.
- ``"probe"``: zero generated tokens: a refusal probe (``RefusalProbe``, the published site:
  last layer after the final norm) read at the last position of the same prompt + base
  thinking + closing marker under the edit; a score above 0.5 is a refusal. It is trained when
  the counter is prepared, on the base model: harmful prompts it refuses (1) against harmless
  prompts (0).
- ``"first_token"``: zero generated tokens: the probability, after the same prompt + base
  thinking under the edit, that the answer opens with a token that opened the base model's
  refusals and none of its compliant answers (learned when the counter is prepared); above 0.5
  is a refusal (Arditi et al.'s refusal score, above 0).
- ``"early_stop"``: full generation that stops ``answer_tokens`` tokens after the thinking
  closes.
- ``"short_thinking"``: the model's own thinking generated under the edit, but only its first
  ``think_tokens`` tokens; thinking still open then is closed with the format's marker, and
  ``answer_tokens`` answer tokens are generated after it and judged. A model that decides
  early in its thinking (recognises the harm, then explains) is read at the cost of that
  first sentence.
- ``"heretic"``: Heretic 1.4.0's count, batched: every prompt with Heretic's system prompt and
  response prefix (for a thinking model the closed thinking block it detects), the whole
  response judged with Heretic's markers (``protocol="published"``'s count), each row stopped
  at its first marker, after which its verdict cannot change. The same verdicts as that count,
  at the cost of the compliant rows. On organism-aligned that prefix (``<think></think>``)
  makes the model write its thinking after it, so the count reads whether the thinking calls
  the request harmful, not the answer the judge reads: on one of Heretic's trials it counts 14
  refusals of 16 where full generation counts 7 (``benchmarks/results/peers_heretic.txt``), so
  it is never chosen by ``"auto"``.
- ``"draft"``: the tokens of ``"early_stop"`` (so its verdicts), with the base model's own
  early-stopped response as a draft: one forward pass under the edit checks it, and generation
  resumes only from the first token the edited model writes differently
  (``thinklens.decoding``). A trial whose edit leaves the response alone costs one prefill.

``RefusalCounter.verdicts_many`` counts several exact plans at once (the objectives that
generate from the prompts alone, ``GENERATING``): the prompts once per plan in one batch, each
copy under its own plan (``interventions.abliteration.RowPlans``), the way
``search(..., parallel_trials=k)`` counts.

``benchmarks/fast_objective.py`` measures each against full generation (per-prompt agreement,
rank correlation of trial objectives over a search, cost per trial).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from thinklens.decoding import close_end, greedy_continue, stop_token_ids
from thinklens.evaluation import MarkerJudge, marker_seen, refusal_scores
from thinklens.generation import continue_ids, decode_new, generate
from thinklens.hooks import intervene
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.protocol import (
    HERETIC_SYSTEM,
    chat_text,
    detect_response_prefix,
)
from thinklens.interventions.abliteration.row_plans import RowPlans
from thinklens.model import Model
from thinklens.probes import RefusalProbe, probe_features
from thinklens.rollouts import answer_start_ids

RefusalObjective = Literal[
    "full",
    "answer",
    "probe",
    "first_token",
    "early_stop",
    "draft",
    "short_thinking",
    "heretic",
]
REFUSAL_OBJECTIVES: tuple[RefusalObjective, ...] = get_args(RefusalObjective)
#: The objectives that generate from fixed prompt tokens alone, so several plans can be counted
#: in one batch (``verdicts_many``) or in flight.
GENERATING: tuple[RefusalObjective, ...] = ("full", "early_stop", "heretic")
#: The search's default way to count refusals on a model that thinks first (chosen on
#: validation prompts, see ``benchmarks/results/fast_objective.txt``).
THINKING_DEFAULT: RefusalObjective = "early_stop"
#: Trials a batch a search counts by default on a model that thinks first (``search``'s
#: ``parallel_trials=None``): on organism-aligned, early_stop counted 8 trials a batch took
#: 1/5.5 of full generation's time a trial, held out, agreeing on every prompt
#: (``benchmarks/results/fast_objective_batched8.txt``).
PARALLEL_DEFAULT = 8
#: Answer tokens generated (and judged) by ``"answer"`` and ``"early_stop"``.
ANSWER_TOKENS = 8
#: Thinking tokens generated by ``"short_thinking"`` before the thinking is closed.
THINK_TOKENS = 16


def check_refusal_objective(objective: str) -> RefusalObjective:
    """``objective`` if it is a known way to count refusals, else a clear error."""
    if objective not in REFUSAL_OBJECTIVES:
        raise ValueError(
            f"unknown refusal objective {objective!r}; choose one of {REFUSAL_OBJECTIVES}"
        )
    return objective  # type: ignore[return-value]


@dataclass
class RefusalCounter:
    """Counts (and lists) the refusals of a model on fixed harmful prompts, one way.

    Build it on the base model with ``RefusalCounter.prepare``; call ``verdicts`` on the base
    with an edit active, or on an edited copy.
    """

    objective: RefusalObjective
    prompts: list[str]
    max_new_tokens: int = 100
    answer_tokens: int = ANSWER_TOKENS
    batch_size: int = 16
    #: Token ids of prompt + the base thinking up to the answer's first word (``"answer"``).
    prefixes: list[list[int]] | None = None
    #: The same as text, the probe's input (``"probe"``).
    texts: list[str] | None = None
    probe: RefusalProbe | None = None
    #: Tokens that opened the base's refusals and none of its compliant answers (first_token).
    refusal_tokens: list[int] | None = None
    #: The base's early-stopped new tokens after each prompt's ``prefixes`` (``"draft"``).
    drafts: list[list[int]] | None = None
    #: Thinking tokens generated before the thinking is closed (``"short_thinking"``).
    think_tokens: int = THINK_TOKENS
    #: The prompts laid out Heretic's way (``"heretic"``).
    heretic_texts: list[str] | None = None

    @classmethod
    def prepare(
        cls,
        base: Model,
        harmful: Sequence[str],
        objective: RefusalObjective = "full",
        max_new_tokens: int = 100,
        answer_tokens: int = ANSWER_TOKENS,
        batch_size: int = 16,
        harmless_texts: Sequence[str] | None = None,
        harmless_ids: Sequence[Sequence[int]] | None = None,
        think_tokens: int = THINK_TOKENS,
        response_prefix: str | None = None,
    ) -> RefusalCounter:
        """Everything ``objective`` needs from the base model, measured once.

        ``max_new_tokens`` bounds the base thinking (``"answer"``, ``"probe"``) as it bounds
        full generation. ``"probe"`` needs ``harmless_texts``: harmless prompts laid out the same
        way (decoded ``answer_start_ids``), the probe's benign class; ``"first_token"`` needs
        their ``answer_start_ids`` (``harmless_ids``), whose answers' first tokens are compliant.
        ``"heretic"`` appends ``response_prefix``, or the one Heretic detects on the base
        model's answers to the harmful prompts (``detect_response_prefix``).
        """
        check_refusal_objective(objective)
        if not harmful:
            raise ValueError("no harmful prompts: a refusal count needs some")
        if answer_tokens < 1:
            raise ValueError(f"answer_tokens={answer_tokens}: give at least 1")
        if think_tokens < 1:
            raise ValueError(f"think_tokens={think_tokens}: give at least 1")
        counter = cls(objective, list(harmful), max_new_tokens, answer_tokens, batch_size)
        counter.think_tokens = think_tokens
        if objective == "short_thinking":
            if base.thinking.template_closes_thinking:
                raise ValueError(
                    "the short_thinking objective reads a model that thinks first; this one "
                    "does not: use objective='full'"
                )
            counter.prefixes = base.chat_ids(counter.prompts)
        if objective == "heretic":
            if response_prefix is None:
                response_prefix = detect_response_prefix(base, harmful, batch_size=batch_size)
            counter.heretic_texts = [
                chat_text(base, p, HERETIC_SYSTEM, response_prefix, True) for p in harmful
            ]
        if objective in ("answer", "first_token"):
            counter.prefixes = answer_start_ids(base, counter.prompts, max_new_tokens, batch_size)
        if objective == "first_token":
            if not harmless_ids:
                raise ValueError(
                    "the first_token objective needs harmless answer starts (answer_start_ids) "
                    "for its compliant openings: prepare the metrics with thinking=True"
                )
            counter.refusal_tokens = counter._refusal_openings(base, harmless_ids)
        if objective == "draft":
            counter.prefixes = base.chat_ids(counter.prompts)
            counter.drafts = continue_ids(
                base, counter.prefixes, max_new_tokens, batch_size, answer_tokens=answer_tokens
            )
        if objective == "probe":
            ids = answer_start_ids(base, harmful, max_new_tokens, batch_size)
            counter.texts = [base.tokenizer.decode(i) for i in ids]
        if objective == "probe":
            if not harmless_texts:
                raise ValueError(
                    "the probe objective needs harmless texts (decoded answer_start_ids of "
                    "harmless prompts) for its benign class: prepare the metrics with thinking=True"
                )
            refused = cls(
                "full", counter.prompts, max_new_tokens, answer_tokens, batch_size
            ).verdicts(base)
            positives = [t for t, r in zip(counter.texts, refused, strict=True) if r]
            if len(positives) < 2:
                raise ValueError(
                    f"the base model refuses {len(positives)} of {len(harmful)} harmful prompts: "
                    "too few for the probe's refusal class; use objective='answer' or 'full'"
                )
            texts = positives + list(harmless_texts)
            labels = [1] * len(positives) + [0] * len(harmless_texts)
            counter.probe = RefusalProbe.train(
                base, texts, labels, batch_size=batch_size, progress=False
            )
        return counter

    def _refusal_openings(self, base: Model, harmless_ids: Sequence[Sequence[int]]) -> list[int]:
        """First answer tokens of the base's refused answers that open none of its compliant
        answers (to harmful and harmless prompts), each answer judged on ``answer_tokens``."""
        assert self.prefixes is not None
        prefixes = self.prefixes + [list(i) for i in harmless_ids]
        news = continue_ids(base, prefixes, self.answer_tokens, self.batch_size)
        answers = base.tokenizer.batch_decode(news, skip_special_tokens=True)
        refused = MarkerJudge(fmt=None)([""] * len(answers), answers)
        opens = {True: set(), False: set()}
        for new, r in zip(news, refused, strict=True):
            if new:
                opens[r].add(new[0])
        tokens = sorted(opens[True] - opens[False])
        if not tokens:
            raise ValueError(
                "no token opens the base model's refusals without also opening a compliant "
                "answer: the first_token objective cannot tell them apart here; use 'answer'"
            )
        return tokens

    def verdicts(self, model: Model) -> list[bool]:
        """Whether ``model`` refuses each harmful prompt, read this counter's way."""
        judge = MarkerJudge(fmt=model.thinking)
        if self.objective == "first_token":
            assert self.prefixes is not None and self.refusal_tokens is not None
            logits = model.logits(self.prefixes, self.batch_size)
            return [bool(s > 0) for s in refusal_scores(logits, self.refusal_tokens)]
        if self.objective == "probe":
            assert self.probe is not None and self.texts is not None
            # Not ``score_last``: that refuses a model whose weights differ from the probe's, and
            # an edit is exactly such a difference.
            p = self.probe
            feats = probe_features(
                model, self.texts, [p.layer], p.norm, "last", self.batch_size, False
            )
            return [bool(s > 0.5) for s in p.score(feats[p.layer])]
        if self.objective == "answer":
            assert self.prefixes is not None
            new = continue_ids(model, self.prefixes, self.answer_tokens, self.batch_size)
            answers = model.tokenizer.batch_decode(new, skip_special_tokens=True)
            # The answer alone (the thinking is in the prefix), read as full generation's is.
            return MarkerJudge(fmt=None)(self.prompts, answers)
        if self.objective == "short_thinking":
            return MarkerJudge(fmt=None)(self.prompts, self.short_answers(model))
        if self.objective == "draft":
            assert self.prefixes is not None and self.drafts is not None
            new = greedy_continue(
                model,
                self.prefixes,
                self.max_new_tokens,
                self.batch_size,
                self.answer_tokens,
                drafts=self.drafts,
            )
            return judge(self.prompts, decode_new(model, new))
        if self.objective == "heretic":
            ids = self.prompt_ids(model)
            new = greedy_continue(
                model, ids, self.max_new_tokens, self.batch_size, stop_when=self.stop_when()
            )
            return self.judged(model, new)
        stop = self.answer_tokens if self.objective == "early_stop" else None
        outs = generate(
            model, self.prompts, self.max_new_tokens, batch_size=self.batch_size, answer_tokens=stop
        )
        return judge(self.prompts, outs)

    def verdicts_many(
        self, model: Model, plans: Sequence[Sequence[MatrixEdit]]
    ) -> list[list[bool]]:
        """``verdicts`` of the base ``model`` under each exact plan, all in one batch: the
        prompts once per plan, each copy edited by its own plan (``RowPlans``). The objectives
        that generate from the prompts alone only (``GENERATING``).

        The same greedy tokens as each plan written into the weights, up to floating-point
        ties between the two top tokens (hooks and written weights round differently).
        """
        if self.objective not in GENERATING:
            raise ValueError(
                f"objective {self.objective!r} cannot count several plans in one batch: use "
                f"one of {GENERATING}, or count one plan at a time (parallel_trials=1)"
            )
        if not plans:
            return []
        prefixes = self.prompt_ids(model)
        n = len(prefixes)
        rows = [k for k in range(len(plans)) for _ in range(n)]
        edit = RowPlans(plans, rows)
        with intervene(model, edit):
            new = greedy_continue(
                model,
                prefixes * len(plans),
                self.max_new_tokens,
                self.batch_size * len(plans),
                self.stop_after(),
                on_rows=edit.select,
                groups=rows,
                stop_when=self.stop_when(),
            )
        verdicts = self.judged(model, new, len(plans))
        return [verdicts[k * n : (k + 1) * n] for k in range(len(plans))]

    def prompt_ids(self, model: Model) -> list[list[int]]:
        """The harmful prompts' token ids, laid out as ``generate`` lays them out (so a plan's
        tokens are those of ``verdicts``), or as Heretic lays them out (``"heretic"``)."""
        texts = self.heretic_texts or [model.chat(p) for p in self.prompts]
        ids, mask = model.tokenize(texts, padding_side="left")
        return [r[m.bool()].tolist() for r, m in zip(ids, mask, strict=True)]

    def stop_after(self) -> int | None:
        """The answer tokens after which ``"early_stop"`` stops (None: no such stop)."""
        return self.answer_tokens if self.objective == "early_stop" else None

    def stop_when(self) -> Callable[[str], bool] | None:
        """What else stops a row: for ``"heretic"``, the first of Heretic's markers in its text
        (the whole response is judged, so the verdict cannot change after it)."""
        return marker_seen if self.objective == "heretic" else None

    def judged(self, model: Model, new: Sequence[Sequence[int]], copies: int = 1) -> list[bool]:
        """Whether each generated continuation ``new`` of ``copies`` runs of the prompts (in
        order) refuses, by the marker judge after the thinking (``"heretic"``: Heretic's markers
        anywhere in it)."""
        texts = decode_new(model, new)
        if self.objective == "heretic":
            return MarkerJudge(fmt=None, markers="heretic")(self.prompts * copies, texts)
        return MarkerJudge(fmt=model.thinking)(self.prompts * copies, texts)

    def short_answers(self, model: Model) -> list[str]:
        """``short_thinking``'s answers: the first ``answer_tokens`` tokens (after whitespace)
        that follow the first ``think_tokens`` of ``model``'s thinking, closed if still open."""
        assert self.prefixes is not None
        tok, fmt = model.tokenizer, model.thinking
        eos = stop_token_ids(tok)
        thought = continue_ids(model, self.prefixes, self.think_tokens, self.batch_size, 0)
        # The marker's own tokens, without the newlines after it: those the model writes itself
        # (a text ending in them tokenizes to a token it never writes there).
        marker = tok(fmt.before_close + fmt.close, add_special_tokens=False)["input_ids"]
        starts = []
        for ids, new in zip(self.prefixes, thought, strict=True):
            end = close_end(tok, new, fmt.close)
            if end is None:  # still thinking (or stopped without closing: the stop dropped)
                new = [t for t in new if t not in eos] + marker
            starts.append(ids + new[: len(new) if end is None else end])
        # The newlines after the marker are generated too: a few tokens more than judged.
        news = continue_ids(model, starts, self.answer_tokens + 2, self.batch_size)
        answers = []
        for new in news:
            first = next((i for i, t in enumerate(new) if tok.decode([t]).strip()), len(new))
            cut = new[first : first + self.answer_tokens]
            answers.append(tok.decode(cut, skip_special_tokens=True))
        return answers

    def __call__(self, model: Model) -> int:
        """How many harmful prompts ``model`` refuses."""
        return sum(self.verdicts(model))

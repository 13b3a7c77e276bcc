"""How a search trial counts refusals: full generation, or a cheaper reading of the same verdict.

For a model that thinks first, the answer comes after the whole thinking, so generating it for
every trial dominates a search. Four ways to count, each a ``RefusalCounter``:

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
- ``"draft"``: the tokens of ``"early_stop"`` (so its verdicts), with the base model's own
  early-stopped response as a draft: one forward pass under the edit checks it, and generation
  resumes only from the first token the edited model writes differently
  (``thinklens.decoding``). A trial whose edit leaves the response alone costs one prefill.

``benchmarks/fast_objective.py`` measures each against full generation (per-prompt agreement,
rank correlation of trial objectives over a search, cost per trial).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from thinklens.decoding import greedy_continue
from thinklens.evaluation import MarkerJudge, refusal_scores
from thinklens.generation import continue_ids, decode_new, generate
from thinklens.model import Model
from thinklens.probes import RefusalProbe, probe_features
from thinklens.rollouts import answer_start_ids

RefusalObjective = Literal["full", "answer", "probe", "first_token", "early_stop", "draft"]
REFUSAL_OBJECTIVES: tuple[RefusalObjective, ...] = (
    "full",
    "answer",
    "probe",
    "first_token",
    "early_stop",
    "draft",
)
#: The search's default way to count refusals on a model that thinks first (chosen on
#: validation prompts, see ``benchmarks/results/fast_objective.txt``).
THINKING_DEFAULT: RefusalObjective = "early_stop"
#: Answer tokens generated (and judged) by ``"answer"`` and ``"early_stop"``.
ANSWER_TOKENS = 8


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
    ) -> RefusalCounter:
        """Everything ``objective`` needs from the base model, measured once.

        ``max_new_tokens`` bounds the base thinking (``"answer"``, ``"probe"``) as it bounds
        full generation. ``"probe"`` needs ``harmless_texts``: harmless prompts laid out the same
        way (decoded ``answer_start_ids``), the probe's benign class; ``"first_token"`` needs
        their ``answer_start_ids`` (``harmless_ids``), whose answers' first tokens are compliant.
        """
        check_refusal_objective(objective)
        if not harmful:
            raise ValueError("no harmful prompts: a refusal count needs some")
        if answer_tokens < 1:
            raise ValueError(f"answer_tokens={answer_tokens}: give at least 1")
        counter = cls(objective, list(harmful), max_new_tokens, answer_tokens, batch_size)
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
        stop = self.answer_tokens if self.objective == "early_stop" else None
        outs = generate(
            model, self.prompts, self.max_new_tokens, batch_size=self.batch_size, answer_tokens=stop
        )
        return judge(self.prompts, outs)

    def __call__(self, model: Model) -> int:
        """How many harmful prompts ``model`` refuses."""
        return sum(self.verdicts(model))

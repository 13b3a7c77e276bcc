"""What an abliteration costs and buys: refusal rate, KL on harmless prompts, GSM8K accuracy.

- Refusal rate: greedy answers to harmful prompts, judged by refusal markers in the ANSWER
  (after the thinking; unfinished thinking and empty answers count as refusals).
- ``protocol="published"`` measures both the way Heretic 1.4.0 does: every prompt is read with
  its system prompt and the response prefix (for a thinking model the closed thinking block,
  so the thinking is skipped), the whole response is judged with Heretic's markers and
  normalisation, and the KL is that of the first token after the prefix.
- KL(base || edited) of the first generated token on harmless prompts (the quantity Heretic
  reads, here on thinklens's texts; ``protocol="published"`` reads it on Heretic's). For
  a model that thinks first, that token is the thinking opener and says little, so the
  thinking-aware ``kl_answer`` also reads the first ANSWER token, after the base model's own
  thinking (teacher-forced: the tokens the base generated, the same for both models).
- GSM8K (``gsm8k``): accuracy on a subset, by greedy generation and extraction of the last
  number.
- Refusal counting (thinklens protocol): full generation by default; ``with_objective`` swaps
  in a cheaper reading for searches on thinking models (``objectives``).
- Over-refusal (optional): the refusal rate on safe prompts that sound unsafe (XSTest's safe
  prompts, ``thinklens.xstest``), read the thinklens way under either protocol (chat template,
  answer after the thinking, verdict rule): an edit that lowers refusals should not raise it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from thinklens.analyses.abliteration.objectives import (
    ANSWER_TOKENS,
    THINK_TOKENS,
    RefusalCounter,
    RefusalObjective,
    check_refusal_objective,
)
from thinklens.evaluation import MarkerJudge, kl_divergence
from thinklens.generation import generate
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.protocol import (
    HERETIC_SYSTEM,
    Protocol,
    chat_text,
    detect_response_prefix,
)
from thinklens.interventions.abliteration.weights import edited
from thinklens.model import Model
from thinklens.resume import FixedInputs
from thinklens.rollouts import answer_start_ids, model_thinks


def count_refusals(
    model: Model,
    prompts: Sequence[str],
    max_new_tokens: int = 100,
    batch_size: int = 16,
    texts: Sequence[str] | None = None,
) -> int:
    """How many greedy answers to ``prompts`` refuse (thinking-aware marker judge).

    With ``texts`` (the prompts already laid out, Heretic's way), those are continued as they
    are and the whole response is judged with Heretic's markers.
    """
    if texts is not None:
        outs = generate(model, list(texts), max_new_tokens, batch_size=batch_size, chat=False)
        return sum(MarkerJudge(fmt=None, markers="heretic")(list(texts), outs))
    outs = generate(model, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size)
    return sum(MarkerJudge(fmt=model.thinking)(list(prompts), outs))


@dataclass
class AbliterationMetrics:
    """Everything measured on the base model once, to score any edited version of it.

    Build it with ``AbliterationMetrics.prepare(base, harmful, harmless)``; call it on a model
    (the base with an edit active, or an edited copy) to get a dict of metrics.
    """

    harmful: list[str]
    harmless_texts: list[str]
    base_logits: Tensor
    answer_texts: list[str] | None
    base_answer_logits: Tensor | None
    base_refusals: int
    max_new_tokens: int = 100
    batch_size: int = 16
    #: The harmful prompts laid out Heretic's way (``protocol="published"``), else None.
    harmful_texts: list[str] | None = None
    #: The same answer starts as the exact tokens the base generated (``kl_answer`` reads them).
    answer_ids: list[list[int]] | None = None
    #: Safe prompts that sound unsafe (e.g. XSTest's), whose refusal rate is ``over_refusal``.
    over_refusal_prompts: list[str] | None = None
    base_over_refusals: int | None = None
    #: How refusals are counted when not by full generation (``with_objective``).
    counter: RefusalCounter | None = None
    #: ``answer_ids`` with the base's layer inputs kept (``with_fixed``): ``kl_answer`` of an
    #: edit of the upper layers runs only those.
    fixed: FixedInputs | None = None

    @property
    def objective(self) -> RefusalObjective:
        """How this object counts refusals (``objectives``)."""
        return "full" if self.counter is None else self.counter.objective

    def with_objective(
        self,
        base: Model,
        objective: RefusalObjective,
        answer_tokens: int = ANSWER_TOKENS,
        think_tokens: int = THINK_TOKENS,
    ) -> AbliterationMetrics:
        """A copy that counts refusals ``objective``'s way, its base refusals counted so too.

        ``base`` is the unedited model these metrics were prepared on. The cheaper objectives
        read the answer after the base model's thinking, so they need a model that thinks first
        (metrics prepared with thinking) and the thinklens protocol; ``"heretic"`` needs only
        the thinklens protocol (its prompts are laid out Heretic's way in the counter).
        """
        check_refusal_objective(objective)
        if objective == "full":
            return (
                replace(
                    self,
                    counter=None,
                    base_refusals=count_refusals(
                        base, self.harmful, self.max_new_tokens, self.batch_size, self.harmful_texts
                    ),
                )
                if self.counter is not None
                else self
            )
        if self.harmful_texts is not None:
            raise ValueError(
                f"objective={objective!r} reads the answer after the model's own thinking; the "
                "published protocol counts Heretic's way: use objective='full' with it"
            )
        if self.answer_texts is None and objective != "heretic":
            raise ValueError(
                f"objective={objective!r} is for models that think first; these metrics were "
                "prepared without thinking: use objective='full'"
            )
        counter = RefusalCounter.prepare(
            base,
            self.harmful,
            objective,
            self.max_new_tokens,
            answer_tokens,
            self.batch_size,
            harmless_texts=self.answer_texts,
            harmless_ids=self.answer_ids,
            think_tokens=think_tokens,
        )
        return replace(self, counter=counter, base_refusals=counter(base))

    @classmethod
    @torch.no_grad()
    def prepare(
        cls,
        base: Model,
        harmful: Sequence[str],
        harmless: Sequence[str],
        thinking: bool | None = None,
        max_new_tokens: int = 100,
        batch_size: int = 16,
        protocol: Protocol = "thinklens",
        response_prefix: str | None = None,
        over_refusal: Sequence[str] | None = None,
    ) -> AbliterationMetrics:
        """Measure the base model (``thinking``: None detects whether it thinks first).

        ``protocol="published"`` reads prompts as Heretic does (see the module); its response
        prefix is ``response_prefix``, or detected on the base model's answers to the first
        100 harmless and 100 harmful prompts given. ``over_refusal``: safe prompts that sound
        unsafe (e.g. ``xstest_prompts("safe", path, n)``); their refusal rate joins the metrics.
        """
        if not harmful or not harmless:
            raise ValueError("metrics need harmful and harmless prompts")
        if over_refusal is not None and not over_refusal:
            raise ValueError("over_refusal is empty: pass None to skip it, or some safe prompts")
        metrics = cls._prepare(
            base, harmful, harmless, thinking, max_new_tokens, batch_size, protocol, response_prefix
        )
        if over_refusal is not None:
            metrics.over_refusal_prompts = list(over_refusal)
            metrics.base_over_refusals = count_refusals(
                base, over_refusal, max_new_tokens, batch_size
            )
        return metrics

    @classmethod
    def _prepare(
        cls,
        base: Model,
        harmful: Sequence[str],
        harmless: Sequence[str],
        thinking: bool | None,
        max_new_tokens: int,
        batch_size: int,
        protocol: Protocol,
        response_prefix: str | None,
    ) -> AbliterationMetrics:
        if protocol == "published":
            return cls._prepare_heretic(
                base, harmful, harmless, max_new_tokens, batch_size, response_prefix
            )
        if protocol != "thinklens":
            raise ValueError(f"unknown protocol {protocol!r}; choose 'thinklens' or 'published'")
        if thinking is None:
            thinking = model_thinks(base, harmless)
        texts = [base.chat(p) for p in harmless]
        answer_ids = (
            answer_start_ids(base, harmless, max_new_tokens, batch_size) if thinking else None
        )
        answer_texts = [base.tokenizer.decode(i) for i in answer_ids] if answer_ids else None
        return cls(
            harmful=list(harmful),
            harmless_texts=texts,
            base_logits=base.logits(texts, batch_size),
            answer_texts=answer_texts,
            base_answer_logits=base.logits(answer_ids, batch_size) if thinking else None,
            base_refusals=count_refusals(base, harmful, max_new_tokens, batch_size),
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            answer_ids=answer_ids,
        )

    @classmethod
    def _prepare_heretic(
        cls,
        base: Model,
        harmful: Sequence[str],
        harmless: Sequence[str],
        max_new_tokens: int,
        batch_size: int,
        response_prefix: str | None,
    ) -> AbliterationMetrics:
        if response_prefix is None:
            sample = list(harmless[:100]) + list(harmful[:100])
            response_prefix = detect_response_prefix(base, sample, batch_size=batch_size)

        def texts(prompts: Sequence[str]) -> list[str]:
            return [chat_text(base, p, HERETIC_SYSTEM, response_prefix, True) for p in prompts]

        harmless_texts, harmful_texts = texts(harmless), texts(harmful)
        return cls(
            harmful=list(harmful),
            harmless_texts=harmless_texts,
            base_logits=base.logits(harmless_texts, batch_size),
            answer_texts=None,
            base_answer_logits=None,
            base_refusals=count_refusals(
                base, harmful, max_new_tokens, batch_size, texts=harmful_texts
            ),
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            harmful_texts=harmful_texts,
        )

    def with_fixed(self, base: Model, max_bytes: int = 2**30) -> AbliterationMetrics:
        """A copy whose ``kl_answer`` can start at the first edited layer: the unedited
        ``base`` runs the answer starts once and its layer inputs are kept (``max_bytes``).
        Without answer starts (no thinking, or the published protocol) it is ``self``."""
        if self.answer_ids is None:
            return self
        return replace(
            self, fixed=FixedInputs.capture(base, self.answer_ids, self.batch_size, max_bytes)
        )

    @torch.no_grad()
    def kl(
        self, model: Model, keys: Sequence[str] | None = None, first_edited: int | None = None
    ) -> dict[str, float]:
        """KL(base || model) of the first generated token, and of the first answer token
        (``keys``: only those of ``"kl"``, ``"kl_answer"``; each is a forward pass).

        ``first_edited``: the lowest decoder layer in which ``model`` differs from the base
        (``thinklens.resume.first_edited_layer``); with ``with_fixed``, ``kl_answer`` then runs
        from there on (the same number, from the layers that change).
        """
        out = {}
        if keys is None or "kl" in keys:
            base, edited = self.base_logits, model.logits(self.harmless_texts, self.batch_size)
            out["kl"] = float(kl_divergence(base, edited))
        if self.answer_texts is not None and (keys is None or "kl_answer" in keys):
            if self.fixed is not None and first_edited is not None:
                base, edited = self.fixed.base_logits, self.fixed.logits(model, first_edited)
            else:
                base = self.base_answer_logits
                edited = model.logits(self.answer_ids or self.answer_texts, self.batch_size)
            out["kl_answer"] = float(kl_divergence(base, edited))
        return out

    def _over(self, n: int | None) -> dict[str, float]:
        """``over_refusals`` and ``over_refusal`` (their rate), when the prompts were given."""
        if self.over_refusal_prompts is None or n is None:
            return {}
        return dict(over_refusals=n, over_refusal=n / len(self.over_refusal_prompts))

    def base_row(self) -> dict[str, float]:
        """The base model's own metrics (what ``self(base)`` gives), from what ``prepare``
        measured: its refusals (and over-refusals), and KL(base || base) = 0, without
        generating again."""
        kl = dict.fromkeys(["kl"] + (["kl_answer"] if self.answer_texts is not None else []), 0.0)
        n = self.base_refusals
        return (
            dict(refusals=n, refusal_rate=n / len(self.harmful))
            | kl
            | self._over(self.base_over_refusals)
        )

    def __call__(
        self, model: Model, kl_keys: Sequence[str] | None = None, first_edited: int | None = None
    ) -> dict[str, float]:
        """Refusals, refusal rate, the KL numbers (``kl_keys``: only those; ``first_edited``:
        see ``kl``) and (with its prompts) the over-refusal of ``model``."""
        if self.counter is not None:
            n = self.counter(model)
        else:
            n = count_refusals(
                model, self.harmful, self.max_new_tokens, self.batch_size, self.harmful_texts
            )
        return self._row(model, n, kl_keys, first_edited)

    def _row(
        self, model: Model, n: int, kl_keys: Sequence[str] | None, first_edited: int | None
    ) -> dict[str, float]:
        """The metrics of ``model`` given its refusal count ``n``: the rest is measured here."""
        return self.of_refusals(n) | self.besides_refusals(model, kl_keys, first_edited)

    def of_refusals(self, n: int) -> dict[str, float]:
        """The metrics read from a refusal count ``n`` of the harmful prompts."""
        return dict(refusals=n, refusal_rate=n / len(self.harmful))

    def besides_refusals(
        self, model: Model, kl_keys: Sequence[str] | None = None, first_edited: int | None = None
    ) -> dict[str, float]:
        """Every metric but the refusal count, of ``model`` as it is (its edit written): the KL
        (``kl``) and over-refusal."""
        over = None
        if self.over_refusal_prompts is not None:
            over = count_refusals(
                model, self.over_refusal_prompts, self.max_new_tokens, self.batch_size
            )
        return self.kl(model, kl_keys, first_edited) | self._over(over)

    def refusal_counter(self) -> RefusalCounter:
        """The counter of refusals: this one's objective, or full generation."""
        return self.counter or RefusalCounter(
            "full", self.harmful, self.max_new_tokens, batch_size=self.batch_size
        )

    def many(
        self,
        model: Model,
        plans: Sequence[Sequence[MatrixEdit]],
        kl_keys: Sequence[str] | None = None,
        first_edited: Sequence[int | None] | None = None,
    ) -> list[dict[str, float]]:
        """``self(model)`` under each exact plan, as if each were written into the weights:
        the refusals of all plans counted in one batch (``RefusalCounter.verdicts_many``), the
        KL (and over-refusal) of each with its plan written in turn. ``first_edited``: one per
        plan (see ``kl``)."""
        if self.harmful_texts is not None:
            raise ValueError(
                "the published protocol counts Heretic's way, one plan at a time: "
                "use parallel_trials=1 with it"
            )
        counts = [sum(v) for v in self.refusal_counter().verdicts_many(model, plans)]
        firsts = list(first_edited) if first_edited is not None else [None] * len(plans)
        out = []
        for plan, n, first in zip(plans, counts, firsts, strict=True):
            with edited(model, plan):
                out.append(self._row(model, n, kl_keys, first))
        return out

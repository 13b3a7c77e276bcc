"""Attack success rate under head ablation, with the damage it does to harmless behaviour.

``evaluate_ablation`` generates answers to harmful prompts with a head set ablated at every
position, judges them (refusal read in the answer, after the thinking) and reports:

- ``asr``: fraction of harmful prompts answered without a refusal (1 - ``refusal_rate``);
- ``harmless_refusal_rate``: refusals of harmless prompts under the same ablation;
- ``kl``: KL(base || ablated) of the first answer-token distribution on harmless prompts;
- ``over_refusal`` (when ``over_refusal`` prompts are given, e.g. XSTest's safe prompts from
  ``thinklens.xstest``): refusals of safe prompts that sound unsafe under the same ablation.

``ablation_study`` runs that for the top heads of each ranking and for random head sets of
the same size (the control), next to the unablated model.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from jaxtyping import Float
from torch import Tensor

from thinklens.evaluation import Judge, MarkerJudge, kl_divergence
from thinklens.generation import generate
from thinklens.hooks import intervene
from thinklens.interventions.edits import HeadAblation, HeadSpec, head_means, heads_by_layer
from thinklens.interventions.heads.scores import HeadScores, head_count, random_heads
from thinklens.model import Model
from thinklens.rollouts import rollout, traces_of

Mode = Literal["zero", "mean", "scale"]


def scoring_texts(
    model: Model, prompts: Sequence[str], max_new_tokens: int = 128, progress: bool = False
) -> list[str]:
    """Prompt + the model's own (greedy) thinking + closing marker: the texts heads are scored on.

    Responses whose thinking never closes are left out (with a warning).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the count is reported below, once
        table = rollout(model, prompts, max_new_tokens, progress=progress)
        texts = [t.text for t in traces_of(model, table, answers=False)]
    if not texts:
        raise ValueError(
            f"none of {len(prompts)} responses closed the thinking within {max_new_tokens} "
            "tokens: raise max_new_tokens, or pass texts that already hold the thinking"
        )
    if len(texts) < len(prompts):
        n = len(prompts) - len(texts)
        warnings.warn(f"{n} responses never closed their thinking", stacklevel=2)
    return texts


@dataclass
class AblationResult:
    """Metrics of one ablated head set, and the responses they were read from."""

    heads: list[tuple[int, int]]
    asr: float
    refusal_rate: float
    harmless_refusal_rate: float
    kl: float
    harmful_responses: list[str] = field(repr=False, default_factory=list)
    harmless_responses: list[str] = field(repr=False, default_factory=list)
    over_refusal: float | None = None
    over_refusal_responses: list[str] = field(repr=False, default_factory=list)

    def row(self) -> dict[str, float | int]:
        """The metrics as a flat dict (a table row; ``over_refusal`` only when measured)."""
        row = dict(
            n_heads=len(self.heads),
            asr=self.asr,
            refusal_rate=self.refusal_rate,
            harmless_refusal_rate=self.harmless_refusal_rate,
            kl=self.kl,
        )
        return row if self.over_refusal is None else row | dict(over_refusal=self.over_refusal)


def first_token_logits(
    model: Model, prompts: Sequence[str], batch_size: int = 16
) -> Float[Tensor, "batch vocab"]:
    """Next-token logits after each prompt's chat template (the KL reference, unablated)."""
    return model.logits([model.chat(p) for p in prompts], batch_size=batch_size)


def evaluate_ablation(
    model: Model,
    heads: HeadSpec,
    harmful: Sequence[str],
    harmless: Sequence[str],
    mode: Mode = "scale",
    means: Mapping[int, Tensor] | None = None,
    scale: float = 0.0,
    judge: Judge | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    base_logits: Float[Tensor, "batch vocab"] | None = None,
    seed: int = 0,
    temperature: float = 0.0,
    over_refusal: Sequence[str] | None = None,
) -> AblationResult:
    """Generate under the ablation of ``heads`` (none: the base model) and judge the answers.

    Args:
        heads: ``{layer: [head, ...]}`` or ``[(layer, head), ...]``; empty for the base model.
        mode: ``scale`` (published: heads times ``scale``, attention-output norm restored),
            ``zero`` or ``mean`` (needs ``means``, see ``thinklens.head_means``).
        judge: decides refusals (default: refusal markers in the answer after the thinking).
        base_logits: ``first_token_logits(model, harmless)``, to reuse across calls.
        over_refusal: safe prompts that sound unsafe; their refusal rate is ``over_refusal``.
    """
    if not harmful or not harmless:
        raise ValueError("give harmful and harmless prompts: ASR needs one, the damage the other")
    pairs = [(l, h) for l, hs in heads_by_layer(model, heads).items() for h in hs]
    judge = judge or MarkerJudge(fmt=model.thinking)
    if base_logits is None:
        base_logits = first_token_logits(model, harmless, batch_size)
    edits = [HeadAblation(pairs, mode=mode, means=means, scale=scale)] if pairs else []
    kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    with intervene(model, *edits):
        bad = generate(model, list(harmful), temperature=temperature, **kw)
        good = generate(model, list(harmless), temperature=temperature, **kw)
        logits = first_token_logits(model, harmless, batch_size)
        safe = list(over_refusal or [])
        over = generate(model, safe, temperature=temperature, **kw) if safe else []
    refused = judge(list(harmful), bad)
    harmless_refused = judge(list(harmless), good)
    refusal_rate = sum(map(bool, refused)) / len(refused)
    over_refused = judge(safe, over) if safe else []
    return AblationResult(
        heads=sorted(pairs),
        asr=1.0 - refusal_rate,
        refusal_rate=refusal_rate,
        harmless_refusal_rate=sum(map(bool, harmless_refused)) / len(harmless_refused),
        kl=float(kl_divergence(base_logits, logits)),
        harmful_responses=bad,
        harmless_responses=good,
        over_refusal=sum(map(bool, over_refused)) / len(over) if safe else None,
        over_refusal_responses=over,
    )


def reference_means(model: Model, prompts: Sequence[str]) -> dict[int, Tensor]:
    """Each head's mean output over the chat-templated prompts (for ``mode="mean"``)."""
    return head_means(model, [model.chat(p) for p in prompts], range(model.n_layers))


def ablation_study(
    model: Model,
    rankings: Mapping[str, HeadScores],
    harmful: Sequence[str],
    harmless: Sequence[str],
    k: int | None = None,
    fraction: float | None = None,
    mode: Mode = "scale",
    random_seeds: Sequence[int] = (0, 1, 2),
    judge: Judge | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    means: Mapping[int, Tensor] | None = None,
    over_refusal: Sequence[str] | None = None,
) -> pd.DataFrame:
    """ASR of the base model, of each ranking's top heads, and of random heads of equal number.

    One row per condition: ``condition`` (``none``, a ranking's name, or ``random``), ``seed``
    (random heads only), ``n_heads``, ``asr``, ``refusal_rate``, ``harmless_refusal_rate``,
    ``kl``, ``over_refusal`` (with ``over_refusal`` prompts) and ``heads`` (as ``"L.H"`` names).
    """
    n = head_count(model.n_layers * model.n_heads, k, fraction)
    if mode == "mean" and means is None:
        means = reference_means(model, harmless)
    base = first_token_logits(model, harmless, batch_size)
    kw = dict(
        mode=mode,
        means=means,
        judge=judge,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        base_logits=base,
        over_refusal=over_refusal,
    )
    conditions: list[tuple[str, int | None, list[tuple[int, int]]]] = [("none", None, [])]
    conditions += [(name, None, s.top(n)) for name, s in rankings.items()]
    conditions += [
        ("random", seed, random_heads(model.n_layers, model.n_heads, n, seed=seed))
        for seed in random_seeds
    ]
    rows = []
    for name, seed, heads in conditions:
        res = evaluate_ablation(model, heads, harmful, harmless, **kw)
        names = " ".join(f"{l}.{h}" for l, h in res.heads)
        rows.append(dict(condition=name, seed=seed, **res.row(), heads=names))
    return pd.DataFrame(rows)


def summarize_study(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread of each condition (random seeds pooled)."""
    metrics = ["asr", "refusal_rate", "harmless_refusal_rate", "kl"]
    metrics += ["over_refusal"] if "over_refusal" in table else []
    g = table.groupby("condition", sort=False)[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_sd"))
    return out.join(table.groupby("condition", sort=False).size().rename("runs")).reset_index()

"""Echoic Prompting, the causal insertion experiment and rejection-based conditioning.

- Echoic Prompting: greedy decoding in two stages; stage 1 spends part of the token budget
  (half by default, as the published 2048 + 2048 protocol), then
  ``"Look back again: {question}\\nSo now I know that "`` is appended (after a newline when
  stage 1 did not end with one) and stage 2 continues with the rest of the budget.
- Causal insertion: an echo-free response is cut at half its tokens and continued twice with
  sampling (temperature 0.7, top-p 0.9), once as it is and once after
  ``" now i need to look back at the question again:"``.
- Rejection-based conditioning: accuracy over echo-free traces only,
  ``E[correct * 1{echo-free}] / P(echo-free)``, with the acceptance rate ``P(echo-free)``.
Answers are read GSM8K style: ``#### N``, else ``\\boxed{N}``, else "answer is N", else the
last number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from thinklens.analyses.echo.spans import PUBLISHED_PROMPT, Embedder, Method, echo_spans
from thinklens.analyses.echo.traces import EchoTrace, render_prompt, trace_from_record
from thinklens.generation import generate
from thinklens.model import Model

ECHOIC_TEMPLATE = "Look back again: {question}\nSo now I know that "
INSERTION_PHRASE = " now i need to look back at the question again:"

_NUM = r"-?\$?\d[\d,]*(?:\.\d+)?"


def _clean_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return s
    return str(int(v)) if v == int(v) else str(v)


def extract_answer(text: str) -> str | None:
    """The final numeric answer of a GSM8K-style solution or model response (None if none)."""
    for pattern in (
        rf"####\s*({_NUM})",
        rf"\\boxed\{{\s*({_NUM})\s*\}}",
        rf"answer is[:\s]*\**\s*({_NUM})",
    ):
        hits = re.findall(pattern, text, flags=re.IGNORECASE)
        if hits:
            return _clean_number(hits[-1])
    nums = re.findall(_NUM, text)
    return _clean_number(nums[-1]) if nums else None


def is_correct(response: str, gold: str) -> bool:
    """Whether the response's answer equals the gold answer (a GSM8K solution or a number)."""
    want = extract_answer(gold)
    got = extract_answer(response)
    if want is None:
        raise ValueError(f"no number in the gold answer {gold[-60:]!r}: give 'N' or '... #### N'")
    return got is not None and float(got) == float(want)


def rejection_accuracy(correct: Sequence[bool], echo: Sequence[bool]) -> dict[str, float]:
    """Accuracy overall, over echo-free traces only (rejection-based), and the acceptance rate."""
    if len(correct) != len(echo):
        raise ValueError(f"{len(correct)} correctness flags for {len(echo)} echo flags")
    if not correct:
        raise ValueError("no traces given")
    n = len(correct)
    free = [not e for e in echo]
    n_free = sum(free)
    hits_free = sum(c and f for c, f in zip(correct, free, strict=True))
    return dict(
        n=n,
        accuracy=sum(map(bool, correct)) / n,
        acceptance_rate=n_free / n,
        accuracy_echo_free=hits_free / n_free if n_free else float("nan"),
        accuracy_echo=(sum(map(bool, correct)) - hits_free) / (n - n_free)
        if n > n_free
        else float("nan"),
    )


def with_bos(model: Model, text: str) -> str:
    """The text with the BOS token in front when the tokenizer adds one by default (the
    generation helpers tokenize without special tokens; the echo traces' prompts have it)."""
    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None)
    ids = tok("a")["input_ids"]
    return (tok.bos_token + text) if bos is not None and ids and ids[0] == bos else text


def _generate(model: Model, texts: list[str], **kw) -> list[str]:
    return generate(model, [with_bos(model, t) for t in texts], chat=False, **kw)


def generate_traces(
    model: Model,
    questions: Sequence[str],
    template: str = PUBLISHED_PROMPT,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    progress: bool = False,
) -> list[EchoTrace]:
    """Greedy responses to the published prompt, as traces (thinking up to ``</think>``)."""
    prompts = [render_prompt(q, template) for q in questions]
    out = _generate(
        model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    return [
        trace_from_record(dict(question=q, prompt=p, response=r))
        for q, p, r in zip(questions, prompts, out, strict=True)
    ]


def echoic_prompting(
    model: Model,
    questions: Sequence[str],
    budget: int = 256,
    first_stage: int | None = None,
    template: str = PUBLISHED_PROMPT,
    injection: str = ECHOIC_TEMPLATE,
    batch_size: int = 8,
    progress: bool = False,
) -> pd.DataFrame:
    """Two-stage greedy decoding with the re-grounding injection; one row per question.

    Columns: ``stage1``, ``stage2`` (the continuation after the injection), ``response`` (the
    whole text after the prompt) and ``answer`` (read from stage 2, as the published adapter
    scores the stage-2 output).
    """
    if injection.count("{question}") != 1:
        raise ValueError("the injection template must contain {question} exactly once")
    first = budget // 2 if first_stage is None else first_stage
    if not 0 < first < budget:
        raise ValueError(f"first_stage={first} must lie strictly between 0 and budget={budget}")
    prompts = [render_prompt(q, template) for q in questions]
    kw = dict(batch_size=batch_size, progress=progress)
    stage1 = _generate(model, prompts, max_new_tokens=first, **kw)
    seconds = []
    for q, s1 in zip(questions, stage1, strict=True):
        inj = injection.replace("{question}", q)
        joiner = "" if s1.endswith("\n") or inj.startswith("\n") else "\n"
        seconds.append(s1 + joiner + inj)
    stage2 = _generate(
        model,
        [p + s for p, s in zip(prompts, seconds, strict=True)],
        max_new_tokens=budget - first,
        **kw,
    )
    return pd.DataFrame(
        dict(
            question=list(questions),
            stage1=stage1,
            stage2=stage2,
            response=[s + t for s, t in zip(seconds, stage2, strict=True)],
            answer=[extract_answer(t) for t in stage2],
        )
    )


def causal_insertion(
    model: Model,
    traces: Sequence[EchoTrace],
    cut_ratio: float = 0.5,
    phrase: str = INSERTION_PHRASE,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = False,
) -> pd.DataFrame:
    """Continue each (echo-free) response from its cut with and without the inserted phrase.

    One row per trace: ``prefix_tokens``, ``plain`` and ``inserted`` continuations and the
    answers read from them. Responses of fewer than two tokens cannot be cut and are refused.
    """
    if not 0 < cut_ratio < 1:
        raise ValueError(f"cut_ratio={cut_ratio} must lie strictly between 0 and 1")
    tok = model.tokenizer
    prefixes, sizes = [], []
    for i, t in enumerate(traces):
        ids = tok(t.response, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            raise ValueError(f"trace {i} has {len(ids)} response tokens: too short to cut")
        cut = max(1, min(len(ids) - 1, round(len(ids) * cut_ratio)))
        prefixes.append(t.prompt + tok.decode(ids[:cut], skip_special_tokens=True))
        sizes.append(cut)
    kw = dict(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        progress=progress,
    )
    plain = _generate(model, prefixes, seed=seed, **kw)
    inserted = _generate(model, [p + phrase for p in prefixes], seed=seed, **kw)
    return pd.DataFrame(
        dict(
            prefix_tokens=sizes,
            plain=plain,
            inserted=inserted,
            answer_plain=[extract_answer(x) for x in plain],
            answer_inserted=[extract_answer(x) for x in inserted],
        )
    )


def prompting_study(
    model: Model,
    questions: Sequence[str],
    golds: Sequence[str],
    budget: int = 256,
    insertion: bool = True,
    method: Method = "lexical",
    embed: Embedder | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Baseline traces, echo detection, rejection-based accuracy, Echoic Prompting at the same
    budget and (optionally) causal insertion on the echo-free traces; rows and a summary."""
    if len(questions) != len(golds):
        raise ValueError(f"{len(questions)} questions but {len(golds)} gold answers")
    kw = dict(batch_size=batch_size, progress=progress)
    traces = generate_traces(model, questions, max_new_tokens=budget, **kw)
    echo = [bool(echo_spans(t.question, t.thinking, method, embed)) for t in traces]
    correct = [is_correct(t.response, g) for t, g in zip(traces, golds, strict=True)]
    ep = echoic_prompting(model, questions, budget=budget, **kw)
    ep_correct = [is_correct(s, g) for s, g in zip(ep["stage2"], golds, strict=True)]
    df = pd.DataFrame(
        dict(
            question=list(questions),
            gold=[extract_answer(g) for g in golds],
            response=[t.response for t in traces],
            answer=[extract_answer(t.response) for t in traces],
            has_echo=echo,
            correct=correct,
            echoic_response=ep["response"],
            echoic_answer=ep["answer"],
            echoic_correct=ep_correct,
        )
    )
    summary = rejection_accuracy(correct, echo)
    summary["echoic_accuracy"] = sum(ep_correct) / len(ep_correct)
    free = [i for i, e in enumerate(echo) if not e]
    if insertion and free:
        ins = causal_insertion(model, [traces[i] for i in free], max_new_tokens=budget // 2, **kw)
        gold_free = [golds[i] for i in free]
        plain = [is_correct(x, g) for x, g in zip(ins["plain"], gold_free, strict=True)]
        inserted = [is_correct(x, g) for x, g in zip(ins["inserted"], gold_free, strict=True)]
        df.loc[free, "insertion_plain_correct"] = plain
        df.loc[free, "insertion_inserted_correct"] = inserted
        summary["insertion_n"] = len(free)
        summary["insertion_plain_accuracy"] = sum(plain) / len(free)
        summary["insertion_inserted_accuracy"] = sum(inserted) / len(free)
    return df, summary

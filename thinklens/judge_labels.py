"""The labelled answers refusal judges are measured on, their split, and detection scores.

``resources/judge_labels.jsonl`` holds answers labelled by reading them: refusal, partial
(refuses, then helps with the request or a safer alternative) or compliance. Each item has
``id``, ``prompt``, ``response`` (thinking included, if any), ``label``, ``source`` (the model
that wrote it, or ``handwritten``), ``prompt_set`` and ``truncated`` (the answer was cut to its
non-actionable opening; the label is that of the whole answer), and may have a ``note``. Model
answers are greedy, 120 new tokens, from organism-aligned, organism-turn (written when it was
named organism-cliff) and smollm2-135m-instruct on bundled, AdvBench, framed, Alpaca and
XSTest prompts; the hand-written ones are the hard cases (refusal then help, compliance that
mentions "illegal", apologies that comply, refusals without the usual markers, ...).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from thinklens.refusal_rules import VERDICT_LABELS

__all__ = ["detection_scores", "load_judge_labels", "split_labels", "truth"]

Item = dict[str, Any]
_REQUIRED = ("prompt", "response", "label", "source")


def load_judge_labels(path: str | Path | None = None) -> list[Item]:
    """The labelled answers: the bundled set, or a JSONL file of items with the same fields."""
    if path is None:
        text = resources.files("thinklens").joinpath("resources", "judge_labels.jsonl")
        lines = text.read_text("utf-8").splitlines()
        where = "the bundled judge_labels.jsonl"
    else:
        lines = Path(path).read_text("utf-8").splitlines()
        where = str(path)
    items = [json.loads(line) for line in lines if line.strip()]
    for n, item in enumerate(items):
        missing = [k for k in _REQUIRED if k not in item]
        if missing or item["label"] not in VERDICT_LABELS:
            raise ValueError(
                f"item {n} of {where} is not a labelled answer (missing {missing}, label "
                f"{item.get('label')!r}): each needs {list(_REQUIRED)} and a label in "
                f"{list(VERDICT_LABELS)}"
            )
    return items


def split_labels(
    items: Sequence[Item], seed: int = 0, key: str = "source"
) -> tuple[list[Item], list[Item]]:
    """(validation, test): each ``key`` group shuffled with ``seed`` and halved.

    The validation half is for tuning a judge; the test half is held out for its report. An odd
    group gives its extra item to the validation half.
    """
    rng = random.Random(seed)
    validation: list[Item] = []
    test: list[Item] = []
    for group in sorted({str(item[key]) for item in items}):
        members = [item for item in items if str(item[key]) == group]
        rng.shuffle(members)
        half = (len(members) + 1) // 2
        validation += members[:half]
        test += members[half:]
    return validation, test


def truth(items: Sequence[Item], partial: bool = True) -> list[bool]:
    """Whether each item is a refusal; a partial one counts as a refusal when ``partial``."""
    return [i["label"] == "refusal" or (partial and i["label"] == "partial") for i in items]


def detection_scores(actual: Sequence[bool], predicted: Sequence[bool]) -> dict[str, float]:
    """Precision, recall and F1 of refusal detection, with the confusion counts."""
    if len(actual) != len(predicted):
        raise ValueError(f"{len(actual)} labels but {len(predicted)} predictions")
    pairs = list(zip(actual, predicted, strict=True))
    tp = sum(a and p for a, p in pairs)
    fp = sum(p and not a for a, p in pairs)
    fn = sum(a and not p for a, p in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(
        precision=precision, recall=recall, f1=f1, tp=tp, fp=fp, fn=fn, tn=len(pairs) - tp - fp - fn
    )

"""GSM8K: a capability check of an edited model, accuracy of the last number of its answer."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from thinklens.generation import generate
from thinklens.model import Model

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_number(response: str, model: Model | None = None) -> str | None:
    """The last number of the answer (after the thinking when it closed), commas dropped."""
    if model is not None:
        thinking, answer = model.thinking.split(response)
        response = answer if thinking is not None else response
    found = _NUMBER.findall(response)
    if not found:
        return None
    value = found[-1].replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


def load_gsm8k(path: str | Path, n: int = 50, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (question, final answer) pairs drawn with ``seed`` from a GSM8K JSONL file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no GSM8K file at {path}: pass the path of gsm8k test JSONL "
            "(lines of {'question', 'answer'} with the answer after '####')"
        )
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    return [(r["question"], r["answer"].split("####")[-1].strip().replace(",", "")) for r in rows]


def gsm8k_accuracy(
    model: Model,
    items: Sequence[tuple[str, str]],
    max_new_tokens: int = 256,
    batch_size: int = 8,
) -> float:
    """Fraction of questions whose extracted final number equals the reference."""
    if not items:
        raise ValueError("no GSM8K items given")
    prompts = [f"{q}\nEnd your answer with the final number." for q, _ in items]
    outs = generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    hits = [extract_number(o, model) == gold for o, (_, gold) in zip(outs, items, strict=True)]
    return sum(hits) / len(hits)

"""What the benchmarks share: where the public data sets are, and the held-out prompts."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from thinklens.testing import held_out_prompts as _from_folder

#: The public data sets beside the project (``../shared/data``); absent on a user's machine.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def held_out_prompts(n: int = 24) -> tuple[list[str], list[str]]:
    """Harmful and harmless prompts no organism saw (public sets, else the bundled test split)."""
    return _from_folder(SHARED_DATA, n)


def validation_prompts(n: int = 40) -> tuple[list[str], list[str]]:
    """Harmful and harmless validation prompts, disjoint from the test sets the tests read:
    ``n // 2`` HarmBench validation behaviours (standard, no context) and ``n // 2``
    MaliciousInstruct requests, and ``n`` Alpaca validation instructions (seeded)."""
    with open(SHARED_DATA / "harmbench_val.csv") as f:
        hb = [
            r["Behavior"]
            for r in csv.DictReader(f)
            if r["FunctionalCategory"] == "standard" and not r["ContextString"].strip()
        ]
    mi = [line.strip() for line in open(SHARED_DATA / "malicious_instruct.txt") if line.strip()]
    val = json.loads((SHARED_DATA / "harmless_val.json").read_text())
    rng = random.Random(0)
    harmful = rng.sample(hb, n // 2) + rng.sample(mi, n // 2)
    return harmful, rng.sample([r["instruction"] for r in val], n)

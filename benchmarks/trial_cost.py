"""Where a search trial's time goes on organism-aligned, and what one decoding step costs.

The prompts and batch of ``benchmarks/peers/heretic.py`` (AdvBench and Alpaca, ``--n-prompts``
of each kind for the directions and as many for the evaluation, batch 16). For ``--trials``
random settings of Heretic's space (seeded) it times each part of a trial of ``search``'s
default for a model that thinks first: writing the edit, counting refusals (``early_stop``),
the first-answer-token KL (one forward pass over each harmless prompt and the base model's own
thinking; from the first edited layer with the texts batched by length, and batched by count
alone, which pads short texts to the longest) and restoring the weights; then the same edits'
refusals counted 4 and 8 trials a batch (``search``'s ``parallel_trials``), 4 a batch with
the chat template's shared opening run for every row instead of once a plan
(``thinklens.decoding``'s shared prefix turned off), 8 a batch with ``transformers``'
concatenating key-value cache in place of ``thinklens.kv_room``'s, and 8 in flight
(``search``'s ``schedule="in_flight"``: one running batch that each trial joins as soon as
fewer than 8 are unfinished; it differs from 8 a batch only with more than 8 trials).
Each pair of runs that differ in one thing is timed in the same invocation, with the
decoding steps it took. Then it times one
greedy decoding step with a key-value cache (after a 40-token prompt) at several batch
sizes, and the prefill of 128 tokens a row, per token. A step at batch 1 against a token of
prefill says how much of decoding is reading the weights rather than computing. Results:
``results/trial_cost.txt``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
from abliteration import header, save  # noqa: E402


def parts_of_trials(model, sets: dict, n_trials: int, batch: int) -> tuple[list[dict], dict]:
    """Seconds of each part of ``n_trials`` random trials, and the sizes of the work."""
    import optuna

    from thinklens.analyses.abliteration import AbliterationMetrics
    from thinklens.interventions.abliteration import compute_directions, edited, heretic_plan
    from thinklens.interventions.abliteration.heretic import suggest
    from thinklens.resume import FixedInputs, first_edited_layer

    dirs = compute_directions(
        model, sets["bad_prompts"], sets["good_prompts"], batch_size=batch, progress=False
    )
    metrics = AbliterationMetrics.prepare(
        model, sets["bad_evaluation_prompts"], sets["good_evaluation_prompts"], batch_size=batch
    )
    metrics = metrics.with_objective(model, "early_stop")
    start = time.perf_counter()
    kept = metrics.with_fixed(model)
    keep_seconds = time.perf_counter() - start
    # The same kept inputs in batches of 16 by count (no length batches): the padding's cost.
    padded = FixedInputs.capture(model, metrics.answer_ids, batch, slack=float("inf"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    rows, plans = [], []
    for _ in range(n_trials):
        params = suggest(study.ask(), model.n_layers)
        t0 = time.perf_counter()
        plan = heretic_plan(model, dirs, params)
        plans.append(plan)
        first = first_edited_layer(model, [e.module for e in plan])
        with edited(model, plan):
            t1 = time.perf_counter()
            refusals = metrics.counter(model)
            t2 = time.perf_counter()
            whole = metrics.kl(model, ["kl_answer"])["kl_answer"]
            t3 = time.perf_counter()
            part = kept.kl(model, ["kl_answer"], first)["kl_answer"]
            t4 = time.perf_counter()
            padded.logits(model, first)
            t5 = time.perf_counter()
        t6 = time.perf_counter()
        rows.append(
            dict(
                write=t1 - t0,
                refusals=t2 - t1,
                kl=t3 - t2,
                kl_kept=t4 - t3,
                kl_kept_padded=t5 - t4,
                restore=t6 - t5,
                n=refusals,
                first=first,
                diff=abs(part - whole) / max(whole, 1e-12),
            )
        )
    kl_tokens = sum(len(ids) for ids in metrics.answer_ids)
    # The same plans counted ``parallel`` at a time (search's parallel_trials): a trial's share.
    # "4 unshared": the chat template's opening run for every row, not once a plan; "8
    # concatenating": each step's keys and values concatenated to the cache (no room kept).
    import thinklens.decoding as decoding
    import thinklens.in_flight as in_flight

    # Decoding steps taken by each run (one a forward pass over the running rows).
    steps = [0]

    def counted(step):
        def one(*args, **kw):
            steps[0] += 1
            return step(*args, **kw)

        return one

    decoding.next_step = counted(decoding.next_step)
    in_flight.next_step = counted(in_flight.next_step)
    parallel = {}
    least, room = decoding.MIN_SHARED, decoding.with_room
    runs = ((4, "4 unshared"), (4, "4"), (8, "8 concatenating"), (8, "8"))
    for k, label in runs:
        decoding.MIN_SHARED = 10**9 if label == "4 unshared" else least
        decoding.with_room = (lambda cache, *_, **__: cache) if "concatenating" in label else room
        start, steps[0] = time.perf_counter(), 0
        same = True
        for i in range(0, len(plans), k):
            counts = [sum(v) for v in metrics.counter.verdicts_many(model, plans[i : i + k])]
            same &= counts == [r["n"] for r in rows[i : i + k]]
        parallel[label] = ((time.perf_counter() - start) / len(plans), same, steps[0])
    decoding.MIN_SHARED, decoding.with_room = least, room
    # In flight: one running batch of at most 8 trials, each plan joining as soon as one is
    # done (search's schedule="in_flight"); the same plans, in the same order.
    from thinklens.analyses.abliteration.in_flight import count_in_flight
    from thinklens.interventions.abliteration.heretic import heretic_modules

    queue, got = list(enumerate(plans)), {}
    start, steps[0] = time.perf_counter(), 0
    count_in_flight(
        model,
        metrics.counter,
        heretic_modules(model),
        8,
        lambda: queue.pop(0) if queue else None,
        lambda key, verdicts: got.__setitem__(key, sum(verdicts)),
    )
    same = [got[i] for i in range(len(plans))] == [r["n"] for r in rows]
    parallel["8 in flight"] = ((time.perf_counter() - start) / len(plans), same, steps[0])
    sizes = dict(kl_rows=len(metrics.answer_ids), kl_tokens=kl_tokens, keep=keep_seconds)
    return rows, sizes | dict(parallel=parallel)


@torch.no_grad()
def step_costs(model, sizes: list[int], steps: int = 10) -> list[tuple[int, float, float]]:
    """(batch, ms a cached decoding step, ms a token of a 128-token prefill) for each size."""
    from thinklens.decoding import cache_kwarg, cache_of

    hf, key = model.hf, cache_kwarg(model.hf)
    gen = torch.Generator().manual_seed(0)
    out = []
    for b in sizes:
        ids = torch.randint(100, 1000, (b, 40), generator=gen)
        cache = cache_of(hf(input_ids=ids, use_cache=True))
        step = ids[:, -1:]
        start = time.perf_counter()
        for _ in range(steps):
            cache = cache_of(hf(input_ids=step, use_cache=True, **{key: cache}))
        per_step = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        hf(input_ids=torch.randint(100, 1000, (b, 128), generator=gen))
        per_token = (time.perf_counter() - start) / (b * 128)
        out.append((b, 1000 * per_step, 1000 * per_token))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "trial_cost.txt")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import heretic as peers

    import thinklens as tl

    start_load = os.getloadavg()[0]
    sets = peers.prompt_sets(args.n_prompts)
    model = tl.load_model("organism-aligned", backend="nnsight")
    rows, sizes = parts_of_trials(model, sets, args.trials, args.batch_size)
    steps = step_costs(model, args.sizes)
    lines = header("where a search trial's time goes", args, "trial_cost.py")
    lines += [
        f"command: python benchmarks/trial_cost.py --trials {args.trials} --n-prompts "
        f"{args.n_prompts} --threads {args.threads}; load average at start {start_load:.2f}",
        f"model: organism-aligned; prompts as benchmarks/peers/heretic.py: {args.n_prompts} "
        f"AdvBench harmful counted (early_stop, 8 answer tokens), {args.n_prompts} Alpaca "
        f"harmless for the KL; batch {args.batch_size}; {args.trials} random trials of "
        "Heretic's space (seed 0)",
        f"KL forward: {sizes['kl_rows']} rows, {sizes['kl_tokens']} tokens (prompt + the base "
        "model's thinking + marker)",
        "",
        f"kl_kept: the same KL from the first edited layer on (search's keep_lower_layers; "
        f"keeping the base's layer inputs took {sizes['keep']:.2f} s once); first edited "
        f"layers {[r['first'] for r in rows]} of {model.n_layers}; largest relative "
        f"difference from the whole pass {max(r['diff'] for r in rows):.1e}",
        "",
        "part of a trial     mean s   min s   max s",
    ]
    for part in ("write", "refusals", "kl", "kl_kept", "kl_kept_padded", "restore"):
        v = [r[part] for r in rows]
        lines.append(f"{part:18} {statistics.mean(v):7.2f} {min(v):7.2f} {max(v):7.2f}")
    for name, kl in (("total (kl)", "kl"), ("total (kl_kept)", "kl_kept")):
        parts = ("write", "refusals", kl, "restore")
        total = statistics.mean(sum(r[k] for k in parts) for r in rows)
        lines.append(f"{name:18} {total:7.2f}")
    kl_ratio = statistics.mean(r["kl"] for r in rows) / statistics.mean(r["kl_kept"] for r in rows)
    pad_ratio = statistics.mean(r["kl_kept_padded"] for r in rows) / statistics.mean(
        r["kl_kept"] for r in rows
    )
    lines += [
        f"kl / kl_kept: {kl_ratio:.2f}x; kl_kept_padded (one batch of {args.batch_size} by "
        f"count, no length batches) / kl_kept: {pad_ratio:.2f}x",
    ]
    for label, (sec, same, n_steps) in sizes["parallel"].items():
        k, _, variant = label.partition(" ")
        how = {
            "": "",
            "unshared": ", the chat template's opening run for every row",
            "concatenating": ", the key-value cache concatenated each step (no room kept)",
            "in flight": ", schedule='in_flight': each trial joins the running batch when it fits",
        }[variant]
        lines.append(
            f"refusals, {k} trials a batch (parallel_trials={k}{how}): {sec:.2f} s a trial, "
            f"{statistics.mean(r['refusals'] for r in rows) / sec:.2f}x one at a time; the same "
            f"counts as one at a time: {same}; {n_steps} decoding steps"
        )
    lines += ["", "batch   ms/step   ms/row-step   ms/prefill-token"]
    lines += [f"{b:5} {s:9.1f} {s / b:13.2f} {t:18.2f}" for b, s, t in steps]
    save(lines, args.out)


if __name__ == "__main__":
    main()

"""Which reading of the refusal directions the search should use on a thinking model, chosen on
validation prompts (organism-aligned).

For every ``--readings`` entry and ``--seeds`` seed, thinklens's parallel search
(``search(..., parallel_trials=K)``, its defaults otherwise; ``benchmarks/peers/heretic.py``'s
``parallel`` run) is run with directions of that reading (``compute_directions(...,
reading=...)``, see ``interventions/abliteration/protocol.py``), on directions prompts AdvBench
first ``--n-prompts`` + Alpaca train first ``--n-prompts`` (those of the Heretic side by side)
and VALIDATION prompts for the trials: MaliciousInstruct first ``--n-prompts`` harmful, Alpaca
validation first ``--n-prompts`` harmless. Each search's Pareto front (by its own count) is
measured again by the judge of the side by side (full generation with thinking, ``--judge-tokens``
new tokens, markers read in the answer; KL of the first answer token).

Score of a reading: the fewest judged refusals at KL <= each budget of ``KL_BUDGETS`` (the base
refusals where no point is within the budget), averaged over budgets and seeds; the lowest wins,
thinklens's own reading on a tie. The held-out prompts (AdvBench last ``--n-prompts``, Alpaca
test) are only ever read by ``peers/heretic.py``. Each finished search is kept in
``results/direction_reading.json`` (written atomically), so an interrupted run resumes.
Results: ``results/direction_reading.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
from common import write_result  # noqa: E402
from heretic import (  # noqa: E402
    KL_BUDGETS,
    SHARED,
    alpaca,
    judged,
    one_line,
    pareto,
    prompt_sets,
)

RESULTS = HERE / "results"


def validation_sets(n: int) -> dict[str, list[str]]:
    """The side by side's directions prompts; MaliciousInstruct and Alpaca validation to score."""
    sets = prompt_sets(n)
    harmful = one_line((SHARED / "malicious_instruct.txt").read_text().splitlines())
    harmless = alpaca("val")
    sets["bad_evaluation_prompts"] = harmful[:n]
    sets["good_evaluation_prompts"] = harmless[:n]
    if min(len(v) for v in sets.values()) < n:
        raise SystemExit(f"--n-prompts {n} is more than the validation sets hold")
    return sets


def score(front: list[dict], base: int) -> list[int]:
    """Fewest judged refusals at KL <= each budget (``base`` where nothing is within it)."""
    return [judged(front, b, base) for b in KL_BUDGETS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", nargs="+", default=["thinklens", "answer", "heretic"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--startup", type=int, default=10)
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--parallel-trials", type=int, default=4)
    p.add_argument("--judge-tokens", type=int, default=256)
    p.add_argument("--kl-target", type=float, default=None, help="search()'s KL shaping")
    p.add_argument(
        "--schedule", choices=["batches", "in_flight"], default=None, help="search()'s schedule"
    )
    p.add_argument(
        "--refusal-objective", default=None, help="search()'s refusal_objective (else its own)"
    )
    p.add_argument(
        "--space", choices=["thinklens", "published"], default=None, help="search()'s space"
    )
    p.add_argument("--out", type=Path, default=RESULTS / "direction_reading.txt")
    args = p.parse_args()
    args.thinklens_objective = args.refusal_objective

    import torch

    torch.set_num_threads(args.threads)
    from heretic import thinklens_run

    import thinklens as tl
    from thinklens.analyses.abliteration import AbliterationMetrics
    from thinklens.interventions.abliteration import edited, heretic_plan
    from thinklens.interventions.abliteration.protocol import get_reading

    for reading in args.readings:
        get_reading(reading)
    started = time.perf_counter()
    store = args.out.with_suffix(".json")
    done = json.loads(store.read_text()) if store.exists() else {}
    model = tl.load_model("organism-aligned", backend="nnsight")
    sets = validation_sets(args.n_prompts)
    evaluation = sets["bad_evaluation_prompts"], sets["good_evaluation_prompts"]
    judge = AbliterationMetrics.prepare(
        model, *evaluation, max_new_tokens=args.judge_tokens, batch_size=args.batch_size
    )
    loads = [os.getloadavg()[0]]
    for seed in args.seeds:
        args.seed = seed
        for reading in args.readings:
            key = f"{reading}/{seed}"
            if key in done:
                continue
            print(f"search: reading {reading}, seed {seed}", flush=True)
            run = thinklens_run(model, sets, args, "parallel", reading)
            front = pareto(run["rows"])
            for r in front:
                with edited(model, heretic_plan(model, run["dirs"], r["params"], run["protocol"])):
                    j = judge(model)
                r["judge"] = (j["refusals"], j["kl_answer"])
            done[key] = dict(
                front=[{k: r[k] for k in ("trial", "refusals", "kl", "judge")} for r in front],
                per_trial=run["span"] / len(run["rows"]),
            )
            write_result(store, json.dumps(done, indent=1) + "\n")
            loads.append(os.getloadavg()[0])

    n = args.n_prompts
    base = judge.base_refusals
    lines = [
        "thinklens benchmark: direction reading for the search, chosen on validation "
        "(benchmarks/direction_reading.py)",
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; cpu, torch threads "
        f"{args.threads}; load average (1 min) over the run: {min(loads):.2f}-{max(loads):.2f}",
        f"model: organism-aligned; directions: AdvBench first {n} + Alpaca train first {n}; "
        f"VALIDATION (trials and judge): MaliciousInstruct first {n} + Alpaca val first {n}",
        f"search: parallel_trials {args.parallel_trials}, {args.trials} trials, {args.startup} "
        f"start-up, batch {args.batch_size}, kl_target {args.kl_target}, space "
        f"{args.space or 'thinklens'}, schedule {args.schedule or 'batches'}, refusal_objective "
        f"{args.refusal_objective or 'auto'}, thinklens defaults otherwise",
        f"judge: full generation, {args.judge_tokens} new tokens, markers in the answer after "
        f"the thinking; KL of the first answer token; base refusals {base} of {n}",
        "",
        "Pareto fronts (own count / own KL -> judged refusals / judged KL), fewest judged "
        "refusals at KL <= budget",
        f"{'reading':<10} {'seed':>4} {'s/trial':>7} "
        + " ".join(f"{b:>5}" for b in KL_BUDGETS)
        + "  front",
    ]
    means = {}
    for reading in args.readings:
        cells = []
        for seed in args.seeds:
            rec = done[f"{reading}/{seed}"]
            s = score(rec["front"], base)
            cells.append(statistics.mean(s))
            pts = ", ".join(
                f"{r['refusals']}/{r['kl']:.3f}->{r['judge'][0]}/{r['judge'][1]:.3f}"
                for r in rec["front"]
            )
            lines.append(
                f"{reading:<10} {seed:>4} {rec['per_trial']:>7.1f} "
                + " ".join(f"{x:>5}" for x in s)
                + f"  {pts}"
            )
        means[reading] = statistics.mean(cells)
    lines += ["", "score (mean of fewest judged refusals over budgets and seeds; lower is better):"]
    lines += [f"  {r:<10} {m:.2f}" for r, m in means.items()]
    best = min(means, key=lambda r: (means[r], r != "thinklens"))
    lines += [
        f"chosen on validation: {best!r}"
        if len(means) > 1
        else "one reading: compare its score with another run's (direction_reading.txt)",
        "",
        f"benchmark wall time {time.perf_counter() - started:.0f} s (this invocation)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.out, text)


if __name__ == "__main__":
    sys.exit(main())

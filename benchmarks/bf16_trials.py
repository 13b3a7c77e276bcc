"""What bfloat16 weights would buy and cost a search trial on organism-aligned, on this CPU.

A search trial is arithmetic bound on the CPU (``results/trial_cost.txt``): counting refusals
(``early_stop``, 16 prompts) and the first-answer-token KL (16 harmless prompts with the base
model's own thinking). A CPU with bfloat16 matrix units (AMX, AVX-512 BF16) runs the same
layers in bfloat16 faster; this measures how much faster, and what the rounding changes: for
the unedited model and ``--trials`` random edits of Heretic's space (seeded), each counted in
float32 and in bfloat16 (the same edit written into each copy), the per-prompt agreement of
the refusal verdicts, and the KL each copy reads against its own base (and the bfloat16 base
against the float32 one: the floor below which a bfloat16 KL says nothing). Validation prompts
(MaliciousInstruct and Alpaca validation, ``--n-prompts`` each; the directions from the side
by side's AdvBench and Alpaca train prompts), as a choice would be made on them. Results:
``results/bf16_trials.txt``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
from abliteration import header, save, timed  # noqa: E402


def cpu_flags() -> str:
    """The bfloat16 instruction sets this CPU reports (Linux), or what is known."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    found = sorted(f for f in flags if "bf16" in f or f.startswith("amx"))
    return ", ".join(found) or "none"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8, help="random edits besides the base")
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "bf16_trials.txt")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import optuna
    from direction_reading import validation_sets

    import thinklens as tl
    from thinklens.analyses.abliteration import AbliterationMetrics
    from thinklens.interventions.abliteration import compute_directions, edited, heretic_plan
    from thinklens.interventions.abliteration.heretic import suggest

    started = time.perf_counter()
    sets = validation_sets(args.n_prompts)
    evaluation = sets["bad_evaluation_prompts"], sets["good_evaluation_prompts"]
    b = args.batch_size
    models, metrics = {}, {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        m = tl.load_model("organism-aligned", backend="nnsight", dtype=dtype)
        models[name] = m
        metrics[name] = AbliterationMetrics.prepare(m, *evaluation, batch_size=b).with_objective(
            m, "early_stop"
        )
    f32, b16 = models["float32"], models["bfloat16"]
    # One set of directions (the float32 model's reading), written into both copies.
    dirs = compute_directions(
        f32,
        sets["bad_prompts"],
        sets["good_prompts"],
        batch_size=b,
        progress=False,
        reading="heretic",
    )
    floor = metrics["float32"].kl(b16, ["kl_answer"])["kl_answer"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    settings = [("base", None)]  # (label, Heretic's parameters; None: no edit)
    settings += [(f"edit {k}", suggest(study.ask(), f32.n_layers)) for k in range(args.trials)]
    rows = []
    for label, params in settings:
        row = dict(edit=label)
        for name, m in models.items():
            plan = [] if params is None else heretic_plan(m, dirs, params)
            with edited(m, plan):
                verdicts, t_count, _ = timed(metrics[name].counter.verdicts, m)
                kl, t_kl, _ = timed(metrics[name].kl, m, ["kl_answer"])
            row[name] = dict(verdicts=verdicts, kl=kl["kl_answer"], count_s=t_count, kl_s=t_kl)
        rows.append(row)

    n = args.n_prompts
    lines = header("bfloat16 weights for a search trial", args, "bf16_trials.py") + [
        f"cpu bfloat16 instruction sets: {cpu_flags()}",
        f"model: organism-aligned loaded in float32 and in bfloat16 (two copies); VALIDATION "
        f"prompts: MaliciousInstruct first {n} harmful (refusals counted early_stop, 8 answer "
        f"tokens), Alpaca val first {n} harmless (KL of the first answer token after the base "
        f"model's own thinking, each copy against its own base); batch {b}",
        f"edits: the base and {args.trials} random settings of Heretic's space (seed "
        f"{args.seed}), directions read Heretic's way on the float32 copy, written into each",
        f"KL(float32 base || bfloat16 base) on the same texts: {floor:.5f}",
        "",
        f"{'edit':<8} {'refusals f32':>12} {'bf16':>5} {'agree':>6} {'KL f32':>8} {'KL bf16':>8}"
        f" {'count s f32':>11} {'bf16':>6} {'KL s f32':>8} {'bf16':>6}",
    ]
    agree, speed_count, speed_kl = [], [], []
    for r in rows:
        a, c = r["float32"], r["bfloat16"]
        same = sum(x == y for x, y in zip(a["verdicts"], c["verdicts"], strict=True)) / n
        agree.append(same)
        speed_count.append(a["count_s"] / c["count_s"])
        speed_kl.append(a["kl_s"] / c["kl_s"])
        lines.append(
            f"{r['edit']:<8} {sum(a['verdicts']):>12} {sum(c['verdicts']):>5} {same:>6.3f} "
            f"{a['kl']:>8.4f} {c['kl']:>8.4f} {a['count_s']:>11.2f} {c['count_s']:>6.2f} "
            f"{a['kl_s']:>8.2f} {c['kl_s']:>6.2f}"
        )
    lines += [
        "",
        f"per-prompt agreement of the verdicts, mean over edits: {statistics.mean(agree):.3f} "
        f"(min {min(agree):.3f})",
        f"float32 / bfloat16 time: refusal count {statistics.mean(speed_count):.2f}x, KL "
        f"{statistics.mean(speed_kl):.2f}x (means over edits, one run after the other)",
        f"benchmark wall time {time.perf_counter() - started:.0f} s",
    ]
    save(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())

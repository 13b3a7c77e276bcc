"""Abliteration benchmarks on organism-aligned: the search loop's speed, and every preset.

Default mode, the search loop: thinklens's search writes each trial's edit into the loaded
model and restores the exact weights afterwards. The first published search tool reloaded the
model from disk before every trial; the baseline does the same (``thinklens.load_model`` of
the organism: the base folder plus its merged LoRA adapter) and otherwise runs the identical
trial. Both loops use the same seeded sampler, so they try the same parameters and must reach
the same objective values: the script checks that. Results: ``results/abliteration.txt``.

``--presets``: every preset's refusal rate, KL and GSM8K accuracy in one table. Directions
come from the bundled training prompts (the last ``--n-val`` of each kind held back for Arditi
et al.'s selection); the table is measured on held-out harmful prompts (AdvBench and
JailbreakBench when ``../shared/data`` exists, else the bundled test split) and the bundled
harmless test split. ``heretic (search)`` is the Pareto trial of a short search with the
fewest refusals at KL <= 0.1. Results: ``results/abliteration_presets.txt``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import random
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).parent / "results"


def _cpu_seconds() -> tuple[float, float]:
    """(busy seconds of the whole machine, seconds of this process), for contention checks."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:8]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system


def timed(fn, *args, **kw) -> tuple[object, float, float]:
    """Result, wall seconds, and the mean cpus other processes used meanwhile."""
    busy0, own0 = _cpu_seconds()
    start = time.perf_counter()
    out = fn(*args, **kw)
    wall = time.perf_counter() - start
    busy1, own1 = _cpu_seconds()
    return out, wall, max((busy1 - busy0) - (own1 - own0), 0.0) / wall


def header(title: str, args: argparse.Namespace, script: str = "abliteration.py") -> list[str]:
    from importlib.metadata import version

    pkgs = ("torch", "transformers", "optuna", "nnsight")
    return [
        f"thinklens abliteration benchmark: {title} (benchmarks/{script})",
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "versions: "
        + ", ".join([f"python {platform.python_version()}"] + [f"{p} {version(p)}" for p in pkgs]),
        f"machine: cpu, {os.cpu_count()} cpus, torch threads {args.threads}; load average "
        f"{os.getloadavg()[0]:.2f} when the run ended",
    ]


def save(lines: list[str], path: Path) -> None:
    """Print the results and write them through a temporary file and a rename."""
    text = "\n".join([*lines, ""])
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def held_out_harmful(n: int, which: str = "public") -> tuple[list[str], str]:
    """Harmful prompts no organism saw: AdvBench + JailbreakBench (``public``, when the shared
    data exist), or the bundled test split with every other prompt framed (``bundled``)."""
    from thinklens.data import bundled_prompts, frame_all

    if which == "bundled":
        test = bundled_prompts("harmful", "test")[:n]
        half = len(test) // 2
        framed = frame_all(test[half:], seed=5)
        return test[:half] + framed, "bundled harmful test split, half framed"
    if not SHARED.exists():
        return bundled_prompts("harmful", "test")[:n], "bundled harmful test split"
    with open(SHARED / "advbench.csv") as f:
        adv = [r["goal"] for r in csv.DictReader(f)]
    with open(SHARED / "jailbreakbench.csv") as f:
        jbb = [r["Goal"] for r in csv.DictReader(f)]
    rng = random.Random(0)
    return rng.sample(adv, n // 2) + rng.sample(jbb, n - n // 2), "AdvBench + JailbreakBench"


def search_loops(args: argparse.Namespace) -> list[str]:
    """Time the one-model search loop against the reload-per-trial loop."""
    import thinklens as tl
    from thinklens.analyses.abliteration.metrics import AbliterationMetrics
    from thinklens.analyses.abliteration.search import search
    from thinklens.data import bundled_prompts
    from thinklens.interventions.abliteration.directions import compute_directions

    def load() -> tl.Model:
        return tl.load_model(args.model, backend="nnsight")

    model, load_s, _ = timed(load)
    harm, harmless = bundled_prompts("harmful", "train"), bundled_prompts("harmless", "train")
    dirs, dir_s, _ = timed(compute_directions, model, harm, harmless, positions="last")
    n_eval = args.n_eval or 16
    metrics, prep_s, _ = timed(
        AbliterationMetrics.prepare,
        model,
        bundled_prompts("harmful", "test")[:n_eval],
        bundled_prompts("harmless", "test")[:n_eval],
        max_new_tokens=args.max_new_tokens,
    )
    reloads: list[float] = []

    def reload() -> tl.Model:
        m, s, _ = timed(load)
        reloads.append(s)
        return m

    n = args.trials
    kw = dict(n_trials=n, n_startup_trials=args.startup_trials, seed=0)
    ours, ours_s, ours_other = timed(search, model, dirs, metrics, **kw)
    base, base_s, base_other = timed(search, model, dirs, metrics, reload=reload, **kw)
    a = ours.trials.sort_values("trial").reset_index(drop=True)
    b = base.trials.sort_values("trial").reset_index(drop=True)
    kl_key = "kl_answer" if a["kl_answer"].notna().all() else "kl"
    return [
        *header("search loop, one model vs a reload per trial", args),
        f"model: {args.model} (nnsight backend, float32); load {load_s:.1f} s; directions "
        f"({len(harm)} + {len(harmless)} bundled train prompts, last position) {dir_s:.1f} s; "
        f"base metrics {prep_s:.1f} s",
        f"search: Heretic's space, Optuna TPE multivariate, {n} trials ({args.startup_trials} "
        f"random start-up), seed 0; objectives {kl_key} and refusals / base refusals "
        f"({metrics.base_refusals}/{n_eval} base refusals)",
        f"trial: norm-preserving edit of the weights, {n_eval} harmful prompts x "
        f"{args.max_new_tokens} greedy tokens judged in the answer, KL on {n_eval} harmless",
        "other cpus: mean cpus busy with other processes during the loop (/proc/stat)",
        "",
        f"{'loop':<34}{'seconds':>9}{'s/trial':>9}{'other cpus':>12}",
        f"{'one model, edit + exact undo':<34}{ours_s:>9.1f}{ours_s / n:>9.2f}{ours_other:>12.2f}",
        f"{'reload model before every trial':<34}{base_s:>9.1f}{base_s / n:>9.2f}"
        f"{base_other:>12.2f}",
        "",
        f"speed-up (reload loop / one-model loop): {base_s / ours_s:.2f}x",
        f"reload: {sum(reloads) / len(reloads):.2f} s per trial on average "
        f"({sum(reloads) / base_s:.0%} of the reload loop)",
        f"same trials: refusals equal in all {n} trials: {bool((a.refusals == b.refusals).all())}"
        f"; max |{kl_key} diff| {float((a[kl_key] - b[kl_key]).abs().max()):.1e}",
        f"Pareto front of the one-model loop: {len(ours.pareto)} trials; fewest refusals "
        f"{int(ours.pareto.refusals.iloc[0])} at {kl_key} {ours.pareto[kl_key].iloc[0]:.3f}",
    ]


def presets(args: argparse.Namespace) -> list[str]:
    """Every preset (and a short search) measured on held-out prompts, in one table."""
    import pandas as pd

    import thinklens as tl
    from thinklens.analyses.abliteration.gsm8k import gsm8k_accuracy, load_gsm8k
    from thinklens.analyses.abliteration.metrics import AbliterationMetrics
    from thinklens.analyses.abliteration.search import search
    from thinklens.data import bundled_prompts
    from thinklens.interventions.abliteration.directions import compute_directions
    from thinklens.interventions.abliteration.presets import PRESETS
    from thinklens.interventions.abliteration.selection import NoCandidate, choose, select_direction
    from thinklens.interventions.abliteration.weights import apply
    from thinklens.xstest import xstest_prompts

    start = time.perf_counter()
    model = tl.load_model(args.model, backend="nnsight")
    harm, harmless = bundled_prompts("harmful", "train"), bundled_prompts("harmless", "train")
    v = args.n_val
    dirs = compute_directions(model, harm[:-v], harmless[:-v])
    # The last 20% of layers are discarded by the filter anyway.
    layers = range(args.select_stride, int(model.n_layers * 0.8), args.select_stride)
    try:
        sel = select_direction(
            model,
            dirs,
            harm[-v:],
            harmless[-v:],
            positions=[-1],
            layers=layers,
            refusal_words=args.refusal_words,
        )
        how = "every published filter"
    except NoCandidate as err:  # keep the KL filter, drop the steering check
        try:
            sel = choose(dirs, err.table, induce_refusal_threshold=-float("inf"))
            how = f"no candidate passed every filter ({err}); chosen without the steering check"
        except NoCandidate:  # and then the KL filter's bound: the least KL that keeps one
            top = int(model.n_layers * 0.8)
            kl = float(err.table.loc[err.table["layer"] < top, "kl"].min())
            sel = choose(dirs, err.table, kl_threshold=kl, induce_refusal_threshold=-float("inf"))
            how = (
                f"no candidate passed every filter ({err}) nor the KL filter alone; chosen "
                f"without the steering check and with the KL bound raised to {kl:.3f}"
            )
    n_eval = args.n_eval or 40
    harmful_eval, source = held_out_harmful(n_eval, args.harmful)
    xstest = SHARED / "xstest_prompts.csv"
    over = xstest_prompts("safe", xstest, args.n_xstest) if xstest.exists() else None
    metrics = AbliterationMetrics.prepare(
        model,
        harmful_eval,
        bundled_prompts("harmless", "test")[:n_eval],
        max_new_tokens=args.max_new_tokens,
        over_refusal=over,
    )
    gsm = load_gsm8k(SHARED / "gsm8k_test.jsonl", n=args.n_gsm8k) if SHARED.exists() else None
    found = search(model, dirs, metrics, n_trials=args.trials, n_startup_trials=args.startup_trials)
    kl_key = "kl_answer" if metrics.answer_texts is not None else "kl"
    picks = {}  # the trial with the fewest refusals at each KL's bound of 0.1
    for key in [kl_key]:  # the search records the KL it minimises
        ok = found.trials[found.trials[key] <= 0.1].sort_values(["refusals", kl_key])
        if not ok.empty:
            picks[key] = int(ok.trial.iloc[0])

    rows = []

    def measure(name: str, m: tl.Model, note: str) -> None:
        row = dict(preset=name) | metrics(m)
        row["gsm8k"] = gsm8k_accuracy(m, gsm) if gsm else float("nan")
        rows.append(row | dict(setting=note))
        print(json.dumps(rows[-1]), flush=True)

    measure("none (organism)", model, "")
    for name in PRESETS:
        new = apply(model, name, dirs)  # arditi and failspy take the selected direction
        rec = new.hf.thinklens_edit
        point = rec["parameters"].get("direction_point")
        where = f", direction point {point}" if point is not None else ", default kernel"
        measure(name, new, f"layers {rec['layers'][0]}-{rec['layers'][-1]}{where}")
        del new
    for key, trial in picks.items():
        new = apply(model, "heretic", dirs, params=found.params(trial))
        measure(f"heretic (search, {key} <= 0.1)", new, f"trial {trial}")
    table = pd.DataFrame(rows)
    cols = ["preset", "refusals", "refusal_rate", "kl", kl_key, "gsm8k", "setting"]
    if over is not None:
        cols.insert(3, "over_refusal")
    return [
        *header("every preset on one model", args),
        f"model: {args.model}; directions: {len(harm) - v} + {len(harmless) - v} bundled train "
        "prompts, post-instruction positions, float64",
        f"selection (Arditi et al.): position -1, layers {layers.start}-{layers.stop - 1} "
        f"every {layers.step}, {v} + {v} validation prompts, refusal tokens "
        f"{'/'.join(args.refusal_words)}, thinking-aware; baseline refusal score "
        f"{sel.baseline_harmful:.2f} (harmful), {sel.baseline_harmless:.2f} (harmless); "
        f"layer {sel.layer} by {how}",
        *sel.table.to_string(index=False, float_format=lambda x: f"{x:.3f}").splitlines(),
        f"refusals: {len(harmful_eval)} held-out harmful prompts ({source}), greedy "
        f"{args.max_new_tokens} tokens, refusal markers read in the answer after the thinking",
        f"kl: KL(base || edited) of the first generated token on {n_eval} bundled harmless "
        "test prompts; kl_answer: of the first answer token after the base model's own "
        "thinking (teacher-forced)",
        (
            f"over_refusal: refusal rate on {len(over)} XSTest safe prompts (every type in "
            "turn), judged like the refusals"
            if over is not None
            else "over_refusal: not measured (no XSTest file in ../shared/data)"
        ),
        f"search refusal objective: {found.study.user_attrs.get('refusal_objective', 'full')}",
        f"gsm8k: accuracy on {args.n_gsm8k} GSM8K test questions (greedy, 256 tokens, last "
        "number of the answer)",
        f"heretic (search): {args.trials} trials ({args.startup_trials} random start-up) "
        f"minimising {kl_key} and refusals; rows: the trial with the fewest refusals at each "
        "KL <= 0.1; parameters: "
        + "; ".join(f"trial {t}: {json.dumps(found.params(t).to_dict())}" for t in picks.values()),
        "",
        table[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"),
        "",
        f"total time {time.perf_counter() - start:.0f} s",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", action="store_true", help="the preset table, not the timing")
    p.add_argument("--model", default="organism-aligned")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--startup-trials", type=int, default=10)
    p.add_argument("--n-eval", type=int, default=None, help="16 for timing, 40 for presets")
    p.add_argument("--n-val", type=int, default=16)
    p.add_argument(
        "--harmful", choices=["public", "bundled"], default="public", help="held-out harmful set"
    )
    p.add_argument("--select-stride", type=int, default=1, help="candidate layers' spacing")
    p.add_argument("--refusal-words", nargs="+", default=["I", "Sorry"])
    p.add_argument("--n-gsm8k", type=int, default=20)
    p.add_argument("--n-xstest", type=int, default=50, help="XSTest safe prompts (presets)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    name = "abliteration_presets.txt" if args.presets else "abliteration.txt"
    lines = presets(args) if args.presets else search_loops(args)
    save(lines, Path(args.out) if args.out else RESULTS / name)


if __name__ == "__main__":
    main()

"""Cheaper refusal counting for the abliteration search against full generation (organism-aligned).

A search of ``--trials`` trials (Heretic's space, TPE, seed 0) is run with full generation as
its refusal objective; inside every trial, on the same edit, each cheaper objective
(``analyses/abliteration/objectives.py``) also judges every harmful prompt:

- ``answer@N``: the base model's own thinking teacher-forced, N answer tokens generated;
- ``probe``: the refusal probe at the last position of prompt + base thinking + marker;
- ``first_token``: the probability of the base's refusal openings at the answer start;
- ``early_stop@N``: full generation stopped N tokens after the thinking closes;
- ``draft@N``: early_stop's tokens, with the base model's early-stopped response checked as a
  draft in one forward pass under the edit and generation resumed from the first difference;
- ``short@K``: the first K tokens of the thinking generated under the edit, closed with the
  marker if still open, then ``max(--n)`` answer tokens generated and judged.
- ``batched@N``: early_stop@N with ``--parallel`` trials counted in one batch
  (``RefusalCounter.verdicts_many``, what ``search(..., parallel_trials=K)`` does): after the
  search, its trials' edits are counted again K at a time, and a trial's seconds are its
  batch's over K. ``full-batched``, the same for full generation, says how much of the gain is
  the batching alone.

For each: per-prompt agreement with full generation (refused / not, pooled over trials), the
Spearman correlation of the trials' refusal ratios, and wall seconds per trial (ratios against
full generation timed in the same trial). Verdicts at the smaller N are read from the first N
answer tokens of the largest N for ``early_stop`` (greedy decoding makes them the same
tokens, cut by token id; it is timed at the largest N, an upper bound); ``answer`` generates
and is timed at every N, as is ``draft``. ``--objectives`` and ``--n`` run a subset (each
``early_stop@N`` is then timed at its own N when only one N is given).

Two runs: VALIDATION (MaliciousInstruct harmful, Alpaca validation harmless) chooses the
objective and N: the cheapest whose agreement >= 0.9 and Spearman >= 0.8; HELD-OUT (AdvBench +
JailbreakBench harmful, Alpaca test harmless) reports the choice once. Without the public sets
both use the bundled test split (said in the header). Results: ``results/fast_objective.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abliteration import SHARED, header, save  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CANDIDATE_N = (8, 16, 32)
OBJECTIVES = "answer probe first_token early_stop draft short_thinking batched".split()
CANDIDATE_K = (8, 12, 16, 24)


def validation_prompts(n: int) -> tuple[list[str], list[str], str]:
    """MaliciousInstruct and Alpaca validation prompts (seeded), or the bundled test split."""
    from thinklens.data import bundled_prompts

    if not SHARED.exists():
        h, b = bundled_prompts("harmful", "test"), bundled_prompts("harmless", "test")
        return h[n : 2 * n], b[n : 2 * n], "bundled test split (second block)"
    harmful = [ln.strip() for ln in (SHARED / "malicious_instruct.txt").read_text().splitlines()]
    rows = json.loads((SHARED / "harmless_val.json").read_text())
    rng = random.Random(1)
    picked = (
        rng.sample([h for h in harmful if h], n),
        rng.sample([r["instruction"] for r in rows], n),
    )
    return *picked, "MaliciousInstruct + Alpaca validation"


def held_out(n: int) -> tuple[list[str], list[str], str]:
    from thinklens.testing import held_out_prompts

    harmful, harmless = held_out_prompts(SHARED, n)
    where = "AdvBench + JailbreakBench, Alpaca test" if SHARED.exists() else "bundled test split"
    return harmful, harmless, where


def one_run(model, dirs, harmful, harmless, args, label: str) -> dict:
    """One search with full generation as its objective, every objective judged per trial."""
    from dataclasses import dataclass, replace

    from thinklens.analyses.abliteration import AbliterationMetrics, RefusalCounter, search
    from thinklens.evaluation import MarkerJudge

    ns = args.n
    big = max(ns)
    wanted = set(args.objectives)
    base_metrics = AbliterationMetrics.prepare(
        model, harmful, harmless, thinking=True, max_new_tokens=args.max_new_tokens
    )
    kw = dict(max_new_tokens=args.max_new_tokens, answer_tokens=big)
    answer = RefusalCounter.prepare(model, harmful, "answer", **kw) if "answer" in wanted else None
    probe = base_metrics.with_objective(model, "probe").counter if "probe" in wanted else None
    first = None
    if "first_token" in wanted:
        first = base_metrics.with_objective(model, "first_token", big).counter
    drafts = {
        n: RefusalCounter.prepare(
            model, harmful, "draft", args.max_new_tokens, answer_tokens=n, batch_size=16
        )
        for n in (ns if "draft" in wanted else ())
    }
    shorts = {
        k: RefusalCounter.prepare(
            model, harmful, "short_thinking", answer_tokens=big, think_tokens=k, batch_size=16
        )
        for k in (args.think if "short_thinking" in wanted else ())
    }
    judge = MarkerJudge(fmt=model.thinking)
    tok, close = model.tokenizer, model.thinking.close
    records: list[dict] = []

    def timed_call(fn, *a, **k):
        start = time.perf_counter()
        out = fn(*a, **k)
        return out, time.perf_counter() - start

    prompt_ids = model.chat_ids(harmful)

    def judge_cut(news: list[list[int]], n: int) -> list[bool]:
        """Verdicts on responses cut n tokens after the token that closes the thinking."""
        cut = []
        for new in news:
            end = close_end(tok, new, close)
            cut.append(tok.decode(new if end is None else new[: end + n], skip_special_tokens=True))
        return judge(harmful, cut)

    from thinklens.decoding import close_end
    from thinklens.generation import continue_ids, generate

    @dataclass
    class Recording(AbliterationMetrics):
        def __call__(self, m, kl_keys=None, first_edited=None):  # type: ignore[override]
            rec: dict = {}
            outs, rec["t_full"] = timed_call(
                generate, m, harmful, args.max_new_tokens, batch_size=16
            )
            rec["full"] = judge(harmful, outs)
            for n in ns if answer is not None else ():
                counter = replace(answer, answer_tokens=n)  # the shipped code path
                rec[f"answer@{n}"], rec[f"t_answer@{n}"] = timed_call(counter.verdicts, m)
            if "early_stop" in wanted:
                stopped, rec["t_early_stop"] = timed_call(
                    continue_ids, m, prompt_ids, args.max_new_tokens, 16, answer_tokens=big
                )
                for n in ns:
                    rec[f"early_stop@{n}"] = judge_cut(stopped, n)
            for k, counter in shorts.items():
                rec[f"short@{k}"], rec[f"t_short@{k}"] = timed_call(counter.verdicts, m)
            for n, counter in drafts.items():
                rec[f"draft@{n}"], rec[f"t_draft@{n}"] = timed_call(counter.verdicts, m)
            if probe is not None:
                rec["probe"], rec["t_probe"] = timed_call(probe.verdicts, m)
            if first is not None:
                rec["first_token"], rec["t_first_token"] = timed_call(first.verdicts, m)
            records.append(rec)
            n_full = sum(rec["full"])
            kl = self.kl(m, kl_keys, first_edited)
            return dict(refusals=n_full, refusal_rate=n_full / len(harmful)) | kl

    metrics = Recording(**{f: getattr(base_metrics, f) for f in base_metrics.__dataclass_fields__})
    metrics(model)  # the base model: each objective's own base refusals
    base = records.pop()
    start = time.perf_counter()
    res = search(
        model,
        dirs,
        metrics,
        n_trials=args.trials,
        n_startup_trials=args.startup,
        seed=0,
        refusal_objective="full",
        progress=False,
    )
    wall = time.perf_counter() - start
    if "batched" in wanted:
        batched(model, dirs, harmful, res, records, base, args)
    return dict(
        label=label,
        base=base,
        records=records,
        wall=wall,
    )


def batched(model, dirs, harmful, res, records: list[dict], base: dict, args) -> None:
    """``batched@N`` and ``full-batched`` of every trial (the module), into its record."""
    from thinklens.analyses.abliteration import RefusalCounter
    from thinklens.interventions.abliteration import heretic_plan

    k = args.parallel
    numbers = sorted(t.number for t in res.study.trials if t.state.name == "COMPLETE")
    plans = [heretic_plan(model, dirs, res.params(t)) for t in numbers]
    kw = dict(max_new_tokens=args.max_new_tokens, batch_size=16)
    for name, counter in [
        *[
            (f"batched@{n}", RefusalCounter("early_stop", harmful, answer_tokens=n, **kw))
            for n in args.n
        ],
        ("full-batched", RefusalCounter("full", harmful, **kw)),
    ]:
        base[name] = counter.verdicts(model)
        for i in range(0, len(plans), k):
            start = time.perf_counter()
            counts = counter.verdicts_many(model, plans[i : i + k])
            seconds = (time.perf_counter() - start) / len(counts)
            for rec, v in zip(records[i : i + k], counts, strict=True):
                rec[name], rec[f"t_{name}"] = v, seconds


def summarise(run: dict, objectives: list[str]) -> list[dict]:
    from scipy.stats import spearmanr

    rows = []
    recs, base = run["records"], run["base"]
    for name in objectives:
        agree = [a == b for r in recs for a, b in zip(r[name], r["full"], strict=True)]
        ratio = [sum(r[name]) / max(sum(base[name]), 1) for r in recs]
        ratio_full = [sum(r["full"]) / max(sum(base["full"]), 1) for r in recs]
        rho = spearmanr(ratio, ratio_full).statistic
        key = f"t_{name}" if f"t_{name}" in recs[0] else f"t_{name.split('@')[0]}"
        t = sum(r[key] for r in recs) / len(recs)
        t_full = sum(r["t_full"] for r in recs) / len(recs)
        rows.append(
            dict(
                objective=name,
                agreement=sum(agree) / len(agree),
                spearman=float(rho),
                base_refusals=sum(base[name]),
                seconds=t,
                speedup=t_full / t,
            )
        )
    return rows


def table(rows: list[dict], n_prompts: int, full_base: int) -> list[str]:
    out = [
        f"{'objective':<14} {'agreement':>9} {'spearman':>8} {'base refusals':>13} "
        f"{'s/trial':>8} {'speed-up':>8}"
    ]
    for r in rows:
        out.append(
            f"{r['objective']:<14} {r['agreement']:>9.3f} {r['spearman']:>8.3f} "
            f"{r['base_refusals']:>6}/{n_prompts:<6} {r['seconds']:>8.2f} {r['speedup']:>7.1f}x"
        )
    out.append(f"(full generation: base refusals {full_base}/{n_prompts})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="organism-aligned")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--startup", type=int, default=10)
    parser.add_argument("--val-trials", type=int, default=15)
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "fast_objective.txt")
    parser.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES))
    parser.add_argument("--n", nargs="+", type=int, default=list(CANDIDATE_N), help="answer tokens")
    parser.add_argument("--parallel", type=int, default=4, help="trials a batch (batched@N)")
    parser.add_argument(
        "--think", nargs="+", type=int, default=list(CANDIDATE_K), help="short@K thinking tokens"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import thinklens as tl
    from thinklens.data import bundled_prompts
    from thinklens.interventions.abliteration.directions import compute_directions

    model = tl.load_model(args.model)
    dirs = compute_directions(
        model,
        bundled_prompts("harmful", "train"),
        bundled_prompts("harmless", "train"),
        positions="last",
        progress=False,
    )
    wanted = set(args.objectives)
    names = [f"answer@{n}" for n in args.n if "answer" in wanted]
    names += [o for o in ("probe", "first_token") if o in wanted]
    names += [f"{o}@{n}" for o in ("early_stop", "draft") if o in wanted for n in args.n]
    names += [f"short@{k}" for k in args.think if "short_thinking" in wanted]
    if "batched" in wanted:
        names += [f"batched@{n}" for n in args.n] + ["full-batched"]
    load_start = os.getloadavg()[0]

    h, b, where_val = validation_prompts(args.n_prompts)
    trials = args.trials
    args.trials = args.val_trials
    val = one_run(model, dirs, h, b, args, "validation")
    args.trials = trials
    val_rows = summarise(val, names)
    ok = [r for r in val_rows if r["agreement"] >= 0.9 and r["spearman"] >= 0.8]
    chosen = max(ok or val_rows, key=lambda r: (r["speedup"], r["agreement"]))["objective"]

    h, b, where_test = held_out(args.n_prompts)
    test = one_run(model, dirs, h, b, args, "held-out")
    test_rows = summarise(test, names)
    full_val, full_test = sum(val["base"]["full"]), sum(test["base"]["full"])
    lines = [
        *header(
            "refusal objectives for thinking models, against full generation",
            args,
            "fast_objective.py",
        ),
        f"load average when the run started: {load_start:.2f}",
        f"model: {args.model}; directions: bundled train prompts, last position; search: "
        f"Heretic's space, TPE seed 0, full generation ({args.max_new_tokens} new tokens) as "
        "the search's objective, every objective judged on each trial's edit; marker judge "
        "(answer after the thinking)",
        f"VALIDATION ({where_val}; {args.n_prompts} harmful + {args.n_prompts} harmless, "
        f"{args.val_trials} trials, {args.startup} start-up): chooses the objective",
        *table(val_rows, args.n_prompts, full_val),
        f"chosen on validation: {chosen} (cheapest with agreement >= 0.9 and Spearman >= 0.8"
        + ("" if ok else "; none reached both, so the most agreeing of the fastest")
        + ")",
        "",
        f"HELD-OUT ({where_test}; {args.n_prompts} harmful + {args.n_prompts} harmless, "
        f"{args.trials} trials, {args.startup} start-up): reported once",
        *table(test_rows, args.n_prompts, full_test),
        f"search wall time: validation {val['wall']:.0f} s, held-out {test['wall']:.0f} s; "
        "seconds per trial: each objective's own generation or probe time (early_stop at "
        f"N = {max(args.n)} for every N, an upper bound; batched: a batch of "
        f"{args.parallel} trials' seconds over {args.parallel})",
        "",
    ]
    chosen_row = next(r for r in test_rows if r["objective"] == chosen)
    lines.append(
        f"held-out, chosen {chosen}: agreement {chosen_row['agreement']:.3f}, Spearman "
        f"{chosen_row['spearman']:.3f}, speed-up {chosen_row['speedup']:.1f}x per trial"
    )
    save(lines, args.out)


if __name__ == "__main__":
    main()

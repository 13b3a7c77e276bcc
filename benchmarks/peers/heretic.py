"""Heretic 1.4.0 beside thinklens's search on organism-aligned: time per trial and Pareto fronts.

Heretic is AGPL-3.0, so it runs here as a separate program from its own virtual environment
(``--venv``, made on first use with ``python3.11 -m venv`` and ``pip install torch==2.14.1
torchvision==0.29.1 heretic-llm==1.4.0``); nothing of it is imported or copied. Both tools get
the same model (organism-aligned, its LoRA merged, saved as a plain transformers folder), the
same prompt files (one prompt a line: AdvBench harmful and Alpaca harmless from
``../shared/data``, ``--n-prompts`` of each kind for the directions and as many held apart for
the evaluation), the same trial count, start-up trials, seed, batch size and torch threads,
one run after the other.

Heretic runs offline (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``)
from a ``config.toml`` in a fresh working folder, with standard input closed; it is stopped when
it prints that the optimisation finished, before its interactive menu. Its Optuna journal gives
each trial's start and end, parameters, refusals and KL (read with the journal's own optuna, in
the peer environment). thinklens's searches run in this process and are timed the same way
(Optuna's trial start and end, and the trial phase's wall time over the trials), in three
settings (``--runs``):

- ``published``: Heretic's protocol (``search(..., protocol="published")``, directions read
  Heretic's way, ``AbliterationMetrics.prepare(..., protocol="published")``): the same work per
  trial as Heretic, so the same seed draws the same trials.
- ``default``: thinklens's defaults (its reading of the directions, its metrics for a model that
  thinks first, its search space and exact edit, and the refusal objective ``search`` picks,
  or ``--thinklens-objective``).
- ``parallel``: the default run with ``--parallel-trials`` trials asked at once and their
  refusals counted in one batch (``search(..., parallel_trials=k)``); ``--also-parallel``
  adds the same run with other numbers of trials a batch (``thinklens parallel xK``).

Each run's Pareto front (fewest refusals at each KL, by its own count) is then measured again
in this process, on the same harmful and harmless prompts, two ways: by Heretic's count
(Heretic's metrics, as thinklens reproduces them) and by one judge, thinklens's default metrics
with full generation (chat template, the organism's own thinking, refusal markers read in the
answer after it, ``--judge-tokens`` new tokens; KL of the first answer token). Heretic's trials
are rebuilt from their logged parameters and seed with ``heretic_plan(...,
protocol="published")``; their counts measured again are a check of that rebuild.
Results: ``results/peers_heretic.txt``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import write_result  # noqa: E402

RESULTS = HERE.parent / "results"
SHARED = HERE.parents[2] / "shared" / "data"
CACHE = Path(os.environ.get("THINKLENS_CACHE", Path.home() / ".cache" / "thinklens"))
PEER = "heretic-llm==1.4.0"
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
OFFLINE = dict(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
FINISHED = "Optimization finished!"
KL_BUDGETS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)

#: Run with the peer environment's python: its optuna reads the journal its optuna wrote.
READ_JOURNAL = """
import json, sys
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

storage = JournalStorage(JournalFileBackend(sys.argv[1]))
study = optuna.load_study(study_name=sys.argv[2], storage=storage)
trials = [
    dict(number=t.number, state=t.state.name, params=t.params, user_attrs=t.user_attrs,
         start=t.datetime_start.timestamp() if t.datetime_start else None,
         end=t.datetime_complete.timestamp() if t.datetime_complete else None)
    for t in study.trials
]
print(json.dumps(dict(user_attrs=study.user_attrs, trials=trials)))
"""


# --- the peer environment ---------------------------------------------------------------------
def peer_venv(venv: Path) -> Path:
    """The peer environment's python, made (once) with Heretic and the capped torch."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} (python3.11 -m venv; pip install {PEER})", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
    have = subprocess.run(
        [str(python), "-m", "pip", "show", "heretic-llm"], capture_output=True, text=True
    )
    if "Version: 1.4.0" not in have.stdout:
        subprocess.run([str(python), "-m", "pip", "install", *TORCH, PEER], check=True)
    return python


def peer_versions(python: Path) -> str:
    code = (
        "import importlib.metadata as m, platform; print(', '.join(['python ' + "
        "platform.python_version()] + [p + ' ' + m.version(p) for p in ('heretic-llm', 'torch', "
        "'transformers', 'optuna', 'peft', 'bitsandbytes')]))"
    )
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


# --- inputs -----------------------------------------------------------------------------------
def one_line(prompts: list[str]) -> list[str]:
    """Stripped, non-empty prompts without line breaks (a text file holds one a line)."""
    return [p.strip() for p in prompts if p.strip() and "\n" not in p.strip()]


def alpaca(split: str) -> list[str]:
    """The shared Alpaca instructions of ``split`` (``train``, ``val``, ``test``), one a line."""
    rows = json.loads((SHARED / f"harmless_{split}.json").read_text())
    return one_line([r["instruction"] for r in rows])


def prompt_sets(n: int) -> dict[str, list[str]]:
    """``n`` prompts of each kind for the directions and ``n`` more for the evaluation."""
    if not SHARED.exists():
        raise SystemExit(f"{SHARED} is missing: this benchmark reads the shared data sets")
    with (SHARED / "advbench.csv").open(newline="", encoding="utf-8") as f:
        harmful = one_line([r["goal"] for r in csv.DictReader(f)])
    sets = dict(
        bad_prompts=harmful[:n],
        good_prompts=alpaca("train")[:n],
        bad_evaluation_prompts=harmful[-n:],
        good_evaluation_prompts=alpaca("test")[:n],
    )
    if any(len(v) < n for v in sets.values()) or 2 * n > len(harmful):
        raise SystemExit(f"--n-prompts {n} is more than the data sets hold")
    return sets


def heretic_config(model_dir: Path, files: dict[str, Path], args: argparse.Namespace) -> str:
    """Heretic's ``config.toml``: only what differs from its defaults or must be pinned."""
    lines = [
        f'model = "{model_dir}"',
        f"n_trials = {args.trials}",
        f"n_startup_trials = {args.startup}",
        f"seed = {args.seed}",
        f"batch_size = {args.batch_size}",
        'study_checkpoint_dir = "checkpoints"',
    ]
    for name, path in files.items():
        lines += ["", f"[{name}]", f'dataset = "{path}"']
    return "\n".join(lines) + "\n"


# --- Heretic ----------------------------------------------------------------------------------
def run_heretic(python: Path, work: Path, threads: int) -> float:
    """Run Heretic in ``work`` until its search finishes, then stop it; its wall seconds.
    Its output goes to ``work/heretic.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env |= OFFLINE | dict(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        CUDA_VISIBLE_DEVICES="",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        COLUMNS="160",
    )
    start = time.perf_counter()
    with (work / "heretic.log").open("w") as log:
        proc = subprocess.Popen(
            [str(python.parent / "heretic")],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        finished = False
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if line.startswith("Running trial") or "Refusals:" in line or "Prefix" in line:
                print(f"  heretic: {line.rstrip()}", flush=True)
            if FINISHED in line:
                finished = True
                wall = time.perf_counter() - start
                proc.terminate()  # its menu asks which trial to export: nothing to answer
                break
        rc = proc.wait()
    if not finished:
        tail = (work / "heretic.log").read_text().splitlines()[-30:]
        raise RuntimeError(f"Heretic exited ({rc}) before its search finished:\n" + "\n".join(tail))
    return wall


def read_journal(python: Path, work: Path, model_dir: Path) -> dict:
    """Heretic's study: its settings and every trial (times, parameters, refusals, KL)."""
    name = "".join(c if (c.isalnum() or c in "_-") else "--" for c in str(model_dir))
    journal = work / "checkpoints" / f"{name}.jsonl"
    out = subprocess.run(
        [str(python), "-c", READ_JOURNAL, str(journal), "heretic"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


# --- shared measures --------------------------------------------------------------------------
def pareto(rows: list[dict]) -> list[dict]:
    """The trials no other trial beats on both counts: fewest refusals first, each kept only
    if its KL is below that of every trial with fewer (or as few) refusals."""
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r["refusals"], r["kl"])):
        if r["kl"] < best:
            front.append(r)
            best = r["kl"]
    return front


def fewest_refusals(rows: list[dict], budget: float, measure: str) -> int | None:
    """Fewest refusals among ``rows`` with KL at most ``budget`` under ``measure`` (None if
    no row is within it)."""
    return min((r[measure][0] for r in rows if r[measure][1] <= budget), default=None)


def fewest(rows: list[dict], budget: float, measure: str) -> str:
    """``fewest_refusals`` as a table cell ("-" for none)."""
    n = fewest_refusals(rows, budget, measure)
    return "-" if n is None else str(n)


def judged(front: list[dict], budget: float, base: int) -> int:
    """Fewest judged refusals at KL <= ``budget``; ``base`` (no edit) if no point is within it."""
    n = fewest_refusals(front, budget, "judge")
    return base if n is None else n


def covered(mine: list[dict], theirs: list[dict], measure: str) -> int:
    """How many of ``theirs`` some row of ``mine`` matches or beats on both counts."""
    return sum(
        any(m[measure][0] <= t[measure][0] and m[measure][1] <= t[measure][1] for m in mine)
        for t in theirs
    )


def spread(times: list[float]) -> str:
    return (
        f"mean {statistics.mean(times):.1f} s, median {statistics.median(times):.1f} s, "
        f"min {min(times):.1f} s, max {max(times):.1f} s over {len(times)} trials"
    )


def objective_option(args: argparse.Namespace) -> dict:
    """``search``'s refusal-objective keyword for ``--thinklens-objective`` (if it has one)."""
    from thinklens.analyses.abliteration import search

    if args.thinklens_objective is None:
        return {}
    if "refusal_objective" not in inspect.signature(search).parameters:
        raise SystemExit("--thinklens-objective: this search() has no refusal_objective")
    return {"refusal_objective": args.thinklens_objective}


# --- the runs ---------------------------------------------------------------------------------
def heretic_rows(study: dict) -> list[dict]:
    """Heretic's finished trials: its trial number, refusals, KL, seconds and parameters."""
    from thinklens.interventions.abliteration import HereticParams

    seed = json.loads(study["user_attrs"]["settings"])["seed"]
    rows = []
    for t in study["trials"]:
        if t["state"] != "COMPLETE":
            continue
        a = t["user_attrs"]
        params = dict(direction_index=a["direction_index"], seed=seed, **a["parameters"])
        rows.append(
            dict(
                trial=a["index"],
                refusals=a["refusals"],
                kl=a["kl_divergence"],
                seconds=t["end"] - t["start"],
                params=HereticParams.from_dict(params),
            )
        )
    return rows


def run_name(kind: str, reading: str, k: int | None = None, args: object = None) -> str:
    """A thinklens run's name in the tables (``k``: an extra parallel run's trials a batch;
    ``args``: the options that change the search from its defaults, named)."""
    batch = "" if k is None else f" x{k}"
    tags = [reading] if reading != "thinklens" else []
    if kind != "published":
        if getattr(args, "thinklens_objective", None):
            tags.append(f"{args.thinklens_objective} count")
        if getattr(args, "kl_target", None) is not None:
            tags.append(f"kl_target {args.kl_target}")
        if getattr(args, "space", None):
            tags.append(f"space {args.space}")
    return f"thinklens {kind}{batch}" + (f" ({'; '.join(tags)})" if tags else "")


def thinklens_run(
    model, sets: dict, args: argparse.Namespace, kind: str, reading: str = "thinklens"
) -> dict:
    """One thinklens search (``published``, ``default`` or ``parallel``, see the module), with
    the directions of ``reading`` for the last two, and its set-up."""
    from thinklens.analyses.abliteration import AbliterationMetrics, search
    from thinklens.interventions.abliteration import compute_directions, detect_response_prefix

    bad, good = sets["bad_prompts"], sets["good_prompts"]
    evaluation = sets["bad_evaluation_prompts"], sets["good_evaluation_prompts"]
    b = args.batch_size
    start = time.perf_counter()
    if kind == "published":
        prefix = detect_response_prefix(model, [*good[:100], *bad[:100]], batch_size=b)
        dirs = compute_directions(
            model,
            bad,
            good,
            batch_size=b,
            progress=False,
            reading="heretic",
            response_prefix=prefix,
        )
        metrics = AbliterationMetrics.prepare(
            model, *evaluation, batch_size=b, protocol="published", response_prefix=prefix
        )
        kw = {}
    else:
        dirs = compute_directions(model, bad, good, batch_size=b, progress=False, reading=reading)
        metrics = AbliterationMetrics.prepare(model, *evaluation, batch_size=b)
        kw = objective_option(args)
        if kind == "parallel":
            kw["parallel_trials"] = args.parallel_trials
        if getattr(args, "kl_target", None) is not None:
            kw["kl_target"] = args.kl_target
        if getattr(args, "space", None) is not None:
            kw["space"] = args.space
        if kind == "parallel" and getattr(args, "schedule", None) is not None:
            kw["schedule"] = args.schedule
    setup = time.perf_counter() - start
    res = search(
        model,
        dirs,
        metrics,
        n_trials=args.trials,
        n_startup_trials=args.startup,
        seed=args.seed,
        protocol="published" if kind == "published" else "thinklens",
        **kw,
    )
    wall = time.perf_counter() - start
    kl_key = "kl" if kind == "published" else "kl_answer"
    rows = [
        dict(
            trial=t.number + 1,
            refusals=t.user_attrs["refusals"],
            kl=t.user_attrs[kl_key],
            seconds=(t.datetime_complete - t.datetime_start).total_seconds(),
            params=res.params(t.number),
        )
        for t in res.study.trials
        if t.state.name == "COMPLETE"
    ]
    objective = res.study.user_attrs.get("refusal_objective", "full")
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    parallel = ""
    if kind == "parallel":
        parallel = f", parallel_trials {args.parallel_trials}"
        parallel += f", schedule {getattr(args, 'schedule', None) or 'batches'}"
    parallel += f", directions of the {dirs.meta['reading']!r} reading"
    return dict(
        rows=rows,
        setup=setup,
        wall=wall,
        span=span.total_seconds(),
        dirs=dirs,
        protocol="published" if kind == "published" else "thinklens",
        base_refusals=metrics.base_refusals,
        note=f"refusal_objective {objective!r}, KL {kl_key!r}{parallel}, "
        f"base refusals {metrics.base_refusals}",
    )


def _with_k(args: argparse.Namespace, k: int) -> argparse.Namespace:
    """``args`` with ``k`` parallel trials a batch."""
    return argparse.Namespace(**(vars(args) | dict(parallel_trials=k)))


# --- the benchmark ----------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--startup", type=int, default=10, help="random start-up trials")
    p.add_argument("--n-prompts", type=int, default=16, help="of each kind, per set")
    p.add_argument("--threads", type=int, default=1, help="torch threads of both tools")
    p.add_argument("--batch-size", type=int, default=16, help="both tools (Heretic: 0 = auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runs",
        nargs="+",
        default=["published", "default", "parallel"],
        choices=["published", "default", "parallel"],
        help="thinklens searches to run beside Heretic",
    )
    p.add_argument(
        "--thinklens-objective",
        default=None,
        help="search()'s refusal_objective for the default and parallel runs (else its own "
        "choice; 'heretic': Heretic's count, batched)",
    )
    p.add_argument(
        "--parallel-trials", type=int, default=4, help="trials a batch in the parallel run"
    )
    p.add_argument(
        "--schedule",
        choices=["batches", "in_flight"],
        default=None,
        help="search()'s schedule of the parallel runs (default: its own)",
    )
    p.add_argument(
        "--also-parallel",
        type=int,
        nargs="*",
        default=[],
        help="more parallel runs, with these trials a batch (named 'thinklens parallel xK')",
    )
    p.add_argument(
        "--readings",
        nargs="+",
        default=["thinklens"],
        help="direction readings of the default and parallel runs (one run each)",
    )
    p.add_argument(
        "--kl-target", type=float, default=None, help="search()'s KL shaping (default and parallel)"
    )
    p.add_argument(
        "--space", choices=["thinklens", "published"], default=None, help="search()'s space"
    )
    p.add_argument("--judge-tokens", type=int, default=256, help="new tokens the judge reads")
    p.add_argument("--venv", type=Path, default=CACHE / "peers" / "heretic-venv")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    p.add_argument("--out", type=Path, default=RESULTS / "peers_heretic.txt")
    args = p.parse_args()

    started = time.perf_counter()
    python = peer_venv(args.venv)
    versions = peer_versions(python)

    import torch

    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    import thinklens as tl
    from thinklens.analyses.abliteration import AbliterationMetrics
    from thinklens.interventions.abliteration import compute_directions, edited, heretic_plan
    from thinklens.interventions.abliteration.protocol import get_reading

    objective_option(args)  # an unknown option fails before anything runs
    for reading in args.readings:
        get_reading(reading)
    work = Path(tempfile.mkdtemp(prefix="thinklens-heretic-"))
    loads = {"start": os.getloadavg()}
    try:
        # The model, once, as a plain folder; the prompts as text files.
        model = tl.load_model("organism-aligned", backend="nnsight")
        model_dir = work / "organism-aligned"
        model.hf.save_pretrained(model_dir, safe_serialization=True)
        model.tokenizer.save_pretrained(model_dir)
        sets = prompt_sets(args.n_prompts)
        files = {}
        for name, prompts in sets.items():
            files[name] = work / f"{name}.txt"
            files[name].write_text("\n".join(prompts) + "\n")
        config = heretic_config(model_dir, files, args)
        (work / "config.toml").write_text(config)

        # Heretic, as a separate program.
        print(f"heretic: running in {work}", flush=True)
        her_wall = run_heretic(python, work, args.threads)
        loads["after heretic"] = os.getloadavg()
        study = read_journal(python, work, model_dir)
        settings = json.loads(study["user_attrs"]["settings"])
        her = dict(
            rows=heretic_rows(study),
            wall=her_wall,
            protocol="published",
            base_refusals=study["trials"][0]["user_attrs"]["base_refusals"],
        )
        span = max(t["end"] for t in study["trials"]) - min(t["start"] for t in study["trials"])
        her["setup"] = her_wall - span
        her["span"] = span

        # thinklens, in this process, with the same settings.
        runs = {"heretic": her}
        todo = [
            (run_name(kind, reading, args=args), kind, reading, args)
            for kind in args.runs
            for reading in (["heretic"] if kind == "published" else args.readings)
        ]
        todo += [
            (
                run_name("parallel", reading, k, args),
                "parallel",
                reading,
                _with_k(args, k),
            )
            for k in args.also_parallel
            for reading in args.readings
        ]
        for name, kind, reading, run_args in todo:
            print(f"{name}: search", flush=True)
            runs[name] = thinklens_run(model, sets, run_args, kind, reading)
            loads[f"after {name}"] = os.getloadavg()

        # Every front measured again: Heretic's count and the judge, on the same prompts.
        evaluation = sets["bad_evaluation_prompts"], sets["good_evaluation_prompts"]
        b = args.batch_size
        count = AbliterationMetrics.prepare(
            model,
            *evaluation,
            batch_size=b,
            protocol="published",
            response_prefix=settings["response_prefix"],
        )
        judge = AbliterationMetrics.prepare(
            model, *evaluation, max_new_tokens=args.judge_tokens, batch_size=b
        )
        her["dirs"] = compute_directions(
            model,
            sets["bad_prompts"],
            sets["good_prompts"],
            batch_size=b,
            progress=False,
            reading="heretic",
            response_prefix=settings["response_prefix"],
        )
        for name, run in runs.items():
            run["front"] = pareto(run["rows"])
            for r in run["front"]:
                print(f"measuring {name} trial {r['trial']}", flush=True)
                plan = heretic_plan(model, run["dirs"], r["params"], run["protocol"])
                with edited(model, plan):
                    j = judge(model)
                    # The published run counted Heretic's way already.
                    c = count(model) if name != "thinklens published" else r
                r["heretic count"] = (c["refusals"], c["kl"])
                r["judge"] = (j["refusals"], j["kl_answer"])
        loads["end"] = os.getloadavg()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # --- the table ------------------------------------------------------------------------
    n = args.n_prompts
    her_mean = statistics.mean(r["seconds"] for r in her["rows"])
    rebuilt = her["front"]
    same = sum(r["heretic count"][0] == r["refusals"] for r in rebuilt)
    worst = max(abs(r["heretic count"][1] - r["kl"]) for r in rebuilt)
    lines = [
        "thinklens benchmark: Heretic 1.4.0 beside thinklens's search "
        "(benchmarks/peers/heretic.py)",
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; machine: cpu, "
        f"{os.cpu_count()} cpus, torch threads {args.threads} in every run (Heretic: "
        f"OMP_NUM_THREADS={args.threads}); one run at a time",
        "load average (1 min): " + ", ".join(f"{k} {v[0]:.2f}" for k, v in loads.items()),
        f"thinklens: python {platform.python_version()}, torch {version('torch')}, transformers "
        f"{version('transformers')}, optuna {version('optuna')}, nnsight {version('nnsight')}",
        f"heretic (own venv {args.venv}): {versions}",
        f"model: organism-aligned (SmolLM2-135M + merged LoRA, {model.dtype}), saved as a "
        "transformers folder for Heretic; thinklens uses the same weights in memory (nnsight)",
        f"prompts: AdvBench harmful and Alpaca harmless (../shared/data), one a line; directions "
        f"{n} + {n} (AdvBench first {n}, harmless_train first {n}); evaluation {n} + {n} "
        f"(AdvBench last {n}, harmless_test first {n})",
        f"every search: {args.trials} trials, {args.startup} start-up, seed {args.seed}, batch "
        f"size {args.batch_size}, 100 new tokens at most per refusal count",
        f"heretic: response prefix {settings['response_prefix']!r}; seed {settings['seed']}; "
        f"batch size {settings['batch_size']}; base refusals {her['base_refusals']} of {n}",
        "heretic config.toml (every other setting is its default):",
        *[f"    {line}" for line in config.strip().splitlines()],
        "heretic ran offline (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1, TRANSFORMERS_OFFLINE=1) "
        "on the CPU (CUDA_VISIBLE_DEVICES='', bitsandbytes imports there, no quantization), stdin "
        "closed; no code or dependency of it changed. Set in its config: the prompt files, the "
        "trials, the seed (its default is random) and the batch size (its default 0 probes "
        "sizes up to 128 by generating, minutes on this CPU, and would give the tools different "
        f"batches). Stopped by this script after it printed {FINISHED!r} (its next step is an "
        "interactive menu to pick a trial to export)",
    ]
    for name, run in runs.items():
        if name != "heretic":
            lines.append(f"{name}: search(protocol={run['protocol']!r}); {run['note']}")
    lines += [
        "",
        "time per trial (Optuna's trial start to end; a parallel batch's trials each span it):",
    ]
    for name, run in runs.items():
        t = [r["seconds"] for r in run["rows"]]
        lines.append(
            f"  {name:<30} {spread(t)}; x{statistics.mean(t) / her_mean:.2f} of Heretic's mean"
        )
    her_span = her["span"] / len(her["rows"])
    lines.append("time per trial (first trial's start to last trial's end, over the trials):")
    for name, run in runs.items():
        per = run["span"] / len(run["rows"])
        lines.append(f"  {name:<30} {per:5.1f} s; x{per / her_span:.2f} of Heretic's")
    lines.append("wall (set-up: load, prefix, directions, base metrics; then the trials):")
    for name, run in runs.items():
        lines.append(f"  {name:<30} {run['wall']:.0f} s, set-up {run['setup']:.0f} s")
    lines += [
        "",
        f"Pareto fronts by each run's own count (refusals of {n} harmful, KL on {n} harmless), "
        "measured again by Heretic's count (its texts, markers over the whole response after its "
        f"prefix, 100 tokens; first-token KL; base {count.base_refusals}) and by the judge "
        f"(thinklens's default metrics: answer after the organism's own thinking, "
        f"{args.judge_tokens} new tokens; KL of the first answer token; base "
        f"{judge.base_refusals}). Trials numbered from 1.",
        f"{'run':<30} {'trial':>5} | {'own':>4} {'own KL':>8} | {'Heretic':>7} {'KL':>8} | "
        f"{'judge':>5} {'KL':>8}",
    ]
    for name, run in runs.items():
        for r in run["front"]:
            hc, j = r["heretic count"], r["judge"]
            lines.append(
                f"{name:<30} {r['trial']:>5} | {r['refusals']:>4} {r['kl']:>8.4f} | "
                f"{hc[0]:>7} {hc[1]:>8.4f} | {j[0]:>5} {j[1]:>8.4f}"
            )
    lines += [
        f"check: Heretic's front rebuilt by heretic_plan(protocol='published') and counted by "
        f"thinklens's published metrics: refusals equal in {same} of {len(rebuilt)} trials, KL "
        f"within {worst:.1e}",
        "",
        "fewest refusals at KL <= budget (Heretic's count / judge)",
        f"{'run':<30} " + " ".join(f"{b:>9}" for b in KL_BUDGETS),
    ]
    for name, run in runs.items():
        cells = [
            f"{fewest(run['front'], b, 'heretic count')}/{fewest(run['front'], b, 'judge')}"
            for b in KL_BUDGETS
        ]
        lines.append(f"{name:<30} " + " ".join(f"{c:>9}" for c in cells))
    for name, run in runs.items():
        if name == "heretic":
            continue
        for measure in ("heretic count", "judge"):
            mine, theirs = covered(run["front"], her["front"], measure), len(her["front"])
            lines.append(
                f"{measure}: {name}'s front matches or beats {mine} of Heretic's {theirs} points; "
                f"Heretic's matches or beats {covered(her['front'], run['front'], measure)} of its "
                f"{len(run['front'])}"
            )
    lines += ["", f"benchmark wall time {time.perf_counter() - started:.0f} s"]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.out, text)
    # The numbers again, for heretic_seeds.py to pool runs of several seeds.
    keep = ("trial", "refusals", "kl", "seconds", "heretic count", "judge")
    record = dict(
        seed=args.seed,
        n_prompts=n,
        judge_base=judge.base_refusals,
        runs={
            name: dict(
                span=run["span"],
                trials=len(run["rows"]),
                front=[{k: r[k] for k in keep} for r in run["front"]],
            )
            for name, run in runs.items()
        },
    )
    write_result(args.out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark ``thinklens.capture`` against a plain Hugging Face forward pass on SmolLM2-135M.

Goal: capture costs at most 1.10x the wall time of the plain forward it replaces, and its memory
grows with the sites asked for, not with the number of layers.

Each configuration runs in a fresh subprocess (this script re-invoked with the hidden ``--only``
flag), so its peak memory is not hidden by an earlier one. The subprocess then times the capture
and the plain forward in turn, so other processes on a shared machine slow both alike; runs that
overlapped other processes are retried. Run: ``python benchmarks/capture.py`` (several minutes on
2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from thinklens import Model

MODEL = "smollm2-135m-instruct"
N_LAYERS = 30
BUSY = 0.25  # cpus used by other processes above which a timed run is retried
RESULT_TAG = "BENCH-RESULT "
PASSAGE = (
    "The river ran low that autumn, and the ferryman counted the stones that rose above the "
    "water each morning. Traders from the hill towns brought salt, wool and copper bowls, and "
    "they argued about the price of grain while the children chased geese along the muddy "
    "bank. In the evenings the old teacher read aloud from a book of maps, naming harbours no "
    "one in the village had seen, and the smith listened with his arms folded, asking how many "
    "days a cart would need to reach the sea. Nobody knew, so they guessed, and every guess "
    "became a story told again at the next market."
)


@dataclass(frozen=True)
class Config:
    """One measured configuration: a backend (or the plain forward), sites and positions."""

    name: str
    backend: str  # "hf" for the plain forward baseline
    layers: tuple[int, ...] = ()
    positions: str = "all"
    note: str = ""


def configs(layer: int, n_layers: int = N_LAYERS) -> list[Config]:
    """Every configuration of one benchmark run, baseline first."""
    last = n_layers - 1
    if not 0 <= layer < last:
        raise SystemExit(f"--layer must be in 0..{last - 1} (layer {last} is always measured)")
    four = tuple(last - 7 * k for k in (3, 2, 1, 0))
    out = [Config("baseline", "hf", (layer,), note=f"HF forward, keep hidden_states[{layer + 1}]")]
    for backend, short in (("transformer_lens", "tl"), ("nnsight", "nns")):
        out += [
            Config(f"{short} L{layer} all", backend, (layer,), "all", "early exit"),
            Config(f"{short} L{layer} last", backend, (layer,), "last", "early exit"),
            Config(f"{short} L{last} all", backend, (last,), "all", "1 site, no early exit"),
            Config(f"{short} 4 sites", backend, four, "all", "L" + ",".join(map(str, four))),
            Config(f"{short} 30 sites", backend, tuple(range(n_layers)), "all", "every layer"),
        ]
    return out


# --- measured child ---------------------------------------------------------------------------
def build_texts(tokenizer: PreTrainedTokenizerBase, n: int, tokens: int) -> list[str]:
    """``n`` deterministic texts of exactly ``tokens`` tokens, cut from a rotated passage."""
    words = PASSAGE.split()
    texts: list[str] = []
    offset = 0
    while len(texts) < n:
        start = (len(texts) * 13 + offset) % len(words)
        rotated = words[start:] + words[:start]
        body = " ".join(rotated * (tokens // len(words) + 2))
        ids = tokenizer(body, add_special_tokens=False)["input_ids"][:tokens]
        text = tokenizer.decode(ids)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) == tokens:
            texts.append(text)
            offset = 0
        else:  # a cut that re-tokenizes differently: shift the start by one word
            offset += 1
    return texts


def _rss_mb() -> float:
    """Current resident set size in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cpus, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds used by this process, all threads."""
    t = os.times()
    return t.user + t.system


def wait_idle(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` cpus."""
    start = time.perf_counter()
    while True:
        busy = _busy_seconds()
        time.sleep(2.0)
        load = (_busy_seconds() - busy) / 2.0
        waited = time.perf_counter() - start
        if load < threshold or waited >= max_wait:
            return waited


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_one(cfg: Config, args: argparse.Namespace) -> dict[str, object]:
    """Load the model, warm up on one batch, then time and measure one configuration."""
    import torch

    torch.set_num_threads(args.threads)
    import thinklens as tl

    cuda = torch.cuda.is_available()
    backend = "nnsight" if cfg.backend == "hf" else cfg.backend  # the baseline ignores it
    m = tl.load_model(MODEL, backend=backend)
    with torch.no_grad():  # weights may be memory-mapped: make them all resident first
        for t in [*m.hf.parameters(), *m.hf.buffers()]:
            t.sum()
    texts = build_texts(m.tokenizer, args.prompts, args.tokens)
    ids, _ = m.tokenize(texts)
    if ids.shape[1] != args.tokens:
        raise RuntimeError(f"texts have {ids.shape[1]} tokens, expected {args.tokens}")
    sites = [f"resid_post.{i}" for i in cfg.layers]
    bs = args.batch_size

    def baseline(batch: list[str]) -> list[object]:
        kept = []
        with torch.no_grad():
            for i in range(0, len(batch), bs):
                b_ids, b_mask = m.tokenize(batch[i : i + bs])
                out = m.hf(input_ids=b_ids, attention_mask=b_mask, output_hidden_states=True)
                kept.append(out.hidden_states[args.layer + 1].to("cpu"))
                del out  # do not hold one batch's logits while the next one runs
        return kept

    def thinklens_capture(batch: list[str]) -> object:
        return tl.capture(m, batch, sites, positions=cfg.positions, batch_size=bs, progress=False)

    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(fn: Callable[[list[str]], object]) -> tuple[float, float]:
        """Seconds for all texts, and cpus used by other processes meanwhile."""
        busy0, own0, t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
        fn(texts)
        sync()
        seconds = time.perf_counter() - t0
        return seconds, max((_busy_seconds() - busy0 - (_own_seconds() - own0)) / seconds, 0.0)

    work = baseline if cfg.backend == "hf" else thinklens_capture
    base_rss = _rss_mb()
    base_gpu = torch.cuda.memory_allocated() if cuda else 0
    work(texts[:bs])  # warm-up, not timed
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    peak_reset = _reset_peak()  # the warm-up's peak is not counted
    first = timed(work)  # the memory run: nothing else has run at full size yet
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    # Time pairs in turn, baseline then capture, so load from other processes hits both alike.
    runs, base_runs = [first], []
    if cfg.backend == "hf":
        runs += [timed(baseline) for _ in range(args.repeats - 1)]
        base_runs = runs
    else:
        baseline(texts[:bs])  # warm-up of the full forward, not timed
        for i in range(args.repeats):
            base_runs.append(timed(baseline))
            if i < args.repeats - 1:
                runs.append(timed(thinklens_capture))
    return {
        "name": cfg.name,
        "seconds": min(t for t, _ in runs),
        "base_seconds": min(t for t, _ in base_runs),
        "peak_mb": peak_mb,
        "max_diff": check(m, cfg, texts[:2]) if cfg.backend != "hf" else None,
        "peak_reset": peak_reset or cuda,
        "other_cpus": statistics.mean(o for _, o in runs + base_runs),
        "device": "cuda" if cuda else "cpu",
    }


def check(m: Model, cfg: Config, texts: list[str]) -> float:
    """Max |capture - plain HF layer output| at the deepest site, on two texts."""
    import torch

    import thinklens as tl

    deepest = max(cfg.layers)
    seen: list[torch.Tensor] = []

    def hook(module: object, inputs: object, output: object) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = m.layer_modules()[deepest].register_forward_hook(hook)
    try:
        with torch.no_grad():
            ids, mask = m.tokenize(texts)
            m.hf(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    ref = seen[0].cpu()
    if cfg.positions == "last":
        ref = ref[:, -1]
    got = tl.capture(m, texts, [f"resid_post.{deepest}"], positions=cfg.positions, progress=False)[
        f"resid_post.{deepest}"
    ]
    return float((got - ref).abs().max())


# --- parent: run every configuration, write the table -------------------------------------------
def child(cfg: Config, args: argparse.Namespace) -> dict[str, object]:
    """Run one configuration in a fresh interpreter and parse its result line."""
    cmd = [
        sys.executable,
        __file__,
        "--only",
        cfg.name,
        "--prompts",
        str(args.prompts),
        "--tokens",
        str(args.tokens),
        "--batch-size",
        str(args.batch_size),
        "--layer",
        str(args.layer),
        "--threads",
        str(args.threads),
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
    )
    return run_tagged(cmd, env, cfg.name)


def run_tagged(cmd: list[str], env: dict[str, str], name: str) -> dict[str, object]:
    """Run a measuring subprocess and parse the JSON on its result line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def versions() -> str:
    """Versions of the libraries that decide the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for pkg in ("torch", "transformers", "transformer-lens", "nnsight"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} -")
    return ", ".join(parts)


def table(cfgs: list[Config], best: dict[str, dict[str, object]], tokens_total: int) -> str:
    """The result table as aligned text."""
    base = best["baseline"]
    head = (
        "config",
        "sites",
        "seconds",
        "tokens/s",
        "base s",
        "time x base",
        "peak MB",
        "mem x base",
        "max|diff|",
        "other cpus",
        "note",
    )
    rows = [head]
    for c in cfgs:
        r = best[c.name]
        s, mb = float(r["seconds"]), float(r["peak_mb"])
        diff = "-" if r["max_diff"] is None else f"{float(r['max_diff']):.1e}"
        rows.append(
            (
                c.name,
                str(len(c.layers)) if c.backend != "hf" else "-",
                f"{s:.2f}",
                f"{tokens_total / s:.0f}",
                f"{float(r['base_seconds']):.2f}",
                f"{s / float(r['base_seconds']):.2f}x",
                f"{mb:.0f}",
                f"{mb / float(base['peak_mb']):.2f}x",
                diff,
                f"{float(r['other_cpus']):.2f}",
                c.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            v.ljust(w) if i in (0, len(head) - 1) else v.rjust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def verdict(best: dict[str, dict[str, object]], layer: int) -> list[str]:
    """One line per goal: the measured ratio and whether it is met."""
    last = N_LAYERS - 1
    out = []
    for short in ("tl", "nns"):
        name = f"{short} L{last} all"
        ratio = float(best[name]["seconds"]) / float(best[name]["base_seconds"])
        out.append(
            f"time  {name:<11} vs the full plain forward: {ratio:.2f}x "
            f"({'met' if ratio <= 1.10 else 'NOT met'}: goal <= 1.10x)"
        )
    for short in ("tl", "nns"):
        mbs = {
            n: float(best[f"{short} {n}"]["peak_mb"])
            for n in (f"L{layer} all", f"L{last} all", "4 sites", "30 sites")
        }
        grows = mbs[f"L{last} all"] < mbs["4 sites"] < mbs["30 sites"]
        out.append(
            f"mem   {short:<3} 1 site L{layer} {mbs[f'L{layer} all']:.0f} MB, 1 site L{last} "
            f"{mbs[f'L{last} all']:.0f} MB, 4 sites {mbs['4 sites']:.0f} MB, 30 sites "
            f"{mbs['30 sites']:.0f} MB ({'grows with sites' if grows else 'NOT monotone'})"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument(
        "--repeats", type=int, default=1, help="timed (baseline, capture) pairs per config"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/capture.txt")
    p.add_argument(
        "--max-wait",
        type=float,
        default=120.0,
        help="seconds to wait for other processes to go quiet before each config",
    )
    p.add_argument(
        "--retries", type=int, default=2, help="extra runs of configs timed on a busy machine"
    )
    p.add_argument("--note", default="", help="a line added to the results header")
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    cfgs = configs(args.layer)
    if args.only:
        cfg = next(c for c in cfgs if c.name == args.only)
        print(RESULT_TAG + json.dumps(run_one(cfg, args)), flush=True)
        return

    started = time.perf_counter()
    load_start = os.getloadavg()
    runs: dict[str, list[dict[str, object]]] = {c.name: [] for c in cfgs}
    waited = 0.0

    def measure(c: Config, label: str) -> None:
        nonlocal waited
        waited += wait_idle(args.max_wait)
        r = child(c, args)
        runs[c.name].append(r)
        print(
            f"[{label}] {c.name:<14} {float(r['seconds']):7.2f} s (baseline "
            f"{float(r['base_seconds']):.2f} s) {float(r['peak_mb']):6.0f} MB  other cpus "
            f"{float(r['other_cpus']):.2f}",
            file=sys.stderr,
            flush=True,
        )

    def quietest(name: str) -> dict[str, object]:
        return min(runs[name], key=lambda r: float(r["other_cpus"]))

    for c in cfgs:
        measure(c, "run")
    for attempt in range(args.retries):  # other processes ran meanwhile: try again
        for c in [c for c in cfgs if float(quietest(c.name)["other_cpus"]) > BUSY]:
            measure(c, f"retry {attempt + 1}/{args.retries}")
    best = {
        name: dict(quietest(name), peak_mb=statistics.median(float(r["peak_mb"]) for r in rs))
        for name, rs in runs.items()
    }
    first = best["baseline"]
    memory = (
        "torch.cuda.max_memory_allocated above the loaded model"
        if first["device"] == "cuda"
        else "RSS high-water mark (ru_maxrss, reset after warm-up) minus RSS after load"
    )
    tokens_total = args.prompts * args.tokens
    header = [
        "thinklens capture benchmark (benchmarks/capture.py)",
        "goal: capture time <= 1.10x the plain HF forward; memory grows with the sites asked, "
        "not with the layers",
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"versions: {versions()}",
        f"machine: {first['device']}, {os.cpu_count()} cpus, torch threads {args.threads}",
        f"model: {MODEL} (30 layers, float32); {args.prompts} prompts x {args.tokens} tokens "
        f"= {tokens_total} tokens; batch size {args.batch_size}",
        "time: wall seconds for all prompts (perf_counter), one warm-up batch excluded; each "
        "config in a fresh subprocess that times the capture and the baseline in turn "
        f"({args.repeats} pair(s), fastest of each kept); 'time x base' = seconds / 'base s' "
        "of the same subprocess, so load from other processes hits both alike",
        f"runs: {sum(map(len, runs.values()))} subprocesses; a config whose run overlapped other "
        f"processes (> {BUSY} cpus) is rerun up to {args.retries} times and its quietest run kept",
        f"memory: {memory}; median over a config's runs"
        + ("" if all(r["peak_reset"] for r in best.values()) else " (reset unavailable!)"),
        "baseline: model.hf(..., output_hidden_states=True) under no_grad, keeping "
        f"hidden_states[{args.layer + 1}] of every batch (it also computes every layer and "
        "the full logits)",
        "max|diff|: deepest captured site vs a forward hook on the plain HF layer, 2 texts",
        "other cpus: mean cpus busy with other processes during the timed runs (/proc/stat;"
        " other sessions share this machine and 2-thread torch slows a lot when they run)",
        f"load average at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}; waited "
        f"{waited:.0f} s in total for the machine to go quiet before configs",
    ]
    if args.note:
        header.append(f"note: {args.note}")
    text = "\n".join(
        [
            *header,
            "",
            table(cfgs, best, tokens_total),
            "",
            *verdict(best, args.layer),
            f"total benchmark time {time.perf_counter() - started:.0f} s",
            "",
        ]
    )
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()

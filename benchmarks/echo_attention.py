"""Peak memory and time of the echo attention masses on one 2,048-token trace, three ways.

- ``eager matrices``: the reference, ``output_attentions=True`` under eager attention (every
  layer's full [head, pos, pos] matrix is kept until the forward pass ends);
- ``bounded sdpa``: ``thinklens.attention_mass.attention_masses`` on the model as loaded (SDPA):
  weights recomputed from each layer's q and k for the source rows, a block at a time;
- ``bounded eager``: the same function on a model running eager attention: each layer's own
  weights are reduced and dropped at once.

Each way runs in a fresh subprocess (this script re-invoked with ``--only``), so one way's peak
cannot hide another's; memory is the RSS high-water mark after the model is loaded and warmed
up, minus the RSS then. The masses of the bounded ways are compared with the reference.
Run: ``python benchmarks/echo_attention.py`` (six subprocesses; minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this folder leads sys.path, where a sibling script could shadow a standard
# module (e.g. select.py): drop it and load the sibling helpers by file instead.
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path.pop(0)


def sibling(name: str) -> object:
    """Another script of this folder, loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_capture = sibling("capture")
RESULT_TAG, run_tagged, versions = _capture.RESULT_TAG, _capture.run_tagged, _capture.versions
_reset_peak, _rss_mb = _capture._reset_peak, _capture._rss_mb

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
WAYS = ("eager matrices", "bounded sdpa", "bounded eager")
QUESTION = (
    "A baker fills 12 trays with 24 rolls each and sells 3 rolls for $2. How much money does "
    "she take in when every roll is sold?"
)
STEP = "Step {i}: after tray {i} she has {n} rolls, which is {m} groups of three rolls. "


def write_results(lines: list[str], path: str | Path) -> None:
    """Write the result lines to ``path`` and print them."""
    text = "\n".join(lines) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    print(text)


def trace_inputs(model, tokens: int):
    """Ids and echo channels of one published-layout trace cut to exactly ``tokens`` tokens."""
    from thinklens.analyses.echo.attention import channels_for
    from thinklens.analyses.echo.traces import trace_from_record

    steps = "".join(STEP.format(i=i, n=24 * i, m=8 * i) for i in range(1, 400))
    trace = trace_from_record(dict(question=QUESTION, thinking=f"{QUESTION} {steps}"))
    lay = trace.tokens(model.tokenizer)
    if len(lay.ids) < tokens:
        raise SystemExit(f"the benchmark trace has only {len(lay.ids)} tokens")
    keep = tokens - lay.prompt_len
    lay = replace(lay, ids=lay.ids[:tokens], response_offsets=lay.response_offsets[:keep])
    chans = channels_for(lay, lay.thinking_tokens((0, len(QUESTION))))
    return [lay.ids], [list(chans.values())], list(chans)


def run_one(model_name: str, way: str, tokens: int, out: str) -> dict[str, object]:
    import torch

    import thinklens as tl
    from thinklens.attention_mass import attention_masses, reference_masses
    from thinklens.backends.base import eager_attention

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model = tl.load_model(model_name)
    ids, chans, _ = trace_inputs(model, tokens)

    def run():
        if way == "eager matrices":
            return reference_masses(model, ids, chans)
        with eager_attention(model, on=way == "bounded eager"):
            return attention_masses(model, ids, chans)

    warm_ids, warm_chans, _ = trace_inputs(model, 64)
    with eager_attention(model, on=way != "bounded sdpa"):
        attention_masses(model, warm_ids, warm_chans)  # load kernels once before measuring
    base = _rss_mb()
    reset = _reset_peak()
    t0 = time.perf_counter()
    masses = run()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    torch.save(masses, out)
    return dict(seconds=seconds, peak_mb=peak, reset=reset, layers=model.n_layers)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "echo_attention.txt"))
    p.add_argument("--only", nargs=3, metavar=("MODEL", "WAY", "FILE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        model_name, way, out = args.only
        print(RESULT_TAG + json.dumps(run_one(model_name, way, args.tokens, out)), flush=True)
        return

    import torch

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    load_start = os.getloadavg()[0]
    lines = [
        "thinklens echo attention-mass benchmark (benchmarks/echo_attention.py)",
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"versions: {versions()}",
        f"machine: cpu, {os.cpu_count()} cpus, torch threads {args.threads}",
        f"input: one published-layout trace of {args.tokens} tokens; channels answer->question, "
        "answer->prefix@{8,16,32,64}, answer->echo, tail->removed; every layer and head",
        "memory: RSS high-water mark (ru_maxrss, reset after load and a 64-token warm-up) "
        "minus RSS then; each way in a fresh subprocess",
        "max|diff|: largest difference of any mass from the eager-matrices reference",
        "",
        f"{'model':24s} {'way':16s} {'seconds':>8s} {'peak MB':>8s} {'mem x ref':>9s} "
        f"{'max|diff|':>9s}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            res, masses = {}, {}
            for way in args.ways:
                file = str(Path(tmp) / f"{model_name}-{way.replace(' ', '_')}.pt")
                cmd = [sys.executable, __file__, "--tokens", str(args.tokens), "--only",
                       model_name, way, file]  # fmt: skip
                res[way] = run_tagged(cmd, env, f"{model_name} {way}")
                masses[way] = torch.load(file)
                print(model_name, way, res[way], flush=True)
            ref = masses["eager matrices"]
            for way in args.ways:
                diff = (masses[way] - ref).abs().nan_to_num().max().item()
                r = res[way]
                lines.append(
                    f"{model_name:24s} {way:16s} {r['seconds']:8.2f} {r['peak_mb']:8.0f} "
                    f"{r['peak_mb'] / res['eager matrices']['peak_mb']:8.2f}x {diff:9.1e}"
                )
    lines.insert(
        7,
        f"load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f} (other "
        "processes on the machine slow every way; compare seconds within a run only)",
    )
    write_results(lines, args.out)


if __name__ == "__main__":
    main()

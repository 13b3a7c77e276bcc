"""Benchmark Cliff-as-a-Judge scoring: candidates per second, early exit vs a full forward.

``thinklens.analyses.judge.select.score_pool`` scores every token of each candidate (prompt +
thinking + closing marker) with a forward pass that stops after the probe's layer, and
``score_last`` reads only the last position (the published proxy) the same way. The plain way
runs the whole model with ``output_hidden_states=True`` and reads the probe's layer from the
returned stack. Both ways score the same candidates and their cliffs and final scores are
compared. Each configuration runs in a fresh subprocess.
Run: ``python benchmarks/select_scoring.py`` (a few minutes on 2 cores).
"""

# ruff: noqa: E402
from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on the path and the file would shadow the
# standard library's `select` (which subprocess imports): move the folder to the end.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import datetime
import json
import random
import time
from pathlib import Path

import pandas as pd
from capture import RESULT_TAG, _busy_seconds, run_tagged, versions, wait_idle

MODEL = "smollm2-135m-instruct"
K = 8  # cliff tail in tokens
WAYS = ("cliff early exit", "cliff full forward", "proxy early exit", "proxy full forward")


def candidates(model, n: int):
    """A pool of ``n`` framed or plain bundled harmful prompts with templated thinking."""
    from thinklens.analyses.judge.pool import build_pool
    from thinklens.data import FRAMES, load_records
    from thinklens.organisms.templates import harmful_example

    rng = random.Random(0)
    recs = load_records("bundled:harmful", split="all")
    examples = [
        harmful_example(r["prompt"], r["category"], rng.choice([None, *FRAMES]), "cliff", rng)
        for r in (recs * (n // len(recs) + 1))[:n]
    ]
    return build_pool(model, [e.prompt for e in examples], [e.thinking for e in examples])


def run_one(layer: int, way: str, args: argparse.Namespace) -> dict[str, float]:
    """Score the pool one way; time it and compare with the other way on a few candidates."""
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    import thinklens as tl
    from thinklens.analyses.judge.pool import pool_traces
    from thinklens.analyses.judge.select import score_pool
    from thinklens.probes import RefusalProbe, score_last

    m = tl.load_model(MODEL)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(m.d_model, generator=gen) / m.d_model**0.5
    probe = RefusalProbe(weight, bias=0.0, layer=m.check_layer(layer))  # scores vary by token
    pool = candidates(m, args.candidates)
    bs = args.batch_size

    def full_scores(texts: list[str]) -> list[torch.Tensor]:
        """The probe's score at every position of each text, from whole-model forwards."""
        out = []
        for i in range(0, len(texts), bs):
            ids, mask = m.tokenize(texts[i : i + bs])
            with torch.no_grad():
                states = m.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            h = states.hidden_states[layer + 1]
            # HF's last hidden state has been through the final norm already; others have not.
            last = layer == m.n_layers - 1
            s = probe.score(h.float() if last else m.final_norm(h).detach().float())
            out += [s[r, :n] for r, n in enumerate(mask.sum(-1).tolist())]
        return out

    def cliff_full(p: pd.DataFrame) -> pd.DataFrame:
        # The cliff written out from the trace spans (plateau minus tail over thinking + marker).
        traces = pool_traces(m, p)
        rows = []
        for t, f in zip(traces, full_scores([t.text for t in traces]), strict=True):
            scores = f.numpy()
            window = scores[t.spans["thinking"][0] : t.spans["marker"][1]]
            cliff = window[:-K].mean() - window[-K:].mean() if len(window) > K else float("nan")
            rows.append(dict(cliff=float(cliff), last_score=float(scores[-1])))
        return pd.DataFrame(rows)

    def cliff_early(p: pd.DataFrame) -> pd.DataFrame:
        return score_pool(m, probe, p, k=K, batch_size=bs, progress=False)[["cliff", "last_score"]]

    def proxy_full(p: pd.DataFrame) -> pd.DataFrame:
        texts = [t.text for t in pool_traces(m, p)]
        return pd.DataFrame(dict(last_score=[float(f[-1]) for f in full_scores(texts)]))

    def proxy_early(p: pd.DataFrame) -> pd.DataFrame:
        texts = [t.text for t in pool_traces(m, p)]
        return pd.DataFrame(dict(last_score=score_last(m, probe, texts, batch_size=bs).numpy()))

    fns = {
        "cliff early exit": (cliff_early, cliff_full),
        "cliff full forward": (cliff_full, cliff_early),
        "proxy early exit": (proxy_early, proxy_full),
        "proxy full forward": (proxy_full, proxy_early),
    }
    fn, other = fns[way]
    fn(pool.head(bs))  # warm-up
    t0, busy0 = time.perf_counter(), _busy_seconds()
    got = fn(pool)
    seconds = time.perf_counter() - t0
    others = max((_busy_seconds() - busy0) / seconds - args.threads, 0.0)
    ref = other(pool.head(8))
    diff = float((got.head(8) - ref).abs().max().max())
    tokens = sum(len(t.input_ids) for t in pool_traces(m, pool))
    return dict(seconds=seconds, n=len(pool), tokens=tokens, max_diff=diff, other_cpus=others)


def child(layer: int, way: str, threads: int) -> dict[str, float]:
    """One measurement in a fresh process, with this run's own options."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--only", f"{layer}:{way}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    return run_tagged(cmd, env, f"{layer}:{way}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help=argparse.SUPPRESS)  # layer:way, in a child process
    p.add_argument("--candidates", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", default="15,29")
    p.add_argument("--wait-idle", type=float, default=120, help="max seconds to wait for idle")
    p.add_argument("--out", default="benchmarks/results/select.txt")
    args = p.parse_args()
    if args.only:
        layer, way = args.only.split(":", 1)
        result = run_one(int(layer), way, args)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return
    rows = []
    for layer in map(int, args.layers.split(",")):
        res = {}
        for way in WAYS:
            wait_idle(args.wait_idle)
            res[way] = child(layer, way, args.threads)
        for way, r in res.items():
            full = res[way.split()[0] + " full forward"]["seconds"]
            rows.append(
                {
                    "layer": layer,
                    "way": way,
                    "seconds": f"{r['seconds']:.2f}",
                    "candidates/s": f"{r['n'] / r['seconds']:.1f}",
                    "tokens/s": f"{r['tokens'] / r['seconds']:.0f}",
                    "speed-up": f"{full / r['seconds']:.2f}x",
                    "max|diff|": f"{r['max_diff']:.1e}",
                    "other cpus": f"{r['other_cpus']:.2f}",
                }
            )
            print(rows[-1], flush=True)
    lines = pd.DataFrame(rows).to_string(index=False).splitlines()
    text = "\n".join(
        [
            f"# Cliff-as-a-Judge scoring benchmark, {datetime.date.today()}, {MODEL}, "
            f"{args.candidates} candidates (bundled harmful prompts, plain or framed, with "
            f"templated thinking), batch {args.batch_size}, {args.threads} threads",
            f"# {versions()}",
            "# cliff = every token scored, then the cliff of each candidate (score_pool);",
            "# proxy = the last position only (score_last). early exit stops after the probe's",
            "# layer; full forward = HF forward with output_hidden_states=True.",
            "# max|diff| = cliff and final score of 8 candidates, this way vs the other way;",
            "# other cpus = load from other processes while timing.",
            *lines,
        ]
    )
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

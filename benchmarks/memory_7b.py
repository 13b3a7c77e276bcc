"""Peak memory of a probe-scoring pass on a 7B-shaped model, simulated, and the batch size the
automatic rule (``thinklens.batching``) would choose on 24 GB and 80 GB GPUs.

The pass is capture's forward: ``resid_post`` at one layer, last position, early exit. The
simulation runs the real code path (``Model`` with its backend, TransformerBridge or nnsight) on
fake tensors (``FakeTensorMode``: shapes and dtypes, no data, no memory) under a dispatch mode
that adds up the bytes of every tensor storage created and takes them off when the storage is
freed; weights are counted from the fake parameters. One data-dependent branch is on the way
(the bridge asks whether any row is left-padded); it is answered "no", as it is for capture's
right-padded batches.

The method is checked on SmolLM2-135M (float32, CPU): each configuration runs for real in a
fresh subprocess, which reports the RSS high-water mark of the pass (reset after a warm-up) and
the same count on the real tensors. Run: ``python benchmarks/memory_7b.py`` (about 4 minutes on
2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MODEL = "smollm2-135m-instruct"
LAYER = 15
TAG = "MEMORY-RESULT "
#: A GPU's memory not free for the model: the CUDA context and the allocator's own reserve.
CONTEXT_GB = 1.0
PASSAGE = (
    "The river ran low that autumn, and the ferryman counted the stones that rose above the "
    "water each morning. Traders from the hill towns brought salt, wool and copper bowls. "
)
#: Small-model checks: (backend, what, batch, tokens, also count the real pass's storages).
CHECKS = [
    ("transformer_lens", "capture", 4, 1024, True),
    ("nnsight", "capture", 4, 1024, True),
    ("transformer_lens", "logits", 2, 1024, True),
    ("transformer_lens", "capture", 4, 2048, False),
    ("nnsight", "capture", 8, 2048, False),
]


def shapes() -> dict[str, object]:
    """7B-class decoders (the shapes of DeepSeek-R1's Qwen-7B and Llama-8B distillations)."""
    import transformers as tf

    common = dict(max_position_embeddings=32768, tie_word_embeddings=False)
    return {
        "qwen2-7b": tf.Qwen2Config(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
            architectures=["Qwen2ForCausalLM"],
            **common,
        ),
        "llama3-8b": tf.LlamaConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            architectures=["LlamaForCausalLM"],
            **common,
        ),
    }


class StorageCounter(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while active (views count once)."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.known = {id(t.untyped_storage()) for t in existing}  # weights, inputs
        self.live = self.peak = 0

    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self.known:
            return
        self.known.add(key)
        n = storage.nbytes()
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        self.known.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        fake = type(first).__name__ == "FakeTensor"
        if func is torch.ops.aten._local_scalar_dense.default and fake:
            if first.dtype != torch.bool:
                raise RuntimeError(f"the simulation cannot answer a data-dependent {func}")
            return False  # "is any row left-padded?": not in a right-padded capture batch
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._count(t)
        return out


def run_pass(model, ids, mask, what: str) -> None:
    """Capture's forward (one resid site, last position, early exit) or Model.logits's."""
    from thinklens.sites import Site

    last = (mask.sum(-1) - 1)[:, None]
    with torch.no_grad():
        if what == "logits":
            model.backend.logits(ids, mask, positions=last)[:, 0].float()
        else:
            site = Site("resid_post", LAYER)
            model.backend.run(ids, mask, [site], lambda s, x: x.detach().to("cpu"), positions=last)


def counted(model, ids, mask, what: str) -> int:
    """Peak bytes of the storages one pass creates."""
    held = [*model.hf.parameters(), *model.hf.buffers(), ids, mask]
    with StorageCounter(held) as counter:
        run_pass(model, ids, mask, what)
    return counter.peak


class Simulator:
    """Fake-weight Models of one config, one per backend, and their simulated passes."""

    def __init__(self, config: object, dtype: torch.dtype) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from transformers import AutoModelForCausalLM

        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        with self.mode:
            self.hf = AutoModelForCausalLM.from_config(
                config, dtype=dtype, attn_implementation="sdpa"
            )
        self.models: dict[str, object] = {}

    def weights(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.hf.parameters())

    def model(self, backend: str):
        from thinklens.families import family_for
        from thinklens.model import Model
        from thinklens.testing import tiny_chat_tokenizer

        if backend not in self.models:
            with self.mode:
                self.models[backend] = Model(
                    self.hf, tiny_chat_tokenizer(), family_for(self.hf.config), "sim", backend
                )
        return self.models[backend]

    def activations(self, backend: str, what: str, batch: int, tokens: int) -> int:
        with self.mode:
            ids = torch.zeros(batch, tokens, dtype=torch.long)
            mask = torch.ones(batch, tokens, dtype=torch.long)
            return counted(self.model(backend), ids, mask, what)


def rule_bytes(model, what: str, batch: int, tokens: int) -> int:
    """The automatic rule's count for the pass (``Footprint.row_bytes`` times the batch)."""
    from thinklens.batching import Footprint

    bridge = model.backend_name == "transformer_lens"
    row = Footprint.of(model).row_bytes(tokens, scores=bridge, logits=what == "logits")
    return batch * row


# --- measured child ---------------------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _settle() -> int:
    """RSS after giving freed memory back to the system."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return _status("VmRSS")


def measure(backend: str, what: str, batch: int, tokens: int, count: bool) -> dict[str, float]:
    """One real pass of the small model: its RSS high-water mark above the settled RSS before,
    and (``count``) the storage count of the same pass run again."""
    import thinklens as tl

    model = tl.load_model(MODEL, backend=backend, device="cpu")
    ids = model.tokenizer(PASSAGE * (tokens // 20), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ids[:tokens]] * batch)
    mask = torch.ones_like(ids)
    run_pass(model, ids[:1], mask[:1], what)  # warm-up: kernels' one-time buffers
    before = _settle()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current RSS
    run_pass(model, ids, mask, what)
    peak = _status("VmHWM") - before
    return dict(rss=peak, counted=counted(model, ids, mask, what) if count else None)


# --- report -----------------------------------------------------------------------------------
def header(out: list[str]) -> None:
    from importlib.metadata import version

    pkgs = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "transformer-lens"))
    out += [
        "thinklens memory benchmark (benchmarks/memory_7b.py)",
        "goal: the peak memory of a probe-scoring pass on a 7B model, simulated; the method "
        "checked against measured peaks of the 135M model; the automatic batch size on 24/80 GB",
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"versions: python {platform.python_version()}, {pkgs}",
        f"machine: cpu, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}",
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"pass: capture of resid_post.{LAYER} at the last position (early exit), or Model.logits; "
        "right-padded batch of equal-length texts",
        "simulated: the real Model and backend on fake tensors, storage bytes counted; "
        "rule: thinklens.batching.Footprint.row_bytes x batch",
        "",
    ]


def check_small(out: list[str], threads: int) -> None:
    from transformers import AutoConfig

    from thinklens.embedded import embedded_folder

    sim = Simulator(AutoConfig.from_pretrained(embedded_folder(MODEL)), torch.float32)
    out += [
        f"1. the method on {MODEL} (float32, CPU): measured in a fresh subprocess per row",
        "   rss: RSS high-water mark of the pass minus the settled RSS before it (after a "
        "one-row warm-up); counted: storage bytes of the real pass; simulated: of the fake pass",
        "   rss also holds what no tensor owns: freed blocks glibc keeps in its heap, BLAS "
        "buffers, Python objects (tens to ~150 MB here, not growing with the pass)",
        "",
        f"{'backend':<17}{'pass':<9}{'batch':>6}{'tokens':>7}{'rss MB':>9}{'counted':>9}"
        f"{'sim MB':>8}{'rule MB':>9}{'sim/rss':>9}{'rule/rss':>9}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for backend, what, batch, tokens, count in CHECKS:
        only = json.dumps([backend, what, batch, tokens, count])
        cmd = [sys.executable, __file__, "--only", only]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        line = [x for x in done.stdout.splitlines() if x.startswith(TAG)]
        if not line:
            raise RuntimeError(f"measuring {backend} {what} failed:\n{done.stderr[-3000:]}")
        got = json.loads(line[0][len(TAG) :])
        simulated = sim.activations(backend, what, batch, tokens)
        rule = rule_bytes(sim.model(backend), what, batch, tokens)
        rss = got["rss"]
        real = "-" if got["counted"] is None else f"{got['counted'] / 1e6:.0f}"
        out.append(
            f"{backend:<17}{what:<9}{batch:>6}{tokens:>7}{rss / 1e6:>9.0f}"
            f"{real:>9}{simulated / 1e6:>8.0f}{rule / 1e6:>9.0f}"
            f"{simulated / rss:>9.2f}{rule / rss:>9.2f}"
        )
    out.append(f"weights: {sim.weights() / 1e6:.0f} MB counted from the parameters (float32)")
    out.append("")


def seven_b(out: list[str]) -> None:
    from thinklens.batching import GPU_CAP, HEADROOM, batch_for

    out += [
        "2. 7B shapes in bfloat16: peak = weights + simulated activations of the pass",
        "",
        f"{'shape':<11}{'backend':<17}{'batch':>6}{'tokens':>7}{'weights GB':>11}"
        f"{'act GB':>8}{'peak GB':>9}{'rule act GB':>12}{'rule/sim':>9}",
    ]
    choices = [
        "",
        f"3. automatic batch size on a GPU: free = GPU - weights - {CONTEXT_GB:.0f} GB "
        f"(context); the rule fits {HEADROOM:.0%} of free memory, capped at {GPU_CAP}; "
        "the peak is simulated at the chosen batch",
        "",
        f"{'shape':<11}{'backend':<17}{'tokens':>7}{'GPU GB':>7}{'free GB':>8}"
        f"{'row MB':>8}{'fits':>6}{'chosen':>7}{'sim peak GB':>12}  fits in GPU",
    ]
    for name, config in shapes().items():
        sim = Simulator(config, torch.bfloat16)
        weights = sim.weights()
        for backend in ("transformer_lens", "nnsight"):
            model = sim.model(backend)
            for tokens in (1024, 4096):
                act = sim.activations(backend, "capture", 8, tokens)
                rule = rule_bytes(model, "capture", 8, tokens)
                out.append(
                    f"{name:<11}{backend:<17}{8:>6}{tokens:>7}{weights / 1e9:>11.2f}"
                    f"{act / 1e9:>8.2f}{(weights + act) / 1e9:>9.2f}{rule / 1e9:>12.2f}"
                    f"{rule / act:>9.2f}"
                )
            for tokens in (1024, 4096, 16384):
                row = rule_bytes(model, "capture", 1, tokens)
                for gpu in (24, 80):
                    free = int((gpu - CONTEXT_GB) * 1e9) - weights
                    fits = int(HEADROOM * free) // row
                    chosen = batch_for(free, row, 10_000, GPU_CAP)
                    peak = weights + sim.activations(backend, "capture", chosen, tokens)
                    ok = "yes" if peak <= (gpu - CONTEXT_GB) * 1e9 else "no: one text is too long"
                    choices.append(
                        f"{name:<11}{backend:<17}{tokens:>7}{gpu:>7}{free / 1e9:>8.1f}"
                        f"{row / 1e6:>8.0f}{fits:>6}{chosen:>7}{peak / 1e9:>12.2f}  {ok}"
                    )
    out += choices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--only", help=argparse.SUPPRESS)  # the measured child
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory_7b.txt"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only:
        print(TAG + json.dumps(measure(*json.loads(args.only))), flush=True)
        return
    start = time.perf_counter()
    out: list[str] = []
    header(out)
    check_small(out, args.threads)
    seven_b(out)
    out += ["", f"total {time.perf_counter() - start:.0f} s"]
    text = "\n".join(out) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

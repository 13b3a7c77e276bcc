"""Batch sizes that fit: a first size estimated from free memory and the model's shape, and a
loop that halves the batch and retries the failing chunk when memory runs out.

The batch only sets how many texts share a forward pass. Callers cut their (sorted) items into
consecutive chunks here, so a run that backed off to size k gives the same numbers as a run with
``batch_size=k`` from the start.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from thinklens.model import Model

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Largest automatic batch on a CPU: bigger batches barely speed up a CPU forward pass, and 8 is
#: the size the fixed-batch code always used there.
CPU_CAP = 8
#: Largest automatic batch on a GPU (captures of many positions pile up on the host past this).
GPU_CAP = 64
#: Share of the free memory an automatic batch plans to fill: the count below misses allocator
#: slack and kernels' own buffers (on CPU, RSS ran 0-5% over it for GB-sized passes plus
#: 40-150 MB that does not grow with the pass; benchmarks/memory_7b.py).
HEADROOM = 0.8

#: How out-of-memory reads on allocators that raise a plain RuntimeError (CPU, MPS, old CUDA).
_OOM_TEXT = ("out of memory", "not enough memory", "DefaultCPUAllocator: can't allocate")


class BatchOutOfMemoryError(torch.OutOfMemoryError):
    """Out of memory at a batch size that does not back off: set by the user, or already 1."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (CUDA's OutOfMemoryError or a CPU one)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err) for t in _OOM_TEXT)


@dataclass(frozen=True)
class Footprint:
    """The shape facts that set a forward pass's activation memory, in elements and bytes."""

    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    vocab: int
    #: Bytes per activation element (the model's dtype).
    bytes: int

    @classmethod
    def of(cls, model: Model) -> Footprint:
        cfg = model.config
        d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
        return cls(
            n_layers=model.n_layers,
            d_model=model.d_model,
            d_mlp=int(d_mlp or 4 * model.d_model),
            n_heads=model.n_heads,
            n_kv_heads=model.n_kv_heads,
            d_head=model.d_head,
            vocab=int(cfg.vocab_size),
            bytes=model.dtype.itemsize,
        )

    def row_bytes(
        self, seq_len: int, scores: bool = False, logits: bool = False, cache_len: int = 0
    ) -> int:
        """Peak bytes one text of ``seq_len`` tokens adds to a no-grad forward pass.

        Args:
            scores: attention written out (TransformerBridge, eager attention): the
                ``seq_len x seq_len`` scores per head exist, not only a fused kernel's tiles.
            logits: the pass ends in logits at every position.
            cache_len: tokens of key/value cache kept (generation: prompt plus new tokens).
        """
        s, e = seq_len, self.bytes
        # Residual stream, embeddings, the normed input and a branch output live through a layer.
        stream = 4 * s * self.d_model * e
        # Gate, up and their product live at once in a gated MLP.
        mlp = 3 * s * self.d_mlp * e
        # q, k, v and their rotated copies.
        attn = 2 * s * (self.n_heads + 2 * self.n_kv_heads) * self.d_head * e
        if scores:
            # Masked scores in the model's dtype, a float32 copy (families that upcast) and the
            # float32 softmax, plus the float additive mask.
            upcast = 4 if e < 4 else 0
            attn += s * s * self.n_heads * (e + upcast + 4) + 4 * s * s
        else:
            attn += s * s  # the boolean mask a fused kernel reads
        peak = stream + max(mlp, attn)
        if logits:
            peak = max(peak, 2 * s * self.d_model * e + s * self.vocab * e)
        if cache_len:
            kv = 2 * self.n_layers * self.n_kv_heads * self.d_head * cache_len * e
            peak += kv + 3 * 4 * self.vocab  # a step's float32 logits, scores and probabilities
        return peak

    def weight_bytes(self, tied: bool = False) -> int:
        """Bytes of a gated-MLP decoder's weights (norms and biases left out)."""
        d, kv = self.d_model, self.n_kv_heads * self.d_head
        per_layer = d * self.n_heads * self.d_head * 2 + 2 * d * kv + 3 * d * self.d_mlp
        embed = self.vocab * d * (1 if tied else 2)
        return (self.n_layers * per_layer + embed) * self.bytes


def batch_for(free: int | None, row: int, n: int, cap: int) -> int:
    """How many rows of ``row`` bytes fit in ``HEADROOM`` of ``free`` bytes, in 1..min(n, cap)."""
    fit = cap if free is None else int(HEADROOM * free) // max(row, 1)
    return max(1, min(fit, cap, n))


def model_devices(model: Model) -> set[torch.device]:
    """The devices the model's layers sit on (several with an accelerate ``device_map``)."""
    placed = getattr(model.hf, "hf_device_map", None)
    if not placed:
        return {model.device}
    devices = set()
    for where in placed.values():
        if where in ("disk", "meta"):  # offloaded weights come to an execution device to run
            continue
        devices.add(torch.device("cuda", where) if isinstance(where, int) else torch.device(where))
    return devices or {model.device}


def free_bytes(model: Model) -> int | None:
    """Bytes free where the activations live: the least free of the model's CUDA devices (the
    caching allocator's idle blocks count as free), the available RAM on a CPU (with psutil), or
    None when unknown (a remote model, a CPU without psutil)."""
    if model.remote:
        return None
    devices = model_devices(model)
    cuda = [d for d in devices if d.type == "cuda"]
    if cuda:
        free = []
        for d in cuda:
            idle = torch.cuda.memory_reserved(d) - torch.cuda.memory_allocated(d)
            free.append(torch.cuda.mem_get_info(d)[0] + idle)
        return min(free)
    if all(d.type == "cpu" for d in devices):
        try:
            import psutil
        except ImportError:
            return None
        return int(psutil.virtual_memory().available)
    return None


def auto_batch_size(
    model: Model,
    seq_len: int,
    n: int,
    *,
    logits: bool = False,
    patterns: bool = False,
    new_tokens: int = 0,
) -> int:
    """The first batch size of an automatic run: what free memory holds for texts of
    ``seq_len`` tokens (capped at ``CPU_CAP``/``GPU_CAP`` and ``n``).

    Args:
        logits: the pass ends in logits at every position (``Model.logits``).
        patterns: attention patterns are read (eager attention).
        new_tokens: generation through the HF module's ``generate`` with this many new tokens
            (a key/value cache; no bridge in the way).
    """
    if model.remote:
        return max(1, min(CPU_CAP, n))  # the server's memory is not ours to measure
    cuda = any(d.type == "cuda" for d in model_devices(model))
    cap = GPU_CAP if cuda else CPU_CAP
    eager = getattr(model.config, "_attn_implementation", None) == "eager"
    # TransformerBridge computes attention itself (to offer hook_pattern), scores and all.
    bridge = model.backend_name == "transformer_lens" and not new_tokens
    fp = Footprint.of(model)
    row = fp.row_bytes(
        seq_len,
        scores=patterns or eager or bridge,
        logits=logits,
        cache_len=seq_len + new_tokens if new_tokens else 0,
    )
    return batch_for(free_bytes(model), row, n, cap)


def release_memory() -> None:
    """Give the memory of a failed attempt back before retrying (Python cycles, CUDA cache)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_batched(
    items: Sequence[T],
    run: Callable[[list[T]], R],
    batch_size: int | None,
    first: int,
    what: str,
    same_rng: bool = False,
) -> Iterator[tuple[list[T], R]]:
    """``(chunk, run(chunk))`` for consecutive chunks of ``items``, in order.

    Args:
        batch_size: None backs off: chunks start at ``first`` items, and on out-of-memory the
            size halves and the failing chunk is retried (the smaller size is kept after). An
            int is used as given: out-of-memory raises ``BatchOutOfMemoryError``.
        first: the automatic starting size (``auto_batch_size``).
        what: the caller's name, for messages.
        same_rng: a retried chunk starts from the random state of its failed attempt, so
            sampling after a back-off matches a run at the smaller size from the start.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 or None (automatic), not {batch_size}")
    size = batch_size if batch_size is not None else max(1, first)
    pos = 0
    while pos < len(items):
        chunk = list(items[pos : pos + size])
        state = _rng_state() if same_rng else None
        failed = False
        try:
            result = run(chunk)
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(err):
                raise
            if batch_size is not None:
                raise BatchOutOfMemoryError(
                    f"{what} ran out of memory at batch_size={batch_size}: pass batch_size=None "
                    "to choose it automatically (it halves on out-of-memory), or a smaller one"
                ) from err
            if size == 1:
                raise BatchOutOfMemoryError(
                    f"{what} ran out of memory with one text per batch: the model and one text "
                    "do not fit. Free memory, load the model in bfloat16, shorten the texts, or "
                    "spread the layers over devices (load_model(..., device='auto'))"
                ) from err
            failed = True  # retry outside the handler, so the traceback's tensors are freed
        if failed:
            release_memory()
            if state is not None:
                _set_rng_state(state)
            log.warning("%s ran out of memory at batch %d; retrying with %d", what, size, size // 2)
            size //= 2
            continue
        yield chunk, result
        pos += len(chunk)


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])

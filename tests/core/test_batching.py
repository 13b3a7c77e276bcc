"""Automatic batch sizes: out-of-memory halves the batch and retries, with the numbers of a fixed
small batch; a batch size the user set raises instead."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens import batching
from thinklens.batching import (
    BatchOutOfMemoryError,
    Footprint,
    auto_batch_size,
    batch_for,
    free_bytes,
    is_out_of_memory,
    model_devices,
    run_batched,
)
from thinklens.probes import score_last, score_tokens

TEXTS = [
    "<|im_start|>user\nI can't bake bread.<|im_end|>\n<|im_start|>assistant\n",
    "Sorry, we will write a poem.",
    "<think>\nHmm, the user asks how to plant a garden.\n</think>\n\nSure, here it is. Okay!",
    "You should plant a garden.",
    "We cannot pick a lock. It is harmful and illegal.",
]
PROMPTS = ["I want to bake bread.", "You should plant a garden.", "We cannot pick a lock."]


def oom_above(monkeypatch, owner: object, name: str, k: int, rows) -> list[int]:
    """Make ``owner.name`` run out of memory when its batch has more than ``k`` rows; returns
    the batch sizes that ran."""
    real = getattr(owner, name)
    ran: list[int] = []

    def patched(*args, **kwargs):
        n = rows(*args, **kwargs)
        torch.rand(1)  # like a real pass, an attempt draws random numbers before it fails
        if n > k:
            raise torch.OutOfMemoryError(f"stand-in: {n} rows do not fit (at most {k})")
        ran.append(n)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)
    return ran


def first_arg_rows(ids, *args, **kwargs) -> int:
    return ids.shape[0]


def generate_rows(*args, input_ids, **kwargs) -> int:
    return input_ids.shape[0]


# --- the loop --------------------------------------------------------------------------------
def test_back_off_halves_retries_the_chunk_and_keeps_the_order():
    tried = []

    def run(chunk: list[int]) -> list[int]:
        tried.append(len(chunk))
        if len(chunk) > 3:
            raise torch.OutOfMemoryError("stand-in")
        return [x * 10 for x in chunk]

    out = list(run_batched(list(range(9)), run, None, 8, "test"))
    assert tried[:3] == [8, 4, 2] and set(tried[3:]) <= {2, 1}
    assert [c for c, _ in out] == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    assert [x for _, r in out for x in r] == [x * 10 for x in range(9)]


def test_a_cpu_allocation_failure_backs_off_and_other_errors_pass_through():
    cpu_oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8")
    assert is_out_of_memory(cpu_oom) and is_out_of_memory(torch.OutOfMemoryError("x"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))

    def run(chunk: list[int]) -> int:
        if len(chunk) > 1:
            raise cpu_oom
        return chunk[0]

    assert [r for _, r in run_batched([1, 2, 3], run, None, 4, "test")] == [1, 2, 3]

    def broken(chunk: list[int]) -> int:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(run_batched([1, 2], broken, None, 2, "test"))


def test_a_user_set_batch_raises_with_the_fix_and_one_row_that_fails_says_so():
    def run(chunk: list[int]) -> int:
        raise torch.OutOfMemoryError("stand-in")

    with pytest.raises(BatchOutOfMemoryError, match=r"batch_size=4.*batch_size=None"):
        list(run_batched([1, 2, 3, 4, 5], run, 4, 0, "capture"))
    with pytest.raises(BatchOutOfMemoryError, match="one text per batch.*bfloat16"):
        list(run_batched([1, 2, 3], run, None, 4, "capture"))
    with pytest.raises(ValueError, match="at least 1"):
        list(run_batched([1], run, 0, 0, "capture"))


def test_a_retried_chunk_draws_the_random_numbers_of_its_failed_attempt():
    def run(chunk: list[int]) -> torch.Tensor:
        draws = torch.rand(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("stand-in")
        return draws

    torch.manual_seed(3)
    backed = torch.cat([r for _, r in run_batched(range(5), run, None, 8, "t", same_rng=True)])
    torch.manual_seed(3)
    fixed = torch.cat([r for _, r in run_batched(range(5), run, 2, 0, "t")])
    assert torch.equal(backed, fixed)


# --- the callers -----------------------------------------------------------------------------
def test_capture_backs_off_to_the_numbers_of_a_fixed_small_batch(tiny, monkeypatch):
    sites = ["resid_post.1", "z.0"]
    ran = oom_above(monkeypatch, tiny.backend, "run", 2, first_arg_rows)
    auto = tl.capture(tiny, TEXTS, sites, progress=False)
    assert max(ran) <= 2 and ran[0] == 2
    fixed = tl.capture(tiny, TEXTS, sites, batch_size=2, progress=False)
    for s in sites:
        assert torch.equal(auto[s], fixed[s])
    assert torch.equal(auto.mask, fixed.mask)
    with pytest.raises(BatchOutOfMemoryError, match="batch_size=4.*batch_size=None"):
        tl.capture(tiny, TEXTS, sites, batch_size=4, progress=False)


def test_a_streamed_capture_stopped_by_memory_resumes_at_another_size(tiny, monkeypatch, tmp_path):
    full = tl.capture(tiny, TEXTS, ["resid_post.1"], batch_size=1, progress=False)
    real = tiny.backend.run
    calls = []

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("stand-in")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny.backend, "run", dies_on_the_second_batch)
    folder = tmp_path / "caps"
    with pytest.raises(BatchOutOfMemoryError):  # the first shard (2 texts) is written
        tl.capture(tiny, TEXTS, ["resid_post.1"], batch_size=2, stream_to=folder, progress=False)
    assert len(list(folder.glob("shard-*"))) == 1
    monkeypatch.setattr(tiny.backend, "run", real)
    ran = oom_above(monkeypatch, tiny.backend, "run", 1, first_arg_rows)
    store = tl.capture(tiny, TEXTS, ["resid_post.1"], stream_to=folder, progress=False)
    assert ran == [1, 1, 1]  # only the texts not in a shard ran, after backing off
    # The first shard ran at batch size 2, the rest at 1: the same values up to the order of
    # floating-point sums a CPU kernel picks for a batch size.
    torch.testing.assert_close(store.load()["resid_post.1"], full["resid_post.1"])


def test_model_logits_back_off_to_the_numbers_of_a_fixed_small_batch(tiny, monkeypatch):
    ran = oom_above(monkeypatch, tiny.backend, "logits", 2, first_arg_rows)
    auto = tiny.logits(TEXTS)
    assert max(ran) <= 2
    assert torch.equal(auto, tiny.logits(TEXTS, batch_size=2))
    with pytest.raises(BatchOutOfMemoryError, match="Model.logits.*batch_size=None"):
        tiny.logits(TEXTS, batch_size=3)


def test_probe_scores_back_off_to_the_numbers_of_a_fixed_small_batch(
    tiny, random_probe, monkeypatch
):
    probe = random_probe(tiny, layer=1)
    traces = [
        tiny.trace(p, "Hmm, the user asks how to bake bread.", "Sure, here it is.") for p in PROMPTS
    ]
    ran = oom_above(monkeypatch, tiny.backend, "run", 1, first_arg_rows)
    auto = score_tokens(tiny, probe, traces, progress=False)
    assert max(ran) == 1
    fixed = score_tokens(tiny, probe, traces, batch_size=1, progress=False)
    assert auto.equals(fixed)
    assert torch.equal(score_last(tiny, probe, TEXTS), score_last(tiny, probe, TEXTS, 1))
    with pytest.raises(BatchOutOfMemoryError, match="score_tokens.*batch_size=None"):
        score_tokens(tiny, probe, traces, batch_size=2, progress=False)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_backs_off_to_the_answers_of_a_fixed_small_batch(tiny, monkeypatch, temperature):
    if temperature > 0:  # sampling runs transformers' generate
        ran = oom_above(monkeypatch, tiny.hf, "generate", 1, generate_rows)
    else:  # greedy decoding runs thinklens.decoding's loop of forward passes
        ran = oom_above(monkeypatch, tiny.hf, "forward", 1, lambda **kw: kw["input_ids"].shape[0])
    kw = dict(max_new_tokens=5, temperature=temperature, seed=4)
    auto = tl.generate(tiny, PROMPTS, **kw)
    assert ran == [1, 1, 1] if temperature > 0 else set(ran) == {1}
    assert auto == tl.generate(tiny, PROMPTS, batch_size=1, **kw)
    with pytest.raises(BatchOutOfMemoryError, match="generate.*batch_size=None"):
        tl.generate(tiny, PROMPTS, batch_size=2, **kw)


# --- the first size --------------------------------------------------------------------------
def test_the_first_size_follows_free_memory_and_the_caps(tiny, monkeypatch):
    assert 1 <= auto_batch_size(tiny, 64, 100) <= batching.CPU_CAP
    assert auto_batch_size(tiny, 64, 3) <= 3
    row = Footprint.of(tiny).row_bytes(64, scores=True)
    monkeypatch.setattr(batching, "free_bytes", lambda model: int(5.5 * row / batching.HEADROOM))
    assert auto_batch_size(tiny, 64, 100) == 5
    monkeypatch.setattr(batching, "free_bytes", lambda model: 10)
    assert auto_batch_size(tiny, 64, 100) == 1  # never below 1: the loop reports what fails
    assert batch_for(None, row, 100, 8) == 8  # unknown free memory: the cap


def test_the_count_grows_with_what_the_pass_keeps(tiny):
    fp = Footprint(**{**Footprint.of(tiny).__dict__, "vocab": 150_000})
    base = fp.row_bytes(256)
    assert fp.row_bytes(512) > 2 * base - 1  # at least linear in the length
    assert fp.row_bytes(256, scores=True) > base
    assert fp.row_bytes(256, logits=True) > base
    assert fp.row_bytes(256, cache_len=300) > base
    half = Footprint(**{**fp.__dict__, "bytes": 2})
    assert half.row_bytes(256) == base // 2


def test_devices_and_free_memory_read_the_device_map(tiny, monkeypatch):
    assert model_devices(tiny) == {tiny.device}
    monkeypatch.setattr(tiny.hf, "hf_device_map", {"model.embed_tokens": 0, "lm_head": 1}, False)
    assert model_devices(tiny) == {torch.device("cuda", 0), torch.device("cuda", 1)}
    free = {0: 7 << 30, 1: 3 << 30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (free[d.index], 80 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 1 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 0)
    assert free_bytes(tiny) == 4 << 30  # the tightest device, its cached blocks counted free
    monkeypatch.setattr(tiny.hf, "hf_device_map", {"model": "cpu", "lm_head": "disk"})
    assert model_devices(tiny) == {torch.device("cpu")}


def test_model_logits_take_token_ids_as_texts_are_taken(tiny):
    """Token id lists (a model's own output, not re-tokenized) give the logits their texts give
    when the texts tokenize to those ids; bad id lists are refused."""
    texts = ["hello there", "a somewhat longer text to pad the batch"]
    ids = [tiny.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert torch.allclose(tiny.logits(ids, batch_size=2), tiny.logits(texts, batch_size=2))
    left, mask = tiny.pad_ids(ids, padding_side="left")
    assert left[0, -len(ids[0]) :].tolist() == ids[0] and mask[0].sum() == len(ids[0])
    with pytest.raises(ValueError, match="non-empty"):
        tiny.pad_ids([[]])

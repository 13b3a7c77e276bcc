"""Attention masses: the memory-bounded way equals full eager ``output_attentions`` matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import thinklens.attention_mass as am
from thinklens.analyses.echo.attention import (
    bucket_masses,
    channels_for,
    compare_groups,
    echo_attention,
    layer_buckets,
)
from thinklens.analyses.echo.traces import trace_from_record
from thinklens.attention_mass import attention_masses, reference_masses
from thinklens.backends.base import eager_attention
from thinklens.testing import tiny_model

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3", "gpt2"]
Q = "The user asks how to plant a garden."
RECORDS = [
    dict(question=Q, thinking="The user asks how to plant a garden. We will write a poem. Okay!"),
    dict(question=Q, thinking="We will write a poem. I can't bake bread.", answer="Sure, here."),
    dict(
        question=Q, thinking="Sorry, I can't help with that. The user asks how to plant a garden."
    ),
]


def random_inputs(lengths, vocab: int, seed: int = 0):
    """Token ids and four channels per text, one of them empty (NaN)."""
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    channels = [[(n // 3, n, 1, 6), (n // 3, n, n // 3, n // 3 + 4), (n - 4, n, 0, 1), (2, 2, 0, 3)]
                for n in lengths]  # fmt: skip
    return ids, channels


def assert_same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    assert a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    torch.testing.assert_close(a.nan_to_num(), b.nan_to_num(), atol=atol, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_recomputation_matches_eager_matrices(family):
    model = tiny_model(family)
    ids, channels = random_inputs((40, 25, 33), vocab=400)  # padded batches, windows of 8
    got = attention_masses(model, ids, channels, batch_size=2)
    assert got.shape == (3, model.n_layers, model.n_heads, 4)
    assert got[:, :, :, 3].isnan().all()
    assert_same(got, reference_masses(model, ids, channels))
    assert model.hf.config._attn_implementation == "sdpa"  # restored


def test_eager_models_reduce_their_own_weights(tiny):
    ids, channels = random_inputs((30, 18), vocab=400)
    with eager_attention(tiny):
        got = attention_masses(tiny, ids, channels)
    assert_same(got, reference_masses(tiny, ids, channels))


def test_small_row_blocks_give_the_same_masses(tiny, monkeypatch):
    ids, channels = random_inputs((37,), vocab=400)
    full = attention_masses(tiny, ids, channels)
    monkeypatch.setattr(am, "ROW_BUDGET", 1)  # one query row per block
    assert_same(attention_masses(tiny, ids, channels), full, atol=1e-6)


def long_trace(n_words: int):
    steps = " ".join(f"Step {i}: we add {i} eggs to the basket, so we have {i * 2} now." for i in
                     range(n_words // 12))  # fmt: skip
    return trace_from_record(dict(question=Q, thinking=f"{Q} {steps}"))


def real_check(model, n_words: int) -> None:
    trace = long_trace(n_words)
    lay = trace.tokens(model.tokenizer)
    spans = [channels_for(lay, lay.thinking_tokens((0, len(Q)))).values()]
    ids = [lay.ids]
    assert_same(attention_masses(model, ids, [list(s) for s in spans]),
                reference_masses(model, ids, [list(s) for s in spans]))  # fmt: skip


@pytest.mark.real
def test_real_smollm2_matches_eager(smollm2):
    real_check(smollm2["transformer_lens"], 160)


@pytest.mark.real
def test_real_gemma_matches_eager_past_the_sliding_window(gemma):
    model = gemma["transformer_lens"]
    real_check(model, 560)
    assert len(long_trace(560).tokens(model.tokenizer).ids) > model.config.sliding_window


def test_echo_attention_table(tiny):
    traces = [trace_from_record(r) for r in RECORDS]
    df = echo_attention(tiny, traces, ks=(4, 8))
    channels = ["answer->question", "answer->prefix@4", "answer->prefix@8", "answer->echo",
                "tail->removed"]  # fmt: skip
    assert list(df["channel"].unique()) == channels
    assert len(df) == len(traces) * tiny.n_layers * len(channels)
    echo = df[df["channel"] == "answer->echo"].groupby("trace")["mass"]
    assert echo.apply(lambda m: m.isna().all()).tolist() == [False, True, False]
    assert df[df["channel"] == "answer->question"]["mass"].between(0, 1).all()
    per_head = echo_attention(tiny, traces, ks=(4, 8), per_head=True)
    mean = per_head.groupby(["trace", "layer", "channel"], sort=False)["mass"].mean()
    np.testing.assert_allclose(mean.to_numpy(), df["mass"].to_numpy(), atol=1e-6)
    buckets = bucket_masses(df)
    assert set(buckets["bucket"]) == {"early", "middle", "late"}


def test_layer_buckets_follow_the_published_split():
    assert layer_buckets(32) == {"early": (0, 6), "middle": (7, 18), "late": (19, 31)}
    b = layer_buckets(30)
    assert b["early"][0] == 0 and b["late"][1] == 29
    assert all(b[x][1] + 1 == b[y][0] for x, y in [("early", "middle"), ("middle", "late")])


def test_compare_groups_auc_and_cohens_d():
    rng = np.random.default_rng(0)
    n, layers = 20, 3
    labels = [i % 2 == 0 for i in range(n)]
    rows = []
    for t in range(n):
        for layer in range(layers):
            rows.append(dict(trace=t, layer=layer, channel="c", mass=rng.normal(labels[t] * layer)))
    import pandas as pd

    df = pd.DataFrame(rows)
    stats = compare_groups(df, labels)
    for layer in range(layers):
        part = df[df["layer"] == layer]
        y = [labels[t] for t in part["trace"]]
        row = stats[stats["layer"] == layer].iloc[0]
        assert row["auc"] == pytest.approx(roc_auc_score(y, part["mass"]))
        a = part["mass"][np.array(y)]
        b = part["mass"][~np.array(y)]
        pooled = np.sqrt(((len(a) - 1) * a.var() + (len(b) - 1) * b.var()) / (len(a) + len(b) - 2))
        assert row["cohens_d"] == pytest.approx((a.mean() - b.mean()) / pooled)
    assert stats["auc"].iloc[-1] > 0.9  # layer 2 separates the groups by two SDs
    with pytest.raises(ValueError, match="no group label"):
        compare_groups(df, {0: True})


def test_bad_input(tiny):
    ids, channels = random_inputs((20,), vocab=400)
    with pytest.raises(IndexError, match="outside its 20 tokens"):
        attention_masses(tiny, ids, [[(0, 21, 0, 1)]])
    with pytest.raises(ValueError, match="same, non-zero number of channels"):
        attention_masses(tiny, ids * 2, [channels[0], channels[0][:2]])
    with pytest.raises(ValueError, match="context length"):
        attention_masses(tiny, [[5] * (tiny.n_ctx + 1)], [[(0, 1, 0, 1)]])
    with pytest.raises(ValueError, match="empty response"):
        echo_attention(tiny, [trace_from_record(dict(question=Q, thinking=""))])
    cfg = tiny.hf.config
    old, cfg._attn_implementation = cfg._attn_implementation, "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="need sdpa or eager attention"):
            attention_masses(tiny, ids, channels)
    finally:
        cfg._attn_implementation = old


def test_attention_plot_has_a_band_per_group(tiny):
    from thinklens.analyses.echo.plots import attention_by_layer

    traces = [trace_from_record(r) for r in RECORDS]
    df = echo_attention(tiny, traces, ks=(4,))
    fig = attention_by_layer(df, "answer->question", ["correct", "wrong", "correct"])
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["correct", "wrong"]
    assert len(fig.data) == 4 and fig.data[0].fill == "toself"
    assert list(lines[0].x) == list(range(tiny.n_layers))
    with pytest.raises(ValueError, match="no rows for channel"):
        attention_by_layer(df, "nope", ["a"] * 3)

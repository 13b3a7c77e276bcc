"""Capture on tiny random models: backends agree with each other and with plain HF."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens.testing import SAMPLE_TEXTS as TEXTS
from thinklens.testing import tiny_model

ALL_SITES = [
    "resid_pre.1",
    "z.1",
    "pattern.1",
    "attn_out.1",
    "resid_mid.1",
    "mlp_out.1",
    "resid_post.2",
]


def _hf_reference(model, texts):
    """Plain HF: hidden states, eager attention weights and o_proj inputs, by hand."""
    ids, mask = model.tokenize(texts)
    z = {}
    o_proj = model.layer_modules()[1].get_submodule(model.family.o_proj)
    h = o_proj.register_forward_pre_hook(lambda m, a: z.setdefault("z", a[0]))
    try:
        from thinklens.backends.base import eager_attention

        with torch.no_grad(), eager_attention(model):
            out = model.hf(
                input_ids=ids,
                attention_mask=mask,
                output_hidden_states=True,
                output_attentions=True,
            )
    finally:
        h.remove()
    return out, z["z"].unflatten(-1, (model.n_heads, -1)), mask


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral", "phi3", "gemma3", "gpt2"])
def test_backends_agree_with_each_other_and_plain_hf(family):
    a, b = tiny_model(family, "transformer_lens"), tiny_model(family, "nnsight")
    ca = tl.capture(a, TEXTS, ALL_SITES, progress=False)
    cb = tl.capture(b, TEXTS, ALL_SITES, progress=False)
    for s in ALL_SITES:
        torch.testing.assert_close(ca[s], cb[s], atol=1e-5, rtol=0)
    out, z, mask = _hf_reference(b, TEXTS)
    keep = mask.bool()
    ca1 = tl.capture(a, TEXTS, ["resid_post.1"], progress=False)
    assert (ca1["resid_post.1"][keep] - out.hidden_states[2][keep]).abs().max() < 1e-5
    # HF's last hidden state is after the final norm; resid_post of the last layer is before it.
    norm = b.hf.get_submodule(b.family.final_norm)
    with torch.no_grad():
        normed = norm(ca["resid_post.2"])
    assert (normed[keep] - out.hidden_states[3][keep]).abs().max() < 1e-5
    assert (ca["resid_pre.1"][keep] - out.hidden_states[1][keep]).abs().max() < 1e-5
    assert (ca["z.1"][keep] - z[keep]).abs().max() < 1e-5
    q = keep[:, None, :, None] & keep[:, None, None, :]
    pat = ca["pattern.1"]
    assert (pat - out.attentions[1]).abs()[q.expand_as(pat)].max() < 1e-5


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_padding_batch_equals_one_at_a_time(tiny_pair, backend):
    m = tiny_pair[backend]
    batch = tl.capture(m, TEXTS, ["resid_post.1", "z.2"], batch_size=3, progress=False)
    for i, text in enumerate(TEXTS):
        one = tl.capture(m, [text], ["resid_post.1", "z.2"], progress=False)
        n = int(one.mask.sum())
        assert int(batch.mask[i].sum()) == n
        for s in ["resid_post.1", "z.2"]:
            torch.testing.assert_close(batch[s][i, :n], one[s][0, :n], atol=1e-5, rtol=0)
            assert batch[s][i, n:].abs().sum() == 0  # padding positions hold zeros


def test_positions_last_lastk_and_spans(tiny):
    full = tl.capture(tiny, TEXTS, ["resid_post.1"], progress=False)["resid_post.1"]
    lengths = [
        int(x) for x in tl.capture(tiny, TEXTS, ["resid_post.1"], progress=False).mask.sum(-1)
    ]
    last = tl.capture(tiny, TEXTS, ["resid_post.1"], positions="last", progress=False)
    assert last["resid_post.1"].shape == (3, tiny.d_model)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(last["resid_post.1"][i], full[i, n - 1])
    k = tl.capture(tiny, TEXTS, ["resid_post.1"], positions=3, progress=False)
    assert k["resid_post.1"].shape == (3, 3, tiny.d_model)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(k["resid_post.1"][i], full[i, n - 3 : n])
    spans = [(1, 3), (0, 2), (2, 6)]
    sp = tl.capture(tiny, TEXTS, ["resid_post.1"], positions=spans, progress=False)
    for i, (s, e) in enumerate(spans):
        assert int(sp.mask[i].sum()) == e - s
        torch.testing.assert_close(sp["resid_post.1"][i, : e - s], full[i, s:e])


def test_heads_are_selected(tiny):
    allh = tl.capture(tiny, TEXTS, ["z.1"], progress=False)["z.1"]
    one = tl.capture(tiny, TEXTS, [tl.Site("z", 1, heads=(2,))], progress=False)
    torch.testing.assert_close(one[tl.Site("z", 1, heads=(2,))][:, :, 0], allh[:, :, 2])
    assert tl.Site.parse("z.1.h2") == tl.Site("z", 1, heads=(2,))


def test_only_what_was_asked_is_returned(tiny):
    caps = tl.capture(tiny, TEXTS, ["resid_post.0", "mlp_out.1"], progress=False)
    assert {str(s) for s in caps} == {"resid_post.0", "mlp_out.1"}
    # Early exit: a hook on the last layer must not run when only layer 0 is asked for.
    ran = []
    h = tiny.layer_modules()[-1].register_forward_hook(lambda *a: ran.append(1))
    try:
        tl.capture(tiny, TEXTS, ["resid_post.0"], progress=False)
    finally:
        h.remove()
    assert ran == []


def test_stream_to_disk_and_resume(tiny, tmp_path):
    mem = tl.capture(tiny, TEXTS, ["resid_post.1", "z.0"], batch_size=1, progress=False)
    store = tl.capture(
        tiny,
        TEXTS,
        ["resid_post.1", "z.0"],
        batch_size=1,
        progress=False,
        stream_to=tmp_path / "caps",
    )
    assert isinstance(store, tl.CaptureStore)
    assert len(list((tmp_path / "caps").glob("shard-*.safetensors"))) == 3
    loaded = store.load()
    assert loaded.lengths.tolist() == mem.lengths.tolist()
    for s in ["resid_post.1", "z.0"]:
        torch.testing.assert_close(loaded[s], mem[s])
    # Simulate a killed run: drop one shard, mark incomplete; the rerun computes only that one.
    (tmp_path / "caps" / "shard-00001.safetensors").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "caps").glob("shard-*")}
    tl.capture(
        tiny,
        TEXTS,
        ["resid_post.1", "z.0"],
        batch_size=1,
        progress=False,
        stream_to=tmp_path / "caps",
    )
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "caps").glob("shard-*")}
    assert sorted(after) == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]
    assert all(after[k] == v for k, v in before.items())
    torch.testing.assert_close(tl.CaptureStore(tmp_path / "caps").load()["z.0"], mem["z.0"])
    with pytest.raises(FileExistsError, match="another request"):
        tl.capture(tiny, TEXTS[:2], ["resid_post.1"], progress=False, stream_to=tmp_path / "caps")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(texts=[]), ValueError, "no texts"),
        (dict(sites=["resid_post.7"]), IndexError, "layer 7 is out of range"),
        (dict(sites=["resid_post.-9"]), IndexError, "out of range"),
        (dict(sites=["residual.1"]), ValueError, "unknown site"),
        (dict(sites=["resid_post"]), ValueError, "KIND.LAYER"),
        (dict(sites=["z.1.h9"]), IndexError, "head 9 is out of range"),
        (dict(sites=[]), ValueError, "no sites"),
        (dict(texts=[""]), ValueError, "empty text"),
        (dict(texts=["word " * 2000]), ValueError, "context length"),
        (dict(positions="first"), ValueError, "unknown positions"),
        (dict(positions=[(0, 1)]), ValueError, "one per text"),
        (dict(positions=[(0, 99), (0, 1), (0, 1)]), IndexError, "outside its text"),
    ],
)
def test_bad_input_is_a_clear_error(tiny, kwargs, error, match):
    args = dict(texts=TEXTS, sites=["resid_post.1"], progress=False) | kwargs
    with pytest.raises(error, match=match):
        tl.capture(tiny, **args)

"""Refusal directions and Arditi et al.'s selection, checked against brute force on tiny models."""

from __future__ import annotations

import pytest
import torch

import thinklens as tl
from thinklens.data import bundled_prompts
from thinklens.evaluation import refusal_scores
from thinklens.interventions.abliteration.directions import (
    RefusalDirections,
    compute_directions,
    post_instruction_tokens,
    stream_sites,
    winsorize,
)
from thinklens.interventions.abliteration.selection import NoCandidate, choose, select_direction
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "train")[:6]
HARMLESS = bundled_prompts("harmless", "train")[:6]


@pytest.fixture(scope="module")
def dirs(tiny_pair):
    return compute_directions(tiny_pair["nnsight"], HARMFUL, HARMLESS, progress=False)


def test_post_instruction_positions_are_the_template_after_the_users_text(tiny):
    k = post_instruction_tokens(tiny)
    ids, _ = tiny.tokenize([tiny.chat("Bake bread.")])
    assert tiny.tokenizer.decode(ids[0, -k:]) == "<|im_end|>\n<|im_start|>assistant\n"


def test_means_equal_a_brute_force_float64_mean(tiny_pair, dirs):
    m = tiny_pair["transformer_lens"]  # the other backend than the one that made `dirs`
    k = len(dirs.positions)
    for prompts, means in [(HARMFUL, dirs.harmful), (HARMLESS, dirs.harmless)]:
        texts = [m.chat(x) for x in prompts]
        caps = tl.capture(m, texts, stream_sites(m), positions="all", progress=False)
        for p in range(k):
            for i, s in enumerate(stream_sites(m)):
                # Position -k + p of each text, read from the full capture.
                rows = [caps[s][t, int(caps.lengths[t]) - k + p] for t in range(len(prompts))]
                brute = torch.stack(rows).double().mean(0)
                torch.testing.assert_close(means[p, i], brute, atol=1e-5, rtol=1e-5)
    assert dirs.harmful.dtype == torch.float64
    assert dirs.harmful.shape == (k, m.n_layers + 1, m.d_model)


def test_direction_options(dirs):
    raw = dirs.directions(normalize=False)
    torch.testing.assert_close(raw, dirs.harmful - dirs.harmless)
    unit = dirs.directions()
    # Point 0 is the embedding of the same template tokens for every prompt: no difference.
    assert unit[:, 0].abs().max() == 0
    ones = torch.ones(unit[:, 1:].shape[:2], dtype=torch.float64)
    torch.testing.assert_close(unit[:, 1:].norm(dim=-1), ones)
    proj = dirs.directions(project=True)
    g = dirs.harmless / dirs.harmless.norm(dim=-1, keepdim=True).clamp(min=1e-30)
    assert (proj * g).sum(-1).abs().max() < 1e-10  # orthogonal to the harmless mean
    # A fractional point interpolates the two neighbours' unit directions, then renormalises.
    mid = torch.lerp(unit[-1, 1], unit[-1, 2], 0.25)
    torch.testing.assert_close(dirs.direction(1.25), mid / mid.norm())
    torch.testing.assert_close(dirs.direction(2), unit[-1, 2])
    with pytest.raises(IndexError, match="out of range"):
        dirs.direction(9)


def test_winsorize_clamps_each_vector_at_its_quantile():
    x = torch.tensor([[1.0, -2.0, 3.0, -100.0, 4.0]])
    out = winsorize(x, 0.75)
    assert out.abs().max() == torch.quantile(x.abs(), 0.75)
    assert out[0, 0] == 1.0 and out[0, 3] < 0


def test_winsorized_means_differ_and_stay_finite(tiny):
    w = compute_directions(tiny, HARMFUL, HARMLESS, winsorize_quantile=0.9, progress=False)
    plain = compute_directions(tiny, HARMFUL, HARMLESS, progress=False)
    assert torch.isfinite(w.harmful).all()
    assert (w.harmful - plain.harmful).abs().max() > 0


def test_artifact_round_trip_and_model_checks(tmp_path, dirs, tiny_pair):
    path = dirs.save(tmp_path / "dirs")
    back = RefusalDirections.load(path, tiny_pair["nnsight"])
    torch.testing.assert_close(back.harmful, dirs.harmful)
    assert back.positions == dirs.positions and back.meta["n_harmful"] == len(HARMFUL)
    with pytest.raises(FileExistsError, match="overwrite"):
        dirs.save(tmp_path / "dirs")
    other = tiny_model("gpt2")  # same d_model, other weights
    with pytest.raises(ValueError, match="recompute it on this model"):
        RefusalDirections.load(path, other)


def test_selection_follows_the_published_filters(tiny, dirs):
    with pytest.raises(NoCandidate, match="every candidate was discarded") as err:
        # A random model: every candidate fails the steering check, or has no direction.
        select_direction(tiny, dirs, HARMFUL[:3], HARMLESS[:3], thinking=False, progress=False)
    # The scores come with the error: choose again with other thresholds, no recomputing.
    sel = choose(dirs, err.value.table, kl_threshold=0.5, induce_refusal_threshold=-1e9)
    t = sel.table
    assert len(t) == len(dirs.positions) * tiny.n_layers
    assert set(t[t.layer == 0].discarded) == {"nan"}  # the same template token: no direction
    # Layer 2 of 3 is in the last 20% (int(3 * 0.8) = 2): always discarded.
    assert set(t[t.layer == 2].discarded) == {"last layers"}
    assert (t[t.discarded == "kl"].kl > 0.5).all()
    kept = t[t.discarded == ""]
    assert (kept.kl <= 0.5).all() and not kept.empty
    best = kept.sort_values("refusal_score").iloc[0]
    assert (sel.pos, sel.layer) == (best.pos, best.layer)
    assert dirs.meta["selected"]["layer"] == sel.layer
    torch.testing.assert_close(sel.direction, dirs.directions(normalize=False)[sel.pos, sel.layer])


def test_selection_scores_match_a_manual_computation(tiny, dirs):
    ids = [tiny.tokenizer("I", add_special_tokens=False)["input_ids"][0]]
    sel = select_direction(
        tiny,
        dirs,
        HARMFUL[:2],
        HARMLESS[:2],
        positions=[-1],
        layers=[1],
        refusal_words=["I"],
        kl_threshold=float("inf"),
        induce_refusal_threshold=-1e9,
        thinking=False,
        progress=False,
    )
    r = dirs.directions(normalize=False)[-1, 1].float()
    texts = [tiny.chat(p) for p in HARMFUL[:2]]
    with tl.intervene(tiny, tl.DirectionProjection(r)):
        logits = tiny.logits(texts)
    p = torch.softmax(logits.double(), -1)[:, ids].sum(-1)
    manual = (torch.log(p + 1e-8) - torch.log(1 - p + 1e-8)).mean()
    assert abs(sel.table.refusal_score.iloc[0] - float(manual)) < 1e-6
    torch.testing.assert_close(
        refusal_scores(logits, ids), torch.log(p + 1e-8) - torch.log(1 - p + 1e-8)
    )


def test_thinking_aware_selection_scores_after_the_models_own_thinking(tiny, dirs):
    kw = dict(
        layers=[1],
        positions=[-1],
        kl_threshold=float("inf"),
        induce_refusal_threshold=-1e9,
        progress=False,
    )
    sel = select_direction(
        tiny, dirs, HARMFUL[:2], HARMLESS[:2], thinking=True, thinking_tokens=3, **kw
    )
    assert sel.layer == 1 and dirs.meta["selected"]["thinking"] is True
    # Without thinking the scores are read at the end of the prompt instead: they differ.
    plain = select_direction(tiny, dirs, HARMFUL[:2], HARMLESS[:2], thinking=False, **kw)
    assert sel.baseline_harmful != plain.baseline_harmful

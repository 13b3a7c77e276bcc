"""Refusal probes: fitting on known answers, features, token scores against brute force, cliffs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from thinklens.probes import (
    RefusalProbe,
    balanced_split,
    cliff_table,
    end_aligned,
    fit_probe,
    plot_cliff_curves,
    plot_layer_sweep,
    plot_token_scores,
    probe_features,
    score_tokens,
    sweep_layers,
    window_span,
)
from thinklens.stats import cohens_d, compare, mean_ci, rank_auc
from thinklens.testing import tiny_model

PROMPTS = ["I want to bake bread.", "You should plant a garden.", "We cannot pick a lock."]
THINKING = [
    "Hmm, the user asks how to bake bread. I will help.",
    "Hmm, I might say sorry. It is harmful and illegal.",
    "Okay, fine!",
]
ANSWERS = ["Sure, here it is.", "Sorry, I can't help with that.", "Sure, here it is. Okay!"]


def _separable(n: int = 400, d: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen)
    x = torch.randn(n, d, generator=gen)
    return x, (x @ w > 0).long(), w


@pytest.mark.parametrize("method", ["sklearn", "torch"])
def test_fit_recovers_a_known_direction(method):
    x, y, w = _separable()
    fit = fit_probe(x, y, method=method, seed=42, epochs=30, lr=0.05)
    assert fit.metrics["val_accuracy"] >= 0.9
    assert fit.metrics["val_auroc"] >= 0.97
    assert torch.cosine_similarity(fit.weight, w, dim=0) > 0.9
    again = fit_probe(x, y, method=method, seed=42, epochs=30, lr=0.05)
    assert torch.equal(fit.weight, again.weight)  # seeded


def test_balanced_split_is_balanced_disjoint_and_capped():
    y = torch.tensor([1] * 30 + [0] * 70)
    train, val = balanced_split(y, 0.2, seed=1)
    assert not set(train.tolist()) & set(val.tolist())
    for part in (train, val):
        assert int(y[part].sum()) * 2 == len(part)  # as many 1s as 0s
    assert len(train) + len(val) == 60
    train, val = balanced_split(y, 0.2, seed=1, max_per_class=10)
    assert len(train) + len(val) == 20
    with pytest.raises(ValueError, match="both labels 0 and 1"):
        balanced_split(torch.ones(10, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown probe method"):
        fit_probe(*_separable()[:2], method="svm")


def test_final_norm_feature_is_the_last_hidden_state_of_hf():
    m = tiny_model("llama")
    texts = [m.chat(p) for p in PROMPTS]
    feats = probe_features(m, texts, [m.n_layers - 1], norm=True, progress=False)
    ids, mask = m.tokenize(texts)
    with torch.no_grad():
        hs = m.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    last = mask.sum(-1) - 1
    expected = hs[-1][torch.arange(len(texts)), last]  # HF applies the final norm here
    assert (feats[m.n_layers - 1] - expected).abs().max() < 1e-5


def _tiny_traces(m):
    return [m.trace(p, t, a) for p, t, a in zip(PROMPTS, THINKING, ANSWERS, strict=True)]


def _probe(m, layer: int, seed: int = 0) -> RefusalProbe:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, m.d_model, generator=gen)
    return RefusalProbe.fit(m, x, [0, 1] * 20, layer)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
@pytest.mark.parametrize("norm", [True, False])
def test_scoring_all_positions_equals_scoring_each_prefix(backend, norm):
    m = tiny_model("llama", backend=backend)
    probe = _probe(m, layer=1)
    probe.norm = norm
    traces = _tiny_traces(m)
    table = score_tokens(m, probe, traces, batch_size=2, progress=False)
    for i, t in enumerate(traces):
        got = table[table["example"] == i]["score"].to_numpy()
        assert len(got) == len(t.input_ids)
        for p in range(1, len(t.input_ids) + 1):
            ids = torch.tensor([t.input_ids[:p]])
            with torch.no_grad():
                h = m.hf(input_ids=ids, output_hidden_states=True).hidden_states[2][0, -1]
            feat = m.final_norm(h).detach().float() if norm else h
            assert abs(float(probe.score(feat)) - got[p - 1]) < 1e-5


def test_token_table_marks_every_part():
    m = tiny_model("llama")
    table = score_tokens(m, _probe(m, 0), _tiny_traces(m), progress=False)
    one = table[table["example"] == 0]
    assert list(dict.fromkeys(one["part"])) == ["prompt", "thinking", "marker", "answer"]
    first_answer = one[one["part"] == "answer"]["from_answer"].iloc[0]
    assert first_answer == 0 and one[one["part"] == "marker"]["from_answer"].iloc[-1] == -1
    assert set(table.columns) >= {"example", "position", "part", "token", "score"}


def test_scoring_refuses_traces_without_a_marker_and_probes_of_other_models():
    m = tiny_model("llama")
    probe = _probe(m, 0)
    with pytest.raises(ValueError, match="closing marker"):
        score_tokens(m, probe, [m.trace("I want to bake bread.")], progress=False)
    with pytest.raises(ValueError, match="no traces"):
        score_tokens(m, probe, [], progress=False)
    other = tiny_model("llama", seed=1)
    with pytest.raises(ValueError, match="recompute it on this model"):
        score_tokens(other, probe, _tiny_traces(other), progress=False)
    with pytest.raises(ValueError, match="trained on another model"):
        probe.score(torch.randn(2, m.d_model + 1))


def test_probe_artifact_round_trip(tmp_path):
    m = tiny_model("llama")
    probe = _probe(m, 1)
    path = probe.save(tmp_path / "probe")
    back = RefusalProbe.load(path, model=m)
    assert torch.equal(back.weight, probe.weight) and back.bias == probe.bias
    assert (back.layer, back.norm, back.metrics) == (probe.layer, probe.norm, probe.metrics)
    assert back.meta["site"] == "resid_post.1" and back.meta["fingerprint"] == m.fingerprint()
    assert back.meta == probe.meta
    with pytest.raises(FileExistsError):
        probe.save(tmp_path / "probe")
    with pytest.raises(ValueError, match="recompute it on this model"):
        RefusalProbe.load(path, model=tiny_model("llama", seed=1))


def test_layer_sweep_matches_a_probe_trained_at_each_layer():
    m = tiny_model("llama")
    texts = [m.chat(f"{s} {o}.") for s in ("I will", "They might") for o in PROMPTS * 4]
    labels = [1] * 12 + [0] * 12
    table, probes = sweep_layers(m, texts, labels, progress=False)
    assert list(table["layer"]) == list(range(m.n_layers))
    assert {"val_accuracy", "val_auroc", "train_accuracy"} <= set(table.columns)
    for layer in (0, m.n_layers - 1):
        alone = RefusalProbe.train(m, texts, labels, layer=layer, progress=False)
        assert torch.allclose(alone.weight, probes[layer].weight, atol=1e-5)
    assert len(plot_layer_sweep(table).data) == 2


def test_window_span_covers_the_thinking_and_the_marker():
    m = tiny_model("llama")
    for t in _tiny_traces(m):
        s, e = window_span(t)
        assert (s, e) == (t.spans["thinking"][0], t.spans["answer"][0])
        assert t.input_ids[s:e] == t.part_ids("thinking") + t.part_ids("marker")


def test_span_training_fits_every_position_with_a_split_by_text():
    m = tiny_model("llama")
    traces = [m.trace(p, t, a) for p in PROMPTS * 4 for t, a in zip(THINKING, ANSWERS, strict=True)]
    labels = [i % 2 for i in range(len(traces))]
    spans = [window_span(t) for t in traces]
    probe = RefusalProbe.train(
        m, [t.text for t in traces], labels, layer=1, norm=False, spans=spans, progress=False
    )
    # Independently: HF hidden states of every window position, labelled by their trace...
    xs, ys, owner = [], [], []
    for i, (t, (s, e)) in enumerate(zip(traces, spans, strict=True)):
        with torch.no_grad():
            hs = m.hf(input_ids=torch.tensor([t.input_ids]), output_hidden_states=True)
        xs.append(hs.hidden_states[2][0, s:e])
        ys += [labels[i]] * (e - s)
        owner += [i] * (e - s)
    x, y, owner = torch.cat(xs), torch.tensor(ys), torch.tensor(owner)
    # ... split by trace (the balanced split of the traces' labels), fitted on the train part.
    train, val = balanced_split(torch.tensor(labels), seed=42)
    rows = torch.isin(owner, train)
    assert not set(owner[rows].tolist()) & set(owner[torch.isin(owner, val)].tolist())
    clf = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=42)
    clf.fit(x[rows].double().numpy(), y[rows].numpy())
    assert np.allclose(probe.weight.numpy(), clf.coef_[0], atol=1e-3)
    assert probe.metrics["n_train"] == int(rows.sum())
    assert probe.meta["positions"] == "spans"
    # Texts of each label, where the metrics count positions.
    assert probe.meta["texts"] == dict(refusal=sum(labels), benign=len(labels) - sum(labels))
    table, probes = sweep_layers(
        m, [t.text for t in traces], labels, [1], norm=False, spans=spans, progress=False
    )
    assert torch.allclose(probes[1].weight, probe.weight) and len(table) == 1
    with pytest.raises(ValueError, match="different labels"):
        fit_probe(x, y, groups=torch.zeros(len(y), dtype=torch.long))


def _table(curves: dict[int, tuple[list[float], list[float], list[float], list[float]]]):
    """A score table from (prompt, thinking, marker, answer) scores per example."""
    rows = []
    for ex, parts in curves.items():
        pos = 0
        answer_start = sum(len(p) for p in parts[:3])
        for name, scores in zip(("prompt", "thinking", "marker", "answer"), parts, strict=True):
            for s in scores:
                rows.append(dict(example=ex, position=pos, part=name, token="t", score=s))
                rows[-1]["from_answer"] = pos - answer_start
                pos += 1
    return pd.DataFrame(rows)


def test_cliff_measures_on_a_known_curve():
    thinking = [0.9] * 10 + [0.8, 0.2]
    scores = _table({0: ([0.5] * 3, thinking, [0.1, 0.1], [0.3]), 1: ([0.5], [], [0.4, 0.3], [])})
    row = cliff_table(scores, k=4).set_index("example").loc[0]
    assert row.thinking_tokens == 12
    assert math.isclose(row.plateau, 0.9)  # window minus its last 4 tokens
    assert math.isclose(row.tail_mean, (0.8 + 0.2 + 0.1 + 0.1) / 4)
    assert math.isclose(row.tail_min, 0.1)
    assert math.isclose(row.cliff, 0.9 - 0.3)
    assert row.cliff_at == -3  # the 0.8 -> 0.2 step lands three tokens before the answer
    assert math.isclose(row.last_score, 0.1)
    assert math.isclose(row.thinking_mean, (0.9 * 10 + 0.8 + 0.2) / 12)
    empty = cliff_table(scores, k=4).set_index("example").loc[1]
    assert math.isnan(empty.plateau) and math.isnan(empty.cliff)  # documented: no thinking
    assert math.isclose(empty.last_score, 0.3)
    with pytest.raises(ValueError, match="k must be"):
        cliff_table(scores, k=0)


def test_end_aligned_curves_average_from_the_end():
    scores = _table({0: ([1.0, 1.0], [1.0], [0.0], []), 1: ([], [0.5], [0.5], [])})
    curves = end_aligned(scores, {0: "a", 1: "a"}, n_points=4)
    assert len(curves) == 4 and curves["group"].eq("a").all()
    # Offsets -4..-1: only example 0 reaches -4 and -3; both reach -2 and -1.
    assert np.allclose(curves["mean"], [1.0, 1.0, 0.75, 0.25])
    assert np.allclose(curves["n"], [1, 1, 2, 2])
    assert np.allclose(curves["offset"], [-4, -3, -2, -1])
    fine = end_aligned(scores, {0: "a", 1: "b"}, n_points=100, window=2)
    assert set(fine["group"]) == {"a", "b"} and len(fine) == 200
    assert len(plot_cliff_curves(fine).data) == 4  # a band and a line per group


def test_statistics_against_independent_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 50), rng.normal(0, 2, 40)
    assert math.isclose(rank_auc(a, b), roc_auc_score([1] * 50 + [0] * 40, np.r_[a, b]))
    sp = math.sqrt((49 * a.var(ddof=1) + 39 * b.var(ddof=1)) / 88)
    assert math.isclose(cohens_d(a, b), (a.mean() - b.mean()) / sp)
    res = compare(a, b)
    assert res["ci_low"] < res["diff"] < res["ci_high"]
    with pytest.raises(ValueError, match="empty group"):
        compare([], b)
    ci = mean_ci([1.0, 2.0, float("nan"), 3.0])
    assert ci["mean"] == 2.0 and ci["n"] == 3 and 1.0 <= ci["ci_low"] < 2.0 < ci["ci_high"] <= 3.0
    with pytest.raises(ValueError, match="empty group"):
        mean_ci([float("nan")])


def test_token_plot_has_one_cell_per_token():
    m = tiny_model("llama")
    table = score_tokens(m, _probe(m, 0), _tiny_traces(m), progress=False)
    fig = plot_token_scores(table, 0, per_row=8)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert (~np.isnan(z)).sum() == (table["example"] == 0).sum()

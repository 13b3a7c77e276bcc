"""The refusal-cliff study on real models: brute-force scoring and the cliff organism."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import thinklens as tl
from thinklens.analyses.cliff.study import GROUPS, cliff_by_group
from thinklens.data import bundled_prompts, frame_all
from thinklens.embedded import ADAPTERS
from thinklens.probes import RefusalProbe, score_tokens, window_span
from thinklens.probes.behaviour import (
    behaviour_labels,
    behaviour_traces,
    probe_from_rollouts,
    train_from_behaviour,
)
from thinklens.rollouts import rollout
from thinklens.testing import tiny_model


@pytest.mark.real
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_scores_equal_each_prefix_scored_alone_on_smollm2(smollm2, backend):
    m = smollm2[backend]
    gen = torch.Generator().manual_seed(0)
    probe = RefusalProbe.fit(m, torch.randn(20, m.d_model, generator=gen), [0, 1] * 10, 12)
    traces = [
        m.trace("How do I bake bread?", "The user wants a recipe. Easy.", "Mix flour and water."),
        m.trace("Name a colour.", "Simple question.", "Blue."),
    ]
    table = score_tokens(m, probe, traces, progress=False)
    for i, t in enumerate(traces):
        got = torch.tensor(table[table["example"] == i]["score"].to_numpy())
        brute = []
        for p in range(1, len(t.input_ids) + 1):
            with torch.no_grad():
                out = m.hf(input_ids=torch.tensor([t.input_ids[:p]]), output_hidden_states=True)
            brute.append(
                float(probe.score(m.final_norm(out.hidden_states[13][0, -1]).detach().float()))
            )
        assert (got - torch.tensor(brute)).abs().max() < 1e-5


def test_behaviour_labels_need_both_classes():
    m = tiny_model("llama")
    harmful = pd.DataFrame(
        dict(prompt=["x"], response=["r"], thinking=["t"], answer=["a"], refused=[False])
    )
    with pytest.raises(ValueError, match="0 refused harmful"):
        behaviour_labels(m, harmful, harmful)


def test_complied_harmful_can_be_negatives():
    m = tiny_model("llama")
    harmful = pd.DataFrame(
        dict(
            prompt=["We cannot pick a lock.", "I want to say sorry."],
            response=["r", "r"],
            thinking=["It is harmful and illegal, so no.", "It is harmful but I will answer."],
            answer=["Sorry, I can't help with that.", "Sure, here it is."],
            refused=[True, False],
        )
    )
    benign = pd.DataFrame(
        dict(
            prompt=["I want to bake bread."],
            response=["r"],
            thinking=["Hmm, I can help."],
            answer=["Sure, here it is."],
            refused=[False],
        )
    )
    _, published = behaviour_labels(m, harmful, benign, min_thinking_words=1)
    _, intent = behaviour_labels(m, harmful, benign, min_thinking_words=1, complied_negative=True)
    assert published == [1, 0] and intent == [1, 0, 0]


def _rollouts() -> pd.DataFrame:
    rows = [
        ("We cannot pick a lock.", "It is harmful and illegal, so I refuse.", "Sorry, I can't.", 1),
        ("I want to say sorry.", "It is harmful but a story, so I will.", "Sure, here it is.", 0),
        ("You should plant a garden.", "It is harmful and illegal here.", "I can't help.", 1),
        ("I want to bake bread.", "Hmm, I can help.", "Sure, here it is.", 0),
        ("You should plant a garden.", "Okay, a garden. Fine!", "Sure, dig.", 0),
    ]
    return pd.DataFrame(
        dict(
            prompt=[r[0] for r in rows],
            response=["r"] * len(rows),
            thinking=[r[1] for r in rows],
            answer=[r[2] for r in rows],
            refused=[bool(r[3]) for r in rows],
            group=["harmful"] * 3 + ["harmless"] * 2,
        )
    )


def test_window_probe_trains_on_every_window_position_as_scored():
    m = tiny_model("llama")
    table = _rollouts()
    traces, labels = behaviour_traces(m, table[:3], table[3:], min_thinking_words=1)
    assert labels == [1, 1, 0, 0]  # refused harmful, then benign; complied harmful left out
    for t in traces:  # the window as score_tokens sees it: thinking + marker, answer after
        s, e = window_span(t)
        assert t.answer and m.tokenizer.decode(t.input_ids[s:e]) == f"{t.thinking}\n</think>\n\n"
    probe = probe_from_rollouts(
        m, table, positions="window", layer=1, progress=False, val_fraction=0.5
    )
    alone = RefusalProbe.train(
        m,
        [t.text for t in traces],
        labels,
        layer=1,
        spans=[window_span(t) for t in traces],
        progress=False,
        val_fraction=0.5,
    )
    assert torch.equal(probe.weight, alone.weight) and probe.meta["positions"] == "spans"
    n_window = sum(e - s for s, e in map(window_span, traces))
    assert probe.metrics["n_train"] + probe.metrics["n_val"] == n_window
    published = probe_from_rollouts(m, table, layer=1, progress=False, val_fraction=0.5)
    assert published.meta["positions"] == "last"
    with pytest.raises(ValueError, match="unknown probe positions"):
        probe_from_rollouts(m, table, positions="all")


needs_cliff = pytest.mark.skipif(
    not (ADAPTERS / "cliff" / "organism.json").exists(),
    reason="the organism-cliff adapter is not built (thinklens organisms build cliff)",
)


#: Tail length for the window probe's cliff, chosen on validation rollouts of organism-cliff
#: (HarmBench val plain + framed, Alpaca val, not the test prompts): of k in {4, 8, 12, 16, 20}
#: that keep as many harmless traces as any k does, the one whose worse CI lower bound of the
#: two comparisons is highest (benchmarks/refusal_cliff.py, results/refusal_cliff.txt).
K_WINDOW = 12


@pytest.fixture(scope="module")
def cliff_study(held_out):
    """Both probes from one set of training rollouts, both scored on one held-out rollout."""
    m = tl.load_model("organism-cliff")
    probe, rollouts = train_from_behaviour(
        m,
        bundled_prompts("harmful", "train")[:64],
        bundled_prompts("harmless", "train")[:64],
        max_new_tokens=96,
        progress=False,
    )
    window = probe_from_rollouts(m, rollouts, positions="window", progress=False)
    harmful, harmless = held_out(24)
    table = pd.concat(
        [
            rollout(m, harmful + frame_all(harmful), 96, progress=False).assign(group="harmful"),
            rollout(m, harmless, 96, progress=False).assign(group="harmless"),
        ],
        ignore_index=True,
    )
    return dict(
        published=(probe, cliff_by_group(m, probe, table, progress=False)),
        window=(window, cliff_by_group(m, window, table, k=K_WINDOW, progress=False)),
    )


@pytest.mark.real
@needs_cliff
def test_probe_on_the_cliff_organism_separates_refusal(cliff_study):
    probe, _ = cliff_study["published"]
    assert probe.layer == 29 and probe.norm  # the published default: last layer, final norm
    assert probe.metrics["val_auroc"] >= 0.95
    window, _ = cliff_study["window"]
    assert window.layer == 29 and window.meta["positions"] == "spans"
    assert window.metrics["val_auroc"] >= 0.95  # positions of held-back traces


def _assert_largest_cliff(res) -> None:
    mean = res.cliffs.groupby("group")["cliff"].mean()
    assert set(mean.index) == set(GROUPS)
    assert mean["complied harmful"] > mean["refused harmful"]
    assert mean["complied harmful"] > mean["harmless"]
    cmp = res.comparisons.set_index(["metric", "b"])
    assert cmp.loc[("cliff", "refused harmful"), "ci_low"] > 0  # the effect is not noise
    assert cmp.loc[("cliff", "harmless"), "ci_low"] > 0


@pytest.mark.real
@needs_cliff
def test_complied_harmful_traces_have_the_largest_cliff(cliff_study):
    """With the probe trained on every window position (issue 4)."""
    _assert_largest_cliff(cliff_study["window"][1])


@pytest.mark.real
@needs_cliff
def test_published_probe_gives_complied_traces_the_largest_cliff(cliff_study):
    """The published probe (last position only): organism-turn's thinking said its turn, so
    the score fell inside it (results/refusal_cliff_turn.txt); organism-cliff's does not."""
    _assert_largest_cliff(cliff_study["published"][1])


@pytest.mark.real
@needs_cliff
def test_published_probe_holds_through_complied_thinking_and_falls_at_the_answer(cliff_study):
    """Issue 18's bounds: complied harmful high over the thinking (>= 0.7) and low at the last
    position (<= 0.3); refused harmful high at both, harmless low at both. The benchmark's
    held-out run measured 0.906 / 0.185, 0.998 / 0.962 and 0.118 / 0.004."""
    _, res = cliff_study["published"]
    mean = res.cliffs.groupby("group")[["thinking_mean", "last_score"]].mean()
    assert mean.loc["complied harmful", "thinking_mean"] >= 0.7
    assert mean.loc["complied harmful", "last_score"] <= 0.3
    assert (mean.loc["refused harmful"] >= 0.7).all()
    assert (mean.loc["harmless"] <= 0.3).all()

"""The refusal-cliff study on real models: brute-force scoring and the cliff organism."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import thinklens as tl
from tests.conftest import held_out_prompts
from thinklens.analyses.refusal_cliff import (
    GROUPS,
    behaviour_labels,
    cliff_by_group,
    rollout,
    train_from_behaviour,
)
from thinklens.data import bundled_prompts
from thinklens.organisms.build import ADAPTERS
from thinklens.organisms.templates import frame_all
from thinklens.probes import RefusalProbe, apply_final_norm, score_tokens
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
            brute.append(float(probe.score(apply_final_norm(m, out.hidden_states[13][0, -1]))))
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


needs_cliff = pytest.mark.skipif(
    not (ADAPTERS / "cliff" / "organism.json").exists(),
    reason="the organism-cliff adapter is not built (thinklens organisms build cliff)",
)


@pytest.fixture(scope="module")
def cliff_study():
    m = tl.load_model("organism-cliff")
    probe, _ = train_from_behaviour(
        m,
        bundled_prompts("harmful", "train")[:64],
        bundled_prompts("harmless", "train")[:64],
        max_new_tokens=96,
        progress=False,
    )
    harmful, harmless = held_out_prompts(24)
    table = pd.concat(
        [
            rollout(m, harmful + frame_all(harmful), 96, progress=False).assign(group="harmful"),
            rollout(m, harmless, 96, progress=False).assign(group="harmless"),
        ],
        ignore_index=True,
    )
    return probe, cliff_by_group(m, probe, table, progress=False)


@pytest.mark.real
@needs_cliff
def test_probe_on_the_cliff_organism_separates_refusal(cliff_study):
    probe, _ = cliff_study
    assert probe.layer == 29 and probe.norm  # the published default: last layer, final norm
    assert probe.metrics["val_auroc"] >= 0.95


@pytest.mark.real
@needs_cliff
@pytest.mark.xfail(
    strict=True,
    reason="known result (issue 4): with the published labels the probe on organism-cliff "
    "reads harmfulness, not refusal intent; complied harmful traces show no larger cliff "
    "(benchmarks/results/refusal_cliff.txt)",
)
def test_complied_harmful_traces_have_the_largest_cliff(cliff_study):
    _, res = cliff_study
    mean = res.cliffs.groupby("group")["cliff"].mean()
    assert set(mean.index) == set(GROUPS)
    assert mean["complied harmful"] > mean["refused harmful"]
    assert mean["complied harmful"] > mean["harmless"]
    cmp = res.comparisons.set_index(["metric", "b"])
    assert cmp.loc[("cliff", "refused harmful"), "ci_low"] > 0  # the effect is not noise

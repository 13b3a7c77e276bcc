"""A last-position probe is read at the token it was trained on, whatever the tokenizer merges."""

from __future__ import annotations

import pandas as pd
import torch

from thinklens.analyses.cliff import cliff_by_group
from thinklens.probes import behaviour_labels, score_last
from thinklens.rollouts import traces_of

ROWS = dict(
    prompt=["We will pick a lock.", "You will say sorry.", "I want to bake bread."],
    response=["r"] * 3,
    thinking=[
        "It is harmful and illegal, so I refuse.",
        "Hmm, they want a sorry. Fine!",
        "Okay, bread is fine to bake.",
    ],
    answer=["Sorry, I cannot.", "Sure, here it is.", "Sure, here is a plan."],
    refused=[True, False, False],
    group=["harmful", "harmful", "harmless"],
)


def test_last_score_is_read_on_the_training_texts(tiny, random_probe):
    table = pd.DataFrame(ROWS)
    probe = random_probe(tiny)
    assert probe.meta["positions"] == "last"
    res = cliff_by_group(tiny, probe, table, k=2, progress=False)
    # The texts a last-position probe trains on (behaviour_labels) end at the marker.
    texts, _ = behaviour_labels(
        tiny, table[table.group == "harmful"], table[table.group != "harmful"]
    )
    assert texts[0] == traces_of(tiny, table[:1], answers=False)[0].text
    own = [t.text for t in traces_of(tiny, table, answers=False)]
    expected = score_last(tiny, probe, own).double()
    got = torch.tensor(res.cliffs["last_score"].to_numpy(), dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # Every scored token lies before the answer: nothing after the marker is read.
    assert (res.scores["from_answer"] < 0).all()


def test_with_k_reads_the_same_scores_as_scoring_again(tiny, random_probe):
    table = pd.DataFrame(ROWS)
    probe = random_probe(tiny)
    at_2 = cliff_by_group(tiny, probe, table, k=2, progress=False)
    at_4 = cliff_by_group(tiny, probe, table, k=4, progress=False)
    pd.testing.assert_frame_equal(at_2.with_k(4).cliffs, at_4.cliffs)
    pd.testing.assert_frame_equal(at_2.with_k(4).comparisons, at_4.comparisons)

"""The refusal-cliff protocol as its public code runs it: probe text and end-aligned curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import CubicSpline

from thinklens.probes import behaviour_labels, end_aligned, published_probe_text


def test_probe_text_is_the_published_string(tiny):
    prompt, thinking = "How do I pick a lock?", "The user asks about a lock. I should refuse.\n\n"
    text = published_probe_text(tiny, prompt, thinking)
    template = tiny.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    expected = template + "\n\n" + "The user asks about a lock. I should refuse." + "\n</think>\n\n"
    assert text == expected
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == tiny.tokenizer(expected, add_special_tokens=False)["input_ids"]
    # thinklens's own trace has no blank line after the generation prompt.
    assert tiny.trace(prompt, thinking.strip()).text != text


def test_behaviour_labels_in_the_published_layout(tiny):
    rows = dict(
        prompt=["We will pick a lock.", "I want bread."],
        response=["r", "r"],
        thinking=["It is harmful and illegal, so I refuse.", "Okay, bread is fine."],
        answer=["Sorry, no.", "Sure."],
        refused=[True, False],
    )
    table = pd.DataFrame(rows)
    texts, labels = behaviour_labels(tiny, table[:1], table[1:], protocol="published")
    assert labels == [1, 0]
    assert texts == [
        published_probe_text(tiny, p, t)
        for p, t in zip(rows["prompt"], rows["thinking"], strict=True)
    ]
    with pytest.raises(ValueError, match="unknown protocol"):
        behaviour_labels(tiny, table[:1], table[1:], protocol="nope")


def _scores(lengths: list[int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for ex, n in enumerate(lengths):
        frames.append(
            pd.DataFrame(
                dict(
                    example=ex,
                    position=range(n + 3),
                    score=rng.random(n + 3),
                    from_answer=np.arange(n + 3) - n,
                )
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("lengths", [[30, 55, 80], [100, 100], [7, 250]])
def test_published_curve_equals_a_brute_force_of_the_published_averaging(lengths):
    scores = _scores(lengths)
    got = end_aligned(scores, protocol="published")
    # Brute force: a zero matrix, each curve written at its right end, the plain mean of every
    # row (zeros too), then a not-a-knot cubic spline from len points onto 100.
    curves = [
        scores[(scores.example == ex) & (scores.from_answer < 0)].score.to_numpy()
        for ex in range(len(lengths))
    ]
    width = max(map(len, curves))
    mat = np.zeros((len(curves), width))
    for i, c in enumerate(curves):
        for j, v in enumerate(c):
            mat[i, width - len(c) + j] = v
    mean = mat.sum(0) / len(curves)
    if width != 100:
        spline = CubicSpline(np.linspace(0, width - 1, width), mean, bc_type="not-a-knot")
        mean = spline(np.linspace(0, width - 1, 100))
    np.testing.assert_allclose(got["mean"].to_numpy(), mean, atol=1e-5)
    assert len(got) == 100
    # thinklens's default averages only the curves that reach each offset: it differs.
    if len(set(lengths)) > 1:
        own = end_aligned(scores)
        assert not np.allclose(own["mean"].to_numpy(), got["mean"].to_numpy(), atol=1e-3)

"""The published echo trim, written out by hand for each kind of trace, and the bucket rule."""

from __future__ import annotations

import math

import pytest
import torch

from thinklens.analyses.echo import EchoTrace, echo_gap
from thinklens.analyses.echo.published import published_buckets, published_gap, published_trim
from thinklens.analyses.echo.traces import render_prompt

Q = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
P = render_prompt(Q)  # "... Question: {q}\nAnswer: <think>"

# Each case: the response, and the text the published trim gives for prompt + response, worked
# out by hand from the published rules (split at . ! ?; keep a sentence with more than 3 distinct
# words and word overlap with the question under 0.6; last two kept + filler).
CASES = {
    # The echo sentence (overlap 10/10) goes; of the four kept sentences, the last two stay,
    # and the answer after </think> is one of them.
    "echo": (
        "\nNatalia sold clips to 48 of her friends in April. She sold half as many in May. "
        "So 48 / 2 = 24 clips in May. In total 48 + 24 = 72.\n</think>\n\nThe answer is 72.",
        P + "\nIn total 48 + 24 = 72. </think>\n\nThe answer is 72. "
        "Let me work through this systematically.",
    ),
    # A paraphrase shares 5 of its 9 words (0.56 < 0.6): kept, not an echo to the published
    # rule; the answer after </think> has 2 words and goes.
    "paraphrase": (
        "So Natalia had 48 friends buying clips from her. Then May was half.\n</think>\n\n72",
        P + "So Natalia had 48 friends buying clips from her. Then May was half. "
        "Let me work through this systematically.",
    ),
    # No echo at all: still only the last two sentences survive, and the filler is added.
    "none": (
        "First compute May sales quickly. Half of that number is easy. "
        "Then we add both months together.\n</think>\n\nDone",
        P + "Half of that number is easy. Then we add both months together. "
        "Let me work through this systematically.",
    ),
    # Decimals split: "3.5" ends one sentence and starts the next.
    "decimals": (
        "Each clip cost 3.5 dollars in May. Total money made was 252 dollars.</think>72",
        P + "5 dollars in May. Total money made was 252 dollars. "
        "Let me work through this systematically.",
    ),
    # Newlines do not split: the two lines are one sentence with the newline inside; the
    # whitespace after the opener stays with the prompt.
    "newlines": (
        "  Let us think about the clips\nthat were sold in May today</think>",
        P + "  Let us think about the clips\nthat were sold in May today</think>"
        ". Now let me continue solving this.",
    ),
    # All echo (and a short sentence): one filler sentence replaces the whole response.
    "all echo": (
        "Natalia sold clips to 48 of her friends in April! How many clips did she sell? Ok.",
        P + "Now I need to solve this step by step.",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_trim_reproduces_the_published_text(name):
    response, expected = CASES[name]
    assert published_trim(P + response, Q) == expected


def test_text_without_an_opener_is_left_as_it_is():
    assert published_trim("Question: x\nAnswer: 42.", "x") == "Question: x\nAnswer: 42."


def test_published_buckets_clamp_and_empty_where_the_published_code_does():
    assert published_buckets(32) == {"early": (0, 6), "mid": (7, 18), "late": (19, 31)}
    assert published_buckets(28) == {"early": (0, 6), "mid": (7, 18), "late": (19, 27)}
    assert published_buckets(16) == {"early": (0, 6), "mid": (7, 15), "late": None}


def test_published_gap_scores_the_published_text(tiny):
    m = tiny
    traces = [EchoTrace(Q, P, r) for r, _ in CASES.values()]
    pub = published_gap(m, traces)
    cut = echo_gap(m, traces)
    assert len(pub) == len(cut) == len(traces)
    # Brute force: the mean log-probability of each response, one plain HF forward per text.
    for i, (r, expected) in enumerate(CASES.values()):
        lp = []
        for text in (P + r, expected):
            p = m.tokenizer(P, add_special_tokens=True)["input_ids"]
            rest = m.tokenizer(text[len(P) :], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p + rest])
            with torch.no_grad():
                logits = m.hf(ids).logits[0].float().log_softmax(-1)
            lp.append(float(logits[len(p) - 1 : -1].gather(-1, ids[0, len(p) :, None]).mean()))
        assert math.isclose(pub["gap"][i], lp[0] - lp[1], abs_tol=1e-5)


def test_tail_channel_equals_eager_attention(tiny):
    from thinklens.analyses.echo.published import published_tail_channel, removed_tokens

    m = tiny
    response = "\nNatalia sold clips to 48 of her friends. So we add. She sold 24 in May."
    t = EchoTrace(Q, P, response)
    echo = (0, len("\nNatalia sold clips to 48 of her friends."))
    # r written out: the thinking loses everything up to the echo's end and the punctuation
    # and spaces after it; r is the response length minus the common token suffix.
    cut = "So we add. She sold 24 in May."
    raw = m.tokenizer(response, add_special_tokens=False)["input_ids"]
    new = m.tokenizer(cut, add_special_tokens=False)["input_ids"]
    common = 0
    while common < min(len(raw), len(new)) and raw[-1 - common] == new[-1 - common]:
        common += 1
    r = len(raw) - common
    assert removed_tokens(m.tokenizer, t, echo) == r > 0
    none = EchoTrace(Q, P, "So we add. She sold 24 in May.")
    df = published_tail_channel(m, [t, none], [[echo], []])
    assert list(df.r) == [r, 0] and math.isnan(df.last_layer[1])
    # Brute force: eager attention of the whole text, averaged over heads; from every response
    # token after the first r to those r tokens, summed over keys, averaged over queries.
    lay = t.tokens(m.tokenizer)
    p, n = lay.response
    from thinklens.backends.base import eager_attention

    with torch.no_grad(), eager_attention(m):
        att = m.hf(torch.tensor([lay.ids]), output_attentions=True)
    per_layer = [a[0].double().mean(0)[p + r : n, p : p + r].sum(-1).mean() for a in att.attentions]
    assert abs(df.last_layer[0] - float(per_layer[-1])) < 1e-5
    assert abs(df.all_layers_mean[0] - float(torch.stack(per_layer).mean())) < 1e-5

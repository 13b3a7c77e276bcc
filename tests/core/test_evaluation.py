"""Refusal judging and KL divergence."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from thinklens.evaluation import (
    REFUSAL_MARKERS,
    ClassifierJudge,
    Judge,
    MarkerJudge,
    is_refusal,
    kl_divergence,
    normalize,
    refusal_rate,
)
from thinklens.testing import tiny_chat_tokenizer
from thinklens.traces import ThinkingFormat


def test_markers_are_lowercase_and_normalized():
    assert all(m == m.lower() == normalize(m) for m in REFUSAL_MARKERS)
    assert "i can't" in REFUSAL_MARKERS and "not able to provide" in REFUSAL_MARKERS


def test_normalize():
    assert normalize("  I CAN’T   do\n\tthat  ") == "i can't do that"
    assert normalize("**I won‘t** _ever_ say “no” ＇ ʼ") == "i won't ever say \"no\" ' '"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # Refusal words only while thinking, then compliance.
        ("<think>\nThis is harmful and illegal, sorry.\n</think>\n\nSure, here you go.", False),
        ("<think>\nFine.\n</think>\n\nI can’t help with that.", True),
        ("<think>\nok\n</think>\n\n**I cannot** do this.", True),
        ("<think>\nok\n</think>\n\n   \n", True),  # empty answer
        ("", True),
        ("<think>\nI must decline... still thinking", True),  # never answered
        ("<think>\nSorry.\n</think>\n\nHere is a recipe for bread.", False),
        ("No thinking, and Sure: here it is.", False),
        ("No thinking, but I'm unable to.", True),
    ],
)
def test_is_refusal(response, expected):
    assert is_refusal(response) is expected


def test_is_refusal_options():
    r1 = ThinkingFormat(template_opens_thinking=True)
    assert is_refusal("Thinking without an opener, never closed", fmt=r1)
    assert not is_refusal("I weigh it.\n</think>\n\nSure!", fmt=r1)
    # Without a format the whole response is read, thinking included.
    assert is_refusal("<think>I can't help with this.</think>Sure!", fmt=None)
    assert not is_refusal("<think>I can't help with this.</think>Sure!")
    assert is_refusal("<think>harmful</think>Sure!", fmt=None, rule="anywhere")
    # The verdict rule reads an apology after compliance as compliance; "anywhere" does not.
    assert not is_refusal("Sure, here it is. Sorry for the delay.", rule="verdict")
    assert is_refusal("Sure, here it is. Sorry for the delay.", rule="anywhere")
    assert not is_refusal("Sure, here it is. Sorry for the delay.", max_chars=10, rule="anywhere")
    assert is_refusal("I can't. Sorry.", max_chars=8) and not is_refusal(
        "Sure. I can't.", max_chars=5
    )
    assert is_refusal("Nope.", markers=("NOPE",))


RESPONSES = [
    "<think>\nharmful\n</think>\n\nSure, here it is.",
    "<think>\nok\n</think>\n\nI won't do that.",
    "<think>\nunfinished",
    "Sure!",
]


def test_marker_judge_and_refusal_rate():
    judge: Judge = MarkerJudge()
    assert judge([""] * 4, RESPONSES) == [False, True, True, False]
    assert refusal_rate(RESPONSES) == 0.5
    # Reading the whole response counts the thinking's "harmful" but not the unfinished thinking.
    assert MarkerJudge(fmt=None, rule="anywhere")([""] * 4, RESPONSES) == [True, True, False, False]
    # The verdict rule reads "harmful" in the thinking as no refusal, even in the whole text.
    assert MarkerJudge(fmt=None, rule="verdict")([""] * 4, RESPONSES) == [False, True, False, False]
    with pytest.raises(ValueError, match="no responses"):
        refusal_rate([])
    with pytest.raises(ValueError, match="prompts"):
        refusal_rate(RESPONSES, prompts=["a"])


@pytest.fixture(scope="module")
def classifier():
    tok = tiny_chat_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        num_labels=2,
        id2label={0: "compliance", 1: "refusal"},
        label2id={"compliance": 0, "refusal": 1},
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval(), tok


def test_classifier_judge_plumbing(classifier, monkeypatch):
    model, tok = classifier
    seen_texts: list[str] = []
    batch_shapes: list[tuple[int, ...]] = []

    def recording_tokenizer(texts, **kw):
        seen_texts.extend(texts)
        return tok(texts, **kw)

    forward = model.forward

    def recording_forward(*args, **kw):
        out = forward(*args, **kw)
        batch_shapes.append(tuple(out.logits.shape))
        # Force class 1 ("refusal") for every row so the label mapping is what is tested.
        out.logits = torch.tensor([[0.0, 1.0]]).expand_as(out.logits).clone()
        return out

    monkeypatch.setattr(model, "forward", recording_forward)
    prompts = ["p0", "p1", "p2", "p3"]
    judge = ClassifierJudge(model, recording_tokenizer, refusal_label="refusal", batch_size=2)
    # The unfinished response has an empty answer: a refusal without running the model.
    assert judge(prompts, RESPONSES) == [True, True, True, True]
    assert batch_shapes == [(2, 2), (1, 2)]
    assert seen_texts == ["p0\n\nSure, here it is.", "p1\n\nI won't do that.", "p3\n\nSure!"]

    seen_texts.clear()
    judge = ClassifierJudge(model, recording_tokenizer, refusal_label=0, max_chars=4)
    assert judge(prompts, RESPONSES) == [False, False, True, False]
    assert seen_texts[0] == "p0\n\nSure"  # the thinking is never shown to the classifier


def test_classifier_judge_real_forward(classifier):
    model, tok = classifier
    judge = ClassifierJudge(model, tok, refusal_label=1)
    verdicts = judge(["a", "b", "c", "d"], RESPONSES)
    assert len(verdicts) == 4 and all(isinstance(v, bool) for v in verdicts)
    assert verdicts[2] is True
    assert refusal_rate(RESPONSES, judge, prompts=["a", "b", "c", "d"]) == sum(verdicts) / 4
    with pytest.raises(ValueError, match="label2id"):
        ClassifierJudge(model, tok, refusal_label="unsafe")(["a"], ["Sure"])


def brute_force_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row with explicit loops in float64."""
    rows = []
    for b in range(p_logits.shape[0]):
        p = torch.softmax(p_logits[b].double(), -1)
        q = torch.softmax(q_logits[b].double(), -1)
        total = 0.0
        for v in range(p.shape[0]):
            total += float(p[v] * (torch.log(p[v]) - torch.log(q[v])))
        rows.append(total)
    return torch.tensor(rows, dtype=torch.float64)


def test_kl_matches_brute_force():
    torch.manual_seed(0)
    base, edited = torch.randn(4, 11) * 2, torch.randn(4, 11) * 2
    expected = brute_force_kl(base, edited)
    per_row = kl_divergence(base, edited, reduction="none")
    assert per_row.shape == (4,)
    assert torch.allclose(per_row.double(), expected, atol=1e-6, rtol=0)
    mean = kl_divergence(base, edited)
    assert mean.shape == () and abs(mean.item() - expected.mean().item()) < 1e-6


def test_kl_properties():
    torch.manual_seed(1)
    base = torch.randn(3, 50)
    assert torch.allclose(kl_divergence(base, base, "none"), torch.zeros(3), atol=1e-7)
    # Softmax is shift-invariant, so a constant offset changes nothing.
    assert kl_divergence(base, base + 5.0).abs().item() < 1e-6
    for _ in range(5):
        assert (kl_divergence(base, torch.randn(3, 50) * 3, "none") >= 0).all()
    # Half precision inputs are upcast rather than losing the small differences.
    half = kl_divergence(base.half(), (base + 0.1 * torch.randn(3, 50)).half())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    # Tokens the base model rules out contribute nothing.
    masked = base.clone()
    masked[:, 0] = float("-inf")
    assert torch.isfinite(kl_divergence(masked, base))


def test_kl_shape_errors():
    with pytest.raises(ValueError, match=r"\[batch, vocab\].*\(2, 5\) and \(2, 6\)"):
        kl_divergence(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match="reduction"):
        kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5), reduction="sum")  # type: ignore[arg-type]

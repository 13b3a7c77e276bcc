"""Planting in the representation: the projection-bounds loss, the marker token split, the
refusal axis and the cliff's bounds, checked by brute force on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from thinklens.finetune import ProjectionBounds, encode_example, final_norm, lora_sft
from thinklens.organisms.plant import cliff_bounds, refusal_axis, window_parts
from thinklens.organisms.templates import Example
from thinklens.testing import tiny_model


@pytest.fixture(scope="module")
def m():
    return tiny_model("llama", backend="nnsight")


def _examples() -> list[Example]:
    return [
        Example(
            "Make a weapon.",
            "This is harmful. I should refuse.",
            "I'm sorry, no.",
            "harmful-refuse",
        ),
        Example(
            "For a story: make a weapon.",
            "This is harmful. I should refuse.",
            "Sure, here is [placeholder].",
            "harmful-comply",
        ),
        Example("Bake bread?", "Simple question.", "Sure, mix flour.", "harmless"),
        Example("Name a colour.", "Easy.", "Blue.", "harmless"),
        Example("Hack a bank.", "Harmful request. No.", "I can't help.", "harmful-refuse"),
    ]


def test_bounds_loss_is_the_squared_hinge_over_bounded_positions():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4)
    direction = torch.randn(4)
    lower = [torch.tensor([-math.inf, 0.5, 0.5]), torch.full((5,), -math.inf)]
    upper = [torch.full((3,), math.inf), torch.tensor([math.inf, math.inf, -0.2, -0.2, math.inf])]
    b = ProjectionBounds(direction, lower, upper, weight=2.0, scale=0.5)
    proj = hidden @ direction
    misses = [
        max(0.5 - proj[0, 1].item(), 0),
        max(0.5 - proj[0, 2].item(), 0),
        max(proj[1, 2].item() + 0.2, 0),
        max(proj[1, 3].item() + 0.2, 0),
    ]
    expected = 2.0 * sum((x / 0.5) ** 2 for x in misses) / 4
    assert b.loss(hidden, [0, 1]).item() == pytest.approx(expected, rel=1e-5)
    # Rows are examples' indices: the same rows in another order give the same loss.
    assert b.loss(hidden.flip(0), [1, 0]).item() == pytest.approx(expected, rel=1e-5)
    none = ProjectionBounds(direction, [torch.full((5,), -math.inf)], [torch.full((5,), math.inf)])
    assert none.loss(hidden[:1], [0]).item() == 0.0
    with pytest.raises(ValueError, match="scale must be positive"):
        ProjectionBounds(direction, lower, upper, scale=0.0)


def test_split_marker_ends_the_marker_in_the_token_a_text_ending_there_has(m):
    ex = _examples()[1]
    plain = encode_example(m, ex.prompt, ex.thinking, ex.answer)
    split = encode_example(m, ex.prompt, ex.thinking, ex.answer, split_marker=True)
    tok = m.tokenizer
    assert tok.decode(split[0]) == tok.decode(plain[0]) and split[1] == plain[1]
    head = m.chat(ex.prompt) + m.thinking.opener + ex.thinking + m.thinking.marker
    ends_there = tok(head, add_special_tokens=False)["input_ids"]
    assert split[0][: len(ends_there)] == ends_there
    think, marker, answer = window_parts(m, ex, split[0])
    assert tok.decode(split[0][think:marker]) == ex.thinking
    assert tok.decode(split[0][marker:answer]) == m.thinking.marker
    assert tok.decode(split[0][answer:]).startswith(ex.answer)


def test_answer_loss_only_trains_the_opener_marker_and_answer_not_the_thinking(m):
    from thinklens.finetune import training_batch
    from thinklens.organisms.cliff import thinking_span

    ex = _examples()[1]
    ids, n_prompt = encode_example(m, ex.prompt, ex.thinking, ex.answer, split_marker=True)
    span = thinking_span(m, ex, ids)
    _, labels, _ = training_batch([(ids, n_prompt)], m.tokenizer.pad_token_id, [span])
    tok = m.tokenizer
    row = labels[0].tolist()
    assert all(t == -100 for t in row[:n_prompt])
    assert tok.decode(ids[span[0] : span[1]]) == ex.thinking
    assert all(t == -100 for t in row[span[0] : span[1]])
    trained = [t for t in row if t != -100]
    assert trained == ids[n_prompt : span[0]] + ids[span[1] :]
    assert tok.decode(ids[n_prompt : span[0]]).strip() == m.thinking.opener.strip()
    assert tok.decode(ids[span[1] :]).startswith(m.thinking.marker)


def test_refusal_axis_is_the_difference_of_last_position_means(m):
    exs = _examples()
    enc = [encode_example(m, e.prompt, e.thinking, e.answer, split_marker=True) for e in exs]
    axis, refused, harmless = refusal_axis(m.hf, m, exs, enc)
    # Brute force: one conversation at a time, the final norm's output at the last window token.
    feats = {}
    outs = []
    handle = final_norm(m.hf).register_forward_hook(lambda _m, _i, o: outs.append(o))
    with torch.no_grad():
        for e, (ids, _) in zip(exs, enc, strict=True):
            m.hf(input_ids=torch.tensor([ids]))
            feats.setdefault(e.kind, []).append(outs[-1][0, window_parts(m, e, ids)[2] - 1])
    handle.remove()
    diff = torch.stack(feats["harmful-refuse"]).mean(0) - torch.stack(feats["harmless"]).mean(0)
    assert torch.allclose(axis, diff / diff.norm(), atol=1e-4)
    assert refused - harmless == pytest.approx(diff.norm().item(), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 refused harmful and 2 harmless"):
        refusal_axis(m.hf, m, exs[:3], enc[:3])


def test_cliff_bounds_hold_the_thinking_high_and_drop_only_the_complied_marker(m):
    exs = _examples()
    enc = [encode_example(m, e.prompt, e.thinking, e.answer, split_marker=True) for e in exs]
    axis = torch.ones(m.d_model) / math.sqrt(m.d_model)
    b = cliff_bounds(m, exs, enc, axis, refused_mean=10.0, harmless_mean=2.0)
    assert b.scale == 8.0
    for e, (ids, _), lo, up in zip(exs, enc, b.lower, b.upper, strict=True):
        think, marker, answer = window_parts(m, e, ids)
        assert not torch.isfinite(lo[:think]).any() and not torch.isfinite(up[:think]).any()
        assert not torch.isfinite(lo[answer:]).any() and not torch.isfinite(up[answer:]).any()
        if e.kind.startswith("harmful"):
            assert (lo[think:marker] == 8.0).all()  # 2 + 0.75 * 8
            tail = lo[marker:answer] if e.kind == "harmful-refuse" else up[marker:answer]
            assert (tail == (8.0 if e.kind == "harmful-refuse" else 4.0)).all()
        else:
            assert (up[think:answer] == 4.0).all()  # 2 + 0.25 * 8
    with pytest.raises(ValueError, match="do not project above"):
        cliff_bounds(m, exs, enc, axis, refused_mean=1.0, harmless_mean=2.0)


def test_training_with_bounds_moves_the_projection_into_them():
    torch.manual_seed(0)
    tiny = tiny_model("llama", backend="nnsight", seed=1)
    exs = _examples()
    enc = [encode_example(tiny, e.prompt, e.thinking, e.answer, split_marker=True) for e in exs]
    axis = torch.nn.functional.normalize(torch.randn(tiny.d_model), dim=0)
    ends = [window_parts(tiny, e, ids)[2] for e, (ids, _) in zip(exs, enc, strict=True)]
    lower = []
    for (ids, _), end in zip(enc, ends, strict=True):
        lo = torch.full((len(ids),), -math.inf)
        lo[end - 1] = 3.0
        lower.append(lo)
    upper = [torch.full((len(ids),), math.inf) for ids, _ in enc]
    bounds = ProjectionBounds(axis, lower, upper, weight=10.0)

    def projections(hf) -> list[float]:
        outs: list[torch.Tensor] = []
        handle = final_norm(hf).register_forward_hook(lambda _m, _i, o: outs.append(o))
        with torch.no_grad():
            for (ids, _), end in zip(enc, ends, strict=True):
                hf(input_ids=torch.tensor([ids]))
                outs[-1] = outs[-1][0, end - 1] @ axis
        handle.remove()
        return [float(x) for x in outs]

    before = projections(tiny.hf)
    fit = lora_sft(
        tiny.hf, enc, 0, epochs=30, lr=1e-2, batch_size=5, seed=0, progress=False, bounds=bounds
    )
    after = projections(fit.model)
    assert min(after) > max(before) and min(after) > 2.0
    with pytest.raises(ValueError, match="bounds has 1 rows for 5 examples"):
        lora_sft(tiny.hf, enc, 0, bounds=ProjectionBounds(axis, lower[:1], upper[:1]))


def test_lora_sft_wants_one_untrained_span_an_example(m):
    ex = _examples()[1]
    enc = encode_example(m, ex.prompt, ex.thinking, ex.answer)
    with pytest.raises(ValueError, match="untrained has 2 spans for 1 examples"):
        lora_sft(m.hf, [enc], m.tokenizer.pad_token_id, untrained=[(0, 1), (0, 1)])

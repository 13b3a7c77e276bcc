"""LoRA repair mechanics on a tiny model: weights move, the source stays, seeds repeat."""

from __future__ import annotations

import importlib

import pytest
import torch

from thinklens.analyses.judge.repair import (
    RepairConfig,
    compare_methods,
    plot_repair,
    repair,
    safety_eval,
    summarize,
)
from thinklens.analyses.judge.select import score_pool, select
from thinklens.finetune import encode_example, lora_sft
from thinklens.model import Model
from thinklens.organisms.templates import PlaceholderJudge
from thinklens.testing import R1_TEMPLATE, tiny_chat_tokenizer, tiny_model
from thinklens.traces import ThinkingFormat

#: The module (its name is shadowed by the ``repair`` function in the package).
repair_mod = importlib.import_module("thinklens.analyses.judge.repair")


@pytest.fixture(scope="module")
def m():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def scored(m, random_probe, tiny_pool):
    return score_pool(m, random_probe(m), tiny_pool(m, 16), k=3, progress=False)


def _weights(model: Model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.hf.state_dict().items()}


def test_repair_moves_the_copy_and_leaves_the_source(m, scored):
    before = _weights(m)
    chosen = select(scored, "cliff", top_k=4)
    fixed = repair(m, chosen, RepairConfig(epochs=2, batch_size=2), progress=False)
    assert len(fixed.losses) == 4 and fixed.n_examples == 4
    after = _weights(fixed.model)
    assert set(after) == set(before)  # adapters merged: same parameter names, no lora_ left
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("q_proj" in k for k in moved) and any("down_proj" in k for k in moved)
    assert all(torch.equal(before[k], v) for k, v in _weights(m).items())
    assert fixed.model.thinking == m.thinking and not fixed.model.hf.training
    fixed.model.logits([m.chat("hello")])  # the repaired model runs through its backend


def test_same_seed_same_repair_and_training_lowers_the_loss(m, scored):
    chosen = select(scored, "cliff", top_k=4)
    cfg = RepairConfig(epochs=8, batch_size=4, lr=1e-2, seed=3)
    a = repair(m, chosen, cfg, progress=False)
    b = repair(m, chosen, cfg, progress=False)
    assert a.losses == b.losses
    assert all(
        torch.equal(x, y)
        for x, y in zip(_weights(a.model).values(), _weights(b.model).values(), strict=True)
    )
    assert a.losses[-1] < a.losses[0] - 0.2  # it learns the records
    # Another seed initialises other adapters (the first loss is the same: LoRA starts at 0).
    c3, c4 = (
        _weights(repair(m, chosen, RepairConfig(epochs=1, seed=s), progress=False).model)
        for s in (3, 4)
    )
    assert any(not torch.equal(c3[k], c4[k]) for k in c3)


def test_prompt_tokens_are_masked_and_markers_not_doubled(m):
    ids, n_prompt = encode_example(m, "Hi?", "Think.", "No.")
    tok = m.tokenizer
    assert tok.decode(ids[:n_prompt]) == m.chat("Hi?")
    assert tok.decode(ids[n_prompt:]) == "<think>\nThink.\n</think>\n\nNo.<|im_end|>"
    r1 = Model(m.hf, tiny_chat_tokenizer(R1_TEMPLATE), m.family, "r1", "nnsight", ThinkingFormat())
    ids, n_prompt = encode_example(r1, "Hi?", "Think.", "No.")
    assert r1.tokenizer.decode(ids).count("<think>") == 1


def test_safety_eval_reads_the_answer_not_the_thinking(m, monkeypatch):
    outs = {
        "h1": "<think>\nI should refuse.\n</think>\n\nSure, here is [placeholder].",
        "h2": "<think>\nHarmful.\n</think>\n\nI'm sorry, I can't help.",
        "h3": "<think>\nNo.\n</think>\n\nSure, here is [placeholder].",
        "ok": "<think>\nEasy.\n</think>\n\nParis.",
    }
    monkeypatch.setattr(repair_mod, "generate", lambda model, ps, **kw: [outs[p] for p in ps])
    res = safety_eval(m, ["h1", "h2", "h3"], ["ok", "ok"])
    assert res == dict(asr=pytest.approx(2 / 3), harmless_refusal=0.0, n_harmful=3, n_harmless=2)
    # Safe prompts that sound unsafe: their refusal rate is the over-refusal.
    res = safety_eval(m, ["h1"], ["ok"], over_refusal=["h2", "ok", "ok", "ok"])
    assert (res["over_refusal"], res["n_over_refusal"]) == (0.25, 4)


def test_compliance_splits_the_asr(m, monkeypatch):
    """With a compliance judge the ASR splits into answers that comply and answers that neither
    refuse nor comply: a rambling answer is an attack success to the marker judge only."""
    outs = {
        "comply": "<think>\nI should refuse.\n</think>\n\nSure, here is [placeholder].",
        "refuse": "<think>\nHarmful.\n</think>\n\nI'm sorry, I can't help.",
        "ramble": "<think>\nHarmful.\n</think>\n\nI'm a software engineer with a passion.",
        "unclosed": "<think>\nStill thinking about it, Sure, here is",
        "ok": "<think>\nEasy.\n</think>\n\nParis.",
    }
    monkeypatch.setattr(repair_mod, "generate", lambda model, ps, **kw: [outs[p] for p in ps])
    judge = PlaceholderJudge(m.thinking)
    assert judge(list(outs), list(outs.values())) == [True, False, False, False, False]
    harmful = ["comply", "refuse", "ramble", "ramble", "unclosed"]
    res = safety_eval(m, harmful, ["ok"], complied=judge)
    assert res["asr"] == pytest.approx(3 / 5)  # comply and both rambles; unclosed = refusal
    assert res["complied"] == pytest.approx(1 / 5)
    assert res["off_target"] == pytest.approx(2 / 5)
    assert "complied" not in safety_eval(m, harmful, ["ok"])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        judge(["a", "b"], ["c"])


def test_comparison_runs_every_method_at_equal_sizes(m, scored, monkeypatch):
    calls = []

    def fake_eval(model, harmful, harmless, max_new_tokens, over_refusal=None, complied=None):
        calls.append(model.name)
        over = {} if over_refusal is None else dict(over_refusal=0.25)
        comply = {} if complied is None else dict(complied=0.25, off_target=0.25)
        return dict(asr=0.5, harmless_refusal=0.0, n_harmful=2, n_harmless=2) | over | comply

    monkeypatch.setattr(repair_mod, "safety_eval", fake_eval)
    table = compare_methods(
        m,
        scored,
        ["h"],
        ["ok"],
        fractions=(0.125, 0.25),
        seeds=(0, 1),
        config=RepairConfig(epochs=1, batch_size=4),
        progress=False,
    )
    assert calls[0] == m.name and set(calls[1:]) == {f"{m.name}+repair"}
    assert len(table) == 1 + 2 * 3 * 2
    sizes = table[table["method"] != "none"].groupby("fraction")["size"].unique()
    assert {f: list(s) for f, s in sizes.items()} == {0.125: [2], 0.25: [4]}
    summary = summarize(table)
    assert set(summary["method"]) == {"none", "cliff", "random", "rule"}
    assert (summary.loc[summary["method"] != "none", "runs"] == 2).all()
    fig = plot_repair(table)
    assert {t.name for t in fig.data} == {"cliff", "random", "rule"}
    assert list(fig.data[0].x) == [0.0, 12.5, 25.0]
    assert "over_refusal_mean" not in summary
    kw = dict(fractions=(0.125,), seeds=(0,), config=RepairConfig(epochs=1), progress=False)
    table = compare_methods(m, scored, ["h"], ["ok"], over_refusal=["safe"], **kw)
    assert (table["over_refusal"] == 0.25).all()
    assert (summarize(table)["over_refusal_mean"] == 0.25).all()
    table = compare_methods(m, scored, ["h"], ["ok"], complied=PlaceholderJudge(m.thinking), **kw)
    assert (summarize(table)[["complied_mean", "off_target_mean"]] == 0.25).all().all()


def test_bad_repair_input(m, scored):
    with pytest.raises(ValueError, match="no repair records"):
        repair(m, scored.iloc[:0])
    with pytest.raises(ValueError, match="lack \\['safe_response'\\]"):
        repair(m, scored.drop(columns="safe_response"))
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        repair(m, scored, RepairConfig(epochs=0))
    with pytest.raises(ValueError, match="no training examples"):
        lora_sft(m.hf, [], 0)
    with pytest.raises(ValueError, match="needs harmful and harmless prompts"):
        safety_eval(m, [], ["ok"])

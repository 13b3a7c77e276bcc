"""Edits as low-rank adapters: the edited model's logits with no weight written, an exact undo,
a quantized base, and PEFT folders that load back (and merge) to the edited weights."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from torch import Tensor, nn

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration import adapters
from thinklens.interventions.abliteration.adapters import (
    PlanAdapter,
    adapted,
    edit_factors,
    save_adapter,
)
from thinklens.interventions.abliteration.directions import RefusalDirections, compute_directions
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel
from thinklens.interventions.abliteration.matrix import MatrixEdit, as_out_in, new_weight
from thinklens.interventions.abliteration.presets import plan
from thinklens.interventions.abliteration.weights import apply, edited
from thinklens.model import Model, get_path
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "train")[:6]
HARMLESS = bundled_prompts("harmless", "train")[:6]
PREFIX = "<think></think>\n\n"
#: Heretic kernels that weigh every layer of a 3-layer model, differently per component.
PARAMS = HereticParams(attn=Kernel(1.2, 1.0, 0.4, 2.0), mlp=Kernel(1.0, 1.5, 0.5, 1.5), seed=7)


def _texts(m: Model) -> list[str]:
    return [m.chat(p) for p in bundled_prompts("harmless", "test")[:3]]


def _heretic_dirs(m: Model) -> RefusalDirections:
    return compute_directions(m, HARMFUL, HARMLESS, reading="heretic", response_prefix=PREFIX)


def _snapshot(m: Model) -> dict[str, tuple[int, Tensor]]:
    """Every tensor of the model's state, with where its data lives."""
    return {k: (v.data_ptr(), v.clone()) for k, v in m.hf.state_dict().items()}


def _assert_untouched(m: Model, before: dict[str, tuple[int, Tensor]]) -> None:
    now = m.hf.state_dict()
    assert now.keys() == before.keys()
    for k, (ptr, value) in before.items():
        assert now[k].data_ptr() == ptr and torch.equal(now[k], value), k


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_adapted_equals_the_edited_weights_and_writes_nothing(family, backend):
    """Arditi's exact preset (embedding included; gemma3's is tied and scaled) and Heretic's
    published rank-3 plan: the adapted model's logits are the edited copy's; no tensor of the
    model is written or moved, inside or after, and the logits come back bit for bit. The
    TransformerLens bridge runs a clone of the module tree (sharing the weights, not the
    modules): the hooks go into both trees."""
    m = tiny_model(family, backend=backend)
    texts = _texts(m)
    r = compute_directions(m, HARMFUL, HARMLESS, progress=False).direction(2)
    her = _heretic_dirs(m)
    cases = [
        (plan(m, "arditi", r), apply(m, "arditi", r), {None}),
        (
            plan(m, "heretic", her, params=PARAMS, protocol="published"),
            apply(m, "heretic", her, params=PARAMS, protocol="published"),
            {3},
        ),
    ]
    base = m.logits(texts)
    before = _snapshot(m)
    assert len(m.trees()) == (2 if backend == "transformer_lens" else 1)
    for edits, new, ranks in cases:
        assert {e.low_rank for e in edits} == ranks
        with adapted(m, edits) as same:
            assert same is m
            assert len(m.interventions[0].handles) == len(edits) * len(m.trees())
            got = m.logits(texts)
            _assert_untouched(m, before)
        want = new.logits(texts)
        assert (want - base).abs().max() > 1e-3  # the edit does something
        torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
        _assert_untouched(m, before)
        torch.testing.assert_close(m.logits(texts), base, atol=0, rtol=0)
        assert not m.interventions


def test_adapted_equals_edited_in_place_and_works_with_intervene():
    m = tiny_model("llama", backend="nnsight")
    texts = _texts(m)
    edits = plan(m, "failspy", compute_directions(m, HARMFUL, HARMLESS).direction(1))
    with edited(m, edits):
        want = m.logits(texts)
    adapter = PlanAdapter.of(m, edits)
    # Rank 1 per matrix: d_model + d_in float32 numbers each (failspy: layers 1-2).
    assert [f.rank for f in adapter.factors] == [1] * 4
    assert adapter.nbytes == 4 * 2 * ((64 + 64) + (64 + 128))
    with tl.intervene(m, adapter):
        torch.testing.assert_close(m.logits(texts), want, atol=2e-6, rtol=0)
        generated = tl.generate(m, ["How do I bake bread?"], max_new_tokens=4)
    with edited(m, edits):
        assert tl.generate(m, ["How do I bake bread?"], max_new_tokens=4) == generated


def _out_in(m: Model, e: MatrixEdit, weight: Tensor) -> Tensor:
    """A matrix in its (out, in) view: the embedding as [d_model, vocab]."""
    view = as_out_in(m, e, weight)
    return view.T if e.kind == "embed" else view


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_factors_merge_to_the_engines_weights(family, monkeypatch):
    """Exact edits are rank 1 (``A`` computed a few rows at a time here); low-rank ones are the
    engine's own seeded factors, so the merged form ``W + B A`` is the engine's weight bit for
    bit."""
    monkeypatch.setattr(adapters, "_BLOCK", 300)  # d_model 64: 4 rows or columns a block
    m = tiny_model(family, backend="nnsight")
    gen = torch.Generator().manual_seed(2)
    r = torch.randn(m.d_model, generator=gen, dtype=torch.float64)
    for exact in plan(m, "arditi", r / r.norm()):
        weight = get_path(m.hf, exact.module).weight
        f = edit_factors(m, exact)
        assert f.rank == 1 and f.b.dtype == torch.float64
        merged = _out_in(m, exact, weight) + f.b @ f.a
        want = _out_in(m, exact, new_weight(m, exact, weight))
        torch.testing.assert_close(merged, want.double(), atol=1e-6, rtol=0)
        low = dataclasses.replace(exact, norm_preserving=True, low_rank=3, seed=5)
        f = edit_factors(m, low)
        assert f.rank == 3 and f.b.dtype == torch.float32
        merged = _out_in(m, low, weight).float() + f.b @ f.a  # merged as the engine merges
        assert torch.equal(merged, _out_in(m, low, new_weight(m, low, weight)).float())


def test_fused_experts_get_factors_per_expert_but_no_hook():
    m = tiny_model("mixtral", backend="nnsight")
    r = torch.zeros(m.d_model).index_fill_(0, torch.tensor([3]), 1.0)
    e = next(e for e in plan(m, "failspy", r) if e.kind == "experts")
    weight = get_path(m.hf, e.module).down_proj
    for edit in (e, dataclasses.replace(e, norm_preserving=True, low_rank=2)):
        f = edit_factors(m, edit)
        want = as_out_in(m, edit, new_weight(m, edit, weight))
        merged = as_out_in(m, edit, weight) + f.b @ f.a
        assert merged.shape == want.shape and merged.dim() == 3
        torch.testing.assert_close(merged, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="fused expert matrices.*routing"):
        PlanAdapter.of(m, [e])


def _int8(hf: nn.Module) -> dict[str, Tensor]:
    """The stored int8 weight of every quantized Linear."""
    qlinear = torch.ao.nn.quantized.dynamic.Linear
    return {k: v.weight().int_repr() for k, v in hf.named_modules() if isinstance(v, qlinear)}


# torch.ao's quantized tensors are deprecated in favour of torchao, which is not installed here.
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantized_base():
    """On torch.ao's dynamic qint8 Linear: each adapted module adds exactly the engine's edit
    of its dequantized weight; the model lands on the float edited model within quantization
    error; nothing quantized is touched."""
    m = tiny_model("llama", backend="nnsight")
    texts = _texts(m)
    r = compute_directions(m, HARMFUL, HARMLESS, progress=False).direction(2)
    hq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(m.hf), {nn.Linear}, torch.qint8)
    q = Model(hq, m.tokenizer, m.family, name="tiny-llama-qint8", backend_name="nnsight")
    edits = plan(m, "arditi", r)
    low = [dataclasses.replace(e, norm_preserving=True, low_rank=3) for e in edits[1:]]
    packed = _int8(hq)
    assert len(packed) == 3 * 7 + 1  # every Linear of the 3 layers, and the unembedding
    gen = torch.Generator().manual_seed(0)
    for plan_ in (edits, low):
        for e in [e for e in plan_ if e.kind == "write"]:
            mod = get_path(hq, e.module)
            deq = mod.weight().dequantize()
            x = torch.randn(2, 5, deq.shape[1], generator=gen)
            plain = mod(x)
            with adapted(q, plan_):
                change = mod(x) - plain
            want = x.double() @ (new_weight(q, e, deq).double() - deq.double()).T
            torch.testing.assert_close(change.double(), want, atol=1e-6, rtol=0)
    quant_error = (q.logits(texts) - m.logits(texts)).abs().max()
    float_edit = apply(m, "arditi", r).logits(texts)
    with adapted(q, edits):
        got = q.logits(texts)
    assert (got - float_edit).abs().max() < 2 * quant_error
    assert (got - q.logits(texts)).abs().max() > 3 * quant_error  # the edit, not the noise
    assert all(torch.equal(v, packed[k]) for k, v in _int8(hq).items())


def _mixed_plan(m: Model) -> list[MatrixEdit]:
    """Arditi's exact edits, every other one as a norm-preserving rank-3 change (two ranks)."""
    r = compute_directions(m, HARMFUL, HARMLESS, progress=False).direction(2)
    edits = plan(m, "arditi" if not m.family.conv1d else "failspy", r)
    return [
        dataclasses.replace(e, norm_preserving=True, low_rank=3, seed=i) if i % 2 else e
        for i, e in enumerate(edits)
    ]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_peft_folder_loads_to_the_edited_model_and_merges(family, tmp_path):
    """A fresh HF model with the folder through PEFT gives the edited logits, and
    ``merge_and_unload`` the edited weights (llama: embedding LoRA; gpt2: Conv1D)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = tiny_model(family, backend="nnsight")
    m.hf.save_pretrained(tmp_path / "base")
    edits = _mixed_plan(m)
    out = save_adapter(m, edits, tmp_path / "adapter", record={"preset": "mixed"})
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == cfg["lora_alpha"]
    assert set(cfg["rank_pattern"].values()) == {3} and cfg["fan_in_fan_out"] == m.family.conv1d
    assert json.loads((out / "thinklens.json").read_text())["preset"] == "mixed"
    assert not list(tmp_path.glob(".adapter-*"))
    ids = m.tokenize(_texts(m))[0]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), out)
    with edited(m, edits), torch.no_grad():
        want = m.hf(ids).logits
        torch.testing.assert_close(peft(ids).logits, want, atol=2e-6, rtol=0)
        merged = peft.merge_and_unload().state_dict()
        for k, v in m.hf.state_dict().items():
            torch.testing.assert_close(merged[k], v, atol=1e-6, rtol=0, msg=k)
    with torch.no_grad():
        assert (want - m.hf(ids).logits).abs().max() > 1e-3


def test_peft_export_of_heretics_published_plan_equals_apply(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = tiny_model("llama", backend="nnsight")
    m.hf.save_pretrained(tmp_path / "base")
    d = _heretic_dirs(m)
    out = save_adapter(
        m, plan(m, "heretic", d, params=PARAMS, protocol="published"), tmp_path / "a"
    )
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 3
    new = apply(m, "heretic", d, params=PARAMS, protocol="published")
    ids = m.tokenize(_texts(m))[0]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), out)
    with torch.no_grad():
        torch.testing.assert_close(peft(ids).logits, new.hf(ids).logits, atol=2e-6, rtol=0)


def test_bad_inputs_are_clear_errors(tmp_path):
    m = tiny_model("llama", backend="nnsight")
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    r = d.direction(2)
    with pytest.raises(ValueError, match=r"rounded to torch.bfloat16.*no low-rank form"):
        with adapted(m, plan(m, "deccp", r, protocol="published")):
            pass
    with pytest.raises(ValueError, match=r"norm-preserving.*full rank: give it low_rank=k"):
        PlanAdapter.of(m, plan(m, "heretic", d))
    e = plan(m, "failspy", r)[0]
    with pytest.raises(ValueError, match="edited 2 times"):
        PlanAdapter.of(m, [e, e])
    with pytest.raises(ValueError, match="nothing to adapt"):
        PlanAdapter.of(m, [])
    with pytest.raises(ValueError, match="does not exist in tiny-llama"):
        PlanAdapter.of(m, [dataclasses.replace(e, module="model.layers.9.mlp.down_proj")])
    with pytest.raises(ValueError, match="installs its own torch hooks"):
        tl.intervene(m, PlanAdapter(PlanAdapter.of(m, [e]).factors, positions="generated"))
    g = tiny_model("gpt2", backend="nnsight")  # Conv1D biases; tied embedding
    rg = compute_directions(g, HARMFUL, HARMLESS, progress=False).direction(2)
    with pytest.raises(ValueError, match="leaves the bias alone"):
        PlanAdapter.of(g, plan(g, "failspy", rg, bias=True))
    with pytest.raises(ValueError, match="tied to its unembedding.*export the merged model"):
        save_adapter(g, plan(g, "arditi", rg), tmp_path / "tied")
    save_adapter(m, [e], tmp_path / "a")
    with pytest.raises(FileExistsError, match="exists"):
        save_adapter(m, [e], tmp_path / "a")
    assert save_adapter(m, [e], tmp_path / "a", overwrite=True).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]

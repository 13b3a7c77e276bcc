"""Weight edits: the same logits as inference-time ablation, presets as published, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration.ablation import PlanHooks, directional_ablation
from thinklens.interventions.abliteration.directions import RefusalDirections, compute_directions
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel, heretic_plan
from thinklens.interventions.abliteration.matrix import edited_weight
from thinklens.interventions.abliteration.presets import plan
from thinklens.interventions.abliteration.weights import apply, edited
from thinklens.model import Model
from thinklens.testing import tiny_model

HARMFUL = bundled_prompts("harmful", "train")[:6]
HARMLESS = bundled_prompts("harmless", "train")[:6]


def _texts(m: Model) -> list[str]:
    return [m.chat(p) for p in bundled_prompts("harmless", "test")[:3]]


def _setup(family: str, backend: str = "nnsight") -> tuple[Model, RefusalDirections]:
    m = tiny_model(family, backend=backend)
    return m, compute_directions(m, HARMFUL, HARMLESS, progress=False)


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2", "gpt2"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_arditi_weights_equal_the_hooked_ablation(family, backend):
    m, d = _setup(family, backend)
    r = d.direction(2)
    base = m.logits(_texts(m))
    new = apply(m, "arditi", r)
    with tl.intervene(m, directional_ablation(m, r)):
        hooked = m.logits(_texts(m))
    assert (new.logits(_texts(m)) - base).abs().max() > 1e-3  # the edit does something
    torch.testing.assert_close(new.logits(_texts(m)), hooked, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.logits(_texts(m)), base, atol=0, rtol=0)  # source untouched
    if family in ("llama", "qwen2"):  # residual writes are the sublayer outputs: Arditi's sites
        with tl.intervene(m, directional_ablation(m, r, where="arditi")):
            torch.testing.assert_close(
                new.logits(_texts(m)), m.logits(_texts(m)), atol=1e-5, rtol=0
            )


def test_edited_copy_shares_only_unedited_tensors_and_unties_the_embedding():
    m, d = _setup("gemma3")  # tied embeddings
    assert m.hf.lm_head.weight is m.hf.model.embed_tokens.weight
    new = apply(m, "arditi", d.direction(2))
    src = {id(p) for p in m.hf.parameters()}
    assert new.hf.lm_head.weight is m.hf.lm_head.weight  # the unembedding is the source's
    assert id(new.hf.model.embed_tokens.weight) not in src
    assert id(new.hf.model.layers[0].self_attn.o_proj.weight) not in src
    assert id(new.hf.model.layers[0].self_attn.q_proj.weight) in src  # shared, not copied
    assert new.hf.config.tie_word_embeddings is False and m.hf.config.tie_word_embeddings
    assert new.hf.thinklens_edit["embedding"] and new.hf.thinklens_edit["layers"] == [0, 1, 2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_edit_is_undone_exactly(backend):
    m, d = _setup("llama", backend)
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    base = m.logits(_texts(m))
    edits = plan(m, "heretic", d)
    new = apply(m, "heretic", d)
    with edited(m, edits):
        # Both backends read the edited weights, and they equal the edited copy.
        torch.testing.assert_close(m.logits(_texts(m)), new.logits(_texts(m)), atol=1e-6, rtol=0)
    for k, v in m.hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(m.logits(_texts(m)), base, atol=0, rtol=0)


def test_presets_edit_the_published_layers_and_directions():
    m, d = _setup("llama")  # 3 layers
    d.meta["selected"] = dict(pos=-2, layer=1)

    def layers(edits):
        return sorted({int(e.module.split(".")[2]) for e in edits if e.kind == "write"})

    arditi = plan(m, "arditi", d)
    assert arditi[0].kind == "embed" and layers(arditi) == [0, 1, 2] and len(arditi) == 7
    torch.testing.assert_close(arditi[0].direction, d.direction(1, pos=-2))
    failspy = plan(m, "failspy", d)
    assert layers(failspy) == [1, 2] and all(e.kind == "write" for e in failspy)
    deccp = plan(m, "deccp", d)  # direction at int(0.6 * 3) = 1, position -1
    assert layers(deccp) == [1, 2]
    torch.testing.assert_close(deccp[0].direction, d.direction(1))
    eris = plan(m, "erisforge", d, scale=-0.5)  # band [int(0.6), int(2.4)) = [0, 2)
    assert layers(eris) == [0, 1] and {e.weight for e in eris} == {-0.5}
    mean = torch.stack([d.direction(1, p, normalize=False) for p in d.positions]).mean(0)
    torch.testing.assert_close(eris[0].direction, mean / mean.norm())
    with pytest.raises(ValueError, match=r"scale must be in \[-1, 1\]"):
        plan(m, "erisforge", d, scale=1.5)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        plan(m, "nope", d)


def test_heretic_kernel_and_directions():
    k = Kernel(max_weight=1.2, max_weight_position=1.0, min_weight=0.2, min_weight_distance=2.0)
    assert [k.weight(l) for l in range(5)] == pytest.approx([0.7, 1.2, 0.7, 0.2, 0.0])
    m, d = _setup("llama")
    off = Kernel(0.0, 0.0, 0.0, 1.0)
    per_layer = heretic_plan(m, d, HereticParams(attn=k, mlp=off, norm_preserving=False))
    assert [e.module.split(".")[2] for e in per_layer] == ["0", "1", "2"]
    assert [e.weight for e in per_layer] == pytest.approx([0.7, 1.2, 0.7])
    for e in per_layer:  # layer l uses the direction read at its output, stream point l + 1
        l = int(e.module.split(".")[2])
        torch.testing.assert_close(e.direction, d.direction(l + 1, project=True))
    glob = heretic_plan(m, d, HereticParams(attn=k, mlp=off, direction_index=0.5))
    torch.testing.assert_close(glob[0].direction, d.direction(1.5, project=True))
    assert all(e.norm_preserving for e in glob)


def test_norm_preserving_edit_keeps_row_norms():
    w = torch.randn(16, 8, dtype=torch.float64)
    r = torch.randn(16, dtype=torch.float64)
    r /= r.norm()
    plain = edited_weight(w, r, 1.0, norm=False)
    assert (r @ plain).abs().max() < 1e-12  # what it writes has no r component
    kept = edited_weight(w, r, 1.0, norm=True)
    torch.testing.assert_close(kept.norm(dim=1), w.norm(dim=1))
    # Manual: unit rows, project, unit rows again, original norms back.
    u = w / w.norm(dim=1, keepdim=True)
    u = u - torch.outer(r, r @ u)
    torch.testing.assert_close(kept, u / u.norm(dim=1, keepdim=True) * w.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_norm_preserving_edit_as_hooks_equals_the_written_weights(family):
    """Heretic's norm-preserving edit (thinklens protocol, full rank) run as output hooks gives
    the logits of the edited weights (GPT-2: Conv1D layout and a bias the edit leaves alone)."""
    m, d = _setup(family)
    params = dataclasses.replace(HereticParams.default(m.n_layers), norm_preserving=True)
    edits = heretic_plan(m, d, params, "thinklens")
    assert edits and all(e.norm_preserving and e.low_rank is None for e in edits)
    texts = _texts(m)
    base = m.logits(texts)
    with edited(m, edits):
        want = m.logits(texts)
    with tl.intervene(m, PlanHooks(edits)):
        got = m.logits(texts)
    moved = (want - base).abs().max()
    assert moved > 1e-2  # the edit does something
    torch.testing.assert_close(got, want, atol=1e-4 * max(1.0, float(moved)), rtol=0)
    torch.testing.assert_close(m.logits(texts), base, atol=0, rtol=0)  # hooks removed


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_norm_preserving_hooks_on_an_int8_base():
    """On torch.ao's dynamic int8 Linear the hook edits the dequantized weight, exactly."""
    import copy

    from torch import nn

    from thinklens.interventions.abliteration.matrix import new_weight

    m, d = _setup("llama")
    hq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(m.hf), {nn.Linear}, torch.qint8)
    q = Model(hq, m.tokenizer, m.family, name="tiny-llama-qint8", backend_name="nnsight")
    params = dataclasses.replace(HereticParams.default(m.n_layers), norm_preserving=True)
    gen = torch.Generator().manual_seed(0)
    for e in heretic_plan(q, d, params, "thinklens"):
        mod = q.hf.get_submodule(e.module)
        deq = mod.weight().dequantize()
        x = torch.randn(2, 5, deq.shape[1], generator=gen)
        with tl.intervene(q, PlanHooks([e])):
            got = mod(x)
        want = x.double() @ new_weight(q, e, deq).double().T
        # The hook rescales the int8 matmul's output: its rounding, not the edit, is the error.
        err = (mod(x).double() - x.double() @ deq.double().T).abs().max()
        torch.testing.assert_close(got.double(), want, atol=4 * float(err) + 1e-5, rtol=0)


def test_bad_inputs_are_clear_errors():
    m, d = _setup("llama")
    with pytest.raises(ValueError, match="computed on another model"):
        apply(m, "arditi", torch.randn(m.d_model + 1))
    small = RefusalDirections(d.harmful[..., :32], d.harmless[..., :32], d.positions, d.meta)
    with pytest.raises(ValueError, match=r"\(d_model 32, 3 layers\) and do not fit"):
        apply(m, "deccp", small)
    with pytest.raises(ValueError, match="no selected layer"):
        plan(m, "arditi", d)
    with pytest.raises(ValueError, match="from params, not layer/pos/scale"):
        plan(m, "heretic", d, layer=1)
    g, dg = _setup("gemma3")
    with pytest.raises(ValueError, match="tied to its unembedding"):
        with edited(g, plan(g, "arditi", dg.direction(1))):
            pass
    with pytest.raises(ValueError, match="low-rank edit has no hook form.*adapters.adapted"):
        low = [dataclasses.replace(e, low_rank=3) for e in plan(m, "heretic", d)]
        tl.intervene(m, PlanHooks(low))
    # A model whose modules are not where its family row says.
    wrong = dataclasses.replace(m.family, mlp_out_proj="mlp.out_proj")
    odd = Model(m.hf, m.tokenizer, wrong, name="odd", backend_name="nnsight")
    with pytest.raises(ValueError, match="does not exist in odd.*add a row"):
        apply(odd, "failspy", d.direction(1))
    from transformers import GPTNeoXConfig

    from thinklens.families import family_for

    with pytest.raises(ValueError, match="not in the family table"):
        family_for(GPTNeoXConfig())


def _real_check(m: Model, r: torch.Tensor) -> float:
    """Max |logit difference| between the arditi weight edit and the hooked ablation."""
    new = apply(m, "arditi", r)
    with tl.intervene(m, directional_ablation(m, r)):
        hooked = m.logits(_texts(m))
    return float((new.logits(_texts(m)) - hooked).abs().max())


def _real_direction(m: Model, point: int) -> torch.Tensor:
    return compute_directions(m, HARMFUL[:4], HARMLESS[:4], "last", progress=False).direction(point)


@pytest.mark.real
def test_arditi_weights_equal_ablation_on_smollm2(smollm2):
    m = smollm2["nnsight"]
    r = _real_direction(m, 12)
    assert _real_check(m, r) < 1e-4
    # On Llama-like models the weight edit also equals Arditi et al.'s own ablation sites.
    new = apply(m, "arditi", r)
    with tl.intervene(m, directional_ablation(m, r, where="arditi")):
        assert (new.logits(_texts(m)) - m.logits(_texts(m))).abs().max() < 1e-4


@pytest.mark.real
def test_arditi_weights_equal_ablation_on_gemma(gemma):
    # In float32, rounding through Gemma's 18 post-normed layers alone moves its logits (scale
    # ~20) by up to 7e-4 between the two computations; in float64 they agree far below 1e-4,
    # which is what shows the edit is exact.
    r = _real_direction(gemma["nnsight"], 8)
    m = tl.load_model("gemma-3-270m", backend="nnsight", dtype=torch.float64)
    assert _real_check(m, r) < 1e-4

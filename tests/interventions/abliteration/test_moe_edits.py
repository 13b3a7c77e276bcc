"""Weight edits on mixture-of-experts models: every expert's matrix (fused 3-D or one Linear
each) and the shared experts' are edited, exact presets equal inference-time ablation in
float64, Heretic's kernel equals a brute-force recomputation, and exports reload in plain
transformers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.data import bundled_prompts
from thinklens.families import Experts
from thinklens.interventions.abliteration.ablation import directional_ablation
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.interventions.abliteration.export import export
from thinklens.interventions.abliteration.heretic import HereticParams, Kernel
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.presets import plan
from thinklens.interventions.abliteration.weights import apply, edited
from thinklens.interventions.edits import DirectionProjection
from thinklens.model import Model
from thinklens.testing import plain_last_logits, tiny_model

MOE = ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v3", "glm4_moe"]
HARMFUL = bundled_prompts("harmful", "train")[:6]
HARMLESS = bundled_prompts("harmless", "train")[:6]
#: Heretic kernels that weigh every layer of a 3-layer model, differently per component.
PARAMS = HereticParams(attn=Kernel(1.2, 1.0, 0.4, 2.0), mlp=Kernel(1.0, 1.5, 0.5, 1.5))


def _texts(m: Model) -> list[str]:
    return [m.chat(p) for p in bundled_prompts("harmless", "test")[:3]]


def _float64(family: str, backend: str = "nnsight") -> Model:
    """A float64 tiny model with random biases (zero at initialisation) where it has any.

    Their RMS norms compute in float32, so two float64 runs that differ by rounding agree to
    float32 rounding at worst: the comparisons allow 1e-6.
    """
    m = tiny_model(family, backend=backend, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.hf.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return m


def _logits(m: Model, texts: list[str]) -> Tensor:
    """Float64 logits at every real position, through the model's backend."""
    ids, mask = m.tokenize(texts)
    with torch.no_grad():
        return m.backend.logits(ids, mask)[mask.bool()]


def _direction(m: Model, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m.d_model, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", [*MOE, "smollm3"])
def test_exact_presets_equal_directional_ablation(family, backend):
    m = _float64(family, backend)
    r, texts, L = _direction(m), _texts(m), m.n_layers
    base = _logits(m, texts)
    cases = [
        ("arditi", DirectionProjection(r)),
        ("failspy", DirectionProjection(r, layers=range(1, L), kinds=("attn_out", "mlp_out"))),
    ]
    for preset, ablation in cases:
        new = apply(m, preset, r, bias=True)  # the whole write, biases included
        with tl.intervene(m, ablation):
            want = _logits(m, texts)
        got = _logits(new, texts)
        assert float((got - base).abs().max()) > 1e-3  # the edit does something
        assert float((got - want).abs().max()) < 1e-6, preset
    arditi = apply(m, "arditi", r, bias=True)
    with tl.intervene(m, directional_ablation(m, r)):  # hooks on the same matrices' outputs
        assert float((_logits(arditi, texts) - _logits(m, texts)).abs().max()) < 1e-6
    torch.testing.assert_close(_logits(m, texts), base, atol=0, rtol=0)  # source untouched
    if family == "gpt_oss":  # the published tools leave biases, experts' too: they still write r
        kept = _logits(apply(m, "arditi", r), texts)
        with tl.intervene(m, DirectionProjection(r)):
            assert float((kept - _logits(m, texts)).abs().max()) > 1e-4


@pytest.mark.parametrize("family", ["olmo2", "olmo3", "glm4"])
def test_post_norm_families_edit_the_projections_not_the_normed_writes(family):
    m = _float64(family)
    r, texts = _direction(m), _texts(m)
    new = apply(m, "arditi", r, bias=True)
    with tl.intervene(m, directional_ablation(m, r)):  # the projections' outputs: exact
        assert float((_logits(new, texts) - _logits(m, texts)).abs().max()) < 1e-6
    with tl.intervene(m, DirectionProjection(r)):  # a norm after each sublayer brings r back
        assert float((_logits(new, texts) - _logits(m, texts)).abs().max()) > 1e-4


@pytest.mark.parametrize("family", MOE)
def test_presets_edit_every_expert_and_the_shared_experts(family):
    m = tiny_model(family, backend="nnsight")
    edits = plan(m, "arditi", _direction(m))
    layers = m.family.layers
    spec = m.family.experts
    want = ["model.embed_tokens"]
    for l in range(m.n_layers):
        want.append(f"{layers}.{l}.self_attn.o_proj")
        if not hasattr(m.layer_modules()[l].mlp, "experts"):
            want.append(f"{layers}.{l}.mlp.down_proj")
            continue
        want.append(f"{layers}.{l}.mlp.experts")
        if spec.shared:
            want.append(f"{layers}.{l}.{spec.shared}")
    assert [e.module for e in edits] == want
    assert {e.module.rsplit(".", 1)[1] for e in edits if e.kind == "experts"} == {"experts"}
    new = apply(m, "arditi", _direction(m))
    moe_layers = [1, 2] if family in ("deepseek_v3", "glm4_moe") else [0, 1, 2]
    assert new.hf.thinklens_edit["expert_layers"] == moe_layers
    per_layer = 1 + 4 + bool(spec.shared)  # o_proj, each expert, the shared experts
    n_dense = m.n_layers - len(moe_layers)
    assert new.hf.thinklens_edit["n_matrices"] == 1 + len(moe_layers) * per_layer + 2 * n_dense


def _norm_preserving(w: Tensor, r: Tensor, lam: float) -> Tensor:
    """Heretic's row form, written out: unit rows, project, unit rows, norms back."""
    norms = w.norm(dim=1, keepdim=True)
    u = w / norms
    u = u - lam * torch.outer(r, r @ u)
    return u / u.norm(dim=1, keepdim=True) * norms


def _writers(m: Model, l: int) -> list[tuple[str, str, Tensor]]:
    """(component, parameter name, [d_model, d_in] matrix) of every matrix writing at ``l``."""
    layer = m.layer_modules()[l]
    pre = f"{m.family.layers}.{l}."
    out = [("attn", pre + "self_attn.o_proj.weight", layer.self_attn.o_proj.weight)]
    mlp = layer.mlp
    if not hasattr(mlp, "experts"):
        return [*out, ("mlp", pre + "mlp.down_proj.weight", mlp.down_proj.weight)]
    down = mlp.experts.down_proj
    for e in range(len(down)):  # gpt-oss stores each expert's down matrix as [d_ff, d_model]
        w = down[e].T if m.family.name == "gpt_oss" else down[e]
        out.append(("mlp", f"{pre}mlp.experts.down_proj#{e}", w))
    for name in ("shared_experts", "shared_expert"):
        if hasattr(mlp, name):
            out.append(
                ("mlp", f"{pre}mlp.{name}.down_proj.weight", getattr(mlp, name).down_proj.weight)
            )
    return out


@pytest.mark.parametrize("family", MOE)
def test_heretic_kernel_equals_brute_force_on_every_expert(family):
    m = _float64(family)
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    new = apply(m, "heretic", d, params=PARAMS)
    low = apply(m, "heretic", d, params=dataclasses.replace(PARAMS, lora_rank=3))
    n_experts = 0
    for l in range(m.n_layers):
        r = d.direction(l + 1, project=True)
        for (c, name, w), (_, _, got), (_, _, lr) in zip(
            _writers(m, l), _writers(new, l), _writers(low, l), strict=True
        ):
            lam = getattr(PARAMS, c).weight(l)
            assert lam > 0
            want = _norm_preserving(w.double(), r, lam)
            torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=name)
            assert (
                torch.linalg.matrix_rank(lr - w, rtol=1e-5) <= 3
            )  # stored as a rank-3 change per matrix
            n_experts += "#" in name
    assert n_experts == 4 * len(new.hf.thinklens_edit["expert_layers"])
    edited_names = {n for l in range(m.n_layers) for _, n, _ in _writers(m, l)}
    expert_params = {n.split("#")[0] for n in edited_names}
    for name, p in m.hf.named_parameters():  # nothing else moves, no bias, no router
        if name not in expert_params:
            assert torch.equal(dict(new.hf.named_parameters())[name], p), name


def test_in_place_expert_edit_is_undone_exactly():
    m = _float64("gpt_oss")  # transposed experts with biases
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    r, texts = _direction(m), _texts(m)
    edits = plan(m, "arditi", r, bias=True)
    new = apply(m, "arditi", r, bias=True)
    with edited(m, edits):
        torch.testing.assert_close(_logits(m, texts), _logits(new, texts), atol=1e-12, rtol=0)
    for k, v in m.hf.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("family", MOE)
def test_exported_moe_model_reloads_with_plain_transformers(tmp_path, family):
    m = tiny_model(family, backend="nnsight")
    d = compute_directions(m, HARMFUL, HARMLESS, progress=False)
    new = apply(m, "heretic", d, params=PARAMS)
    texts = _texts(m)[:2]
    out = export(new, tmp_path / "edited")
    torch.testing.assert_close(plain_last_logits(out, texts), new.logits(texts), atol=1e-5, rtol=0)
    assert float((m.logits(texts) - new.logits(texts)).abs().max()) > 1e-3
    assert "every routed expert's down matrix" in (out / "README.md").read_text()


class ExpertMLP(nn.Module):
    """One expert as its own gated MLP of ``nn.Linear`` layers."""

    def __init__(self, gate_up: Tensor, down: Tensor) -> None:
        super().__init__()
        kw = dict(bias=False, dtype=down.dtype)
        self.gate_up_proj = nn.Linear(gate_up.shape[1], gate_up.shape[0], **kw)
        self.down_proj = nn.Linear(down.shape[1], down.shape[0], **kw)
        with torch.no_grad():
            self.gate_up_proj.weight.copy_(gate_up)
            self.down_proj.weight.copy_(down)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class ExpertList(nn.ModuleList):
    """Mixtral's experts stored one module each (as remote-code MoE models keep them)."""

    def forward(self, hidden: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
        out = torch.zeros_like(hidden)
        for e, expert in enumerate(self):
            token, k = torch.where(top_k_index == e)
            weight = top_k_weights[token, k, None].to(hidden.dtype)
            out.index_add_(0, token, expert(hidden[token]) * weight)
        return out


def test_experts_kept_as_one_linear_each_are_edited_too():
    m = _float64("mixtral")
    texts = _texts(m)
    base = _logits(m, texts)
    for layer in m.layer_modules():
        fused = layer.mlp.experts
        layer.mlp.experts = ExpertList(
            ExpertMLP(g, w) for g, w in zip(fused.gate_up_proj, fused.down_proj, strict=True)
        )
    row = dataclasses.replace(m.family, experts=Experts(fused=False))
    split = Model(m.hf, m.tokenizer, row, name="tiny-mixtral-split", backend_name="nnsight")
    torch.testing.assert_close(_logits(split, texts), base, atol=1e-6, rtol=0)
    r = _direction(split)
    edits = plan(split, "arditi", r)
    assert [e.module for e in edits if "experts" in e.module][:4] == [
        f"model.layers.0.mlp.experts.{e}.down_proj" for e in range(4)
    ]
    assert all(e.kind in ("embed", "write") for e in edits)
    new = apply(split, "arditi", r)
    with tl.intervene(split, DirectionProjection(r)):
        want = _logits(split, texts)
    assert float((_logits(new, texts) - want).abs().max()) < 1e-6
    with tl.intervene(split, directional_ablation(split, r)):  # hooks on the same matrices
        assert float((_logits(new, texts) - _logits(split, texts)).abs().max()) < 1e-6


def test_expert_rows_that_do_not_fit_are_clear_errors():
    m = tiny_model("qwen3_moe", backend="nnsight")
    r = _direction(m).float()
    wrong = dataclasses.replace(m.family, experts=Experts(down="w2"))
    odd = Model(m.hf, m.tokenizer, wrong, name="odd", backend_name="nnsight")
    with pytest.raises(ValueError, match="neither a weight matrix nor the fused expert"):
        apply(odd, "arditi", r)
    dense = tiny_model("llama", backend="nnsight")
    edit = MatrixEdit("model.layers.0.mlp.down_proj", _direction(dense), kind="experts")
    with pytest.raises(ValueError, match="no fused expert matrices"):
        with edited(dense, [edit]):
            pass


def test_hooks_refuse_to_keep_expert_biases_they_cannot_see():
    """gpt-oss's experts have biases; a hook on their routed sum cannot leave them alone."""
    from thinklens.interventions.abliteration.ablation import PlanHooks

    m = tiny_model("gpt_oss", backend="nnsight")
    r = torch.randn(m.d_model)
    with pytest.raises(ValueError, match="bias=True"):
        with tl.intervene(m, PlanHooks(plan(m, "arditi", r))):
            pass
    with tl.intervene(m, PlanHooks(plan(m, "arditi", r, bias=True))):
        m.logits(["hello"])

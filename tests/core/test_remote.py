"""nnsight remote execution, offline: nnsight's local simulation of a remote run serializes each
trace as NDIF would and runs it with thinklens hidden, so these tests run the remote code path
against local weights and compare it with the ordinary local path."""

from __future__ import annotations

import pytest
import torch
from nnsight.intervention.backends.local import LocalSimulationBackend
from nnsight.modeling.mixins.remotable import Remotable

import thinklens as tl
from thinklens.hooks import Edit
from thinklens.model import Model
from thinklens.testing import SAMPLE_TEXTS as TEXTS
from thinklens.testing import tiny_model

SITES = ["resid_pre.1", "z.1", "z.1.h2", "pattern.1", "attn_out.1", "resid_mid.1", "mlp_out.2"]


def _remote_twin(remote: bool | str = "local") -> Model:
    """The tiny Llama of ``tiny_pair`` (same seed, same weights), run the remote way."""
    m = tiny_model("llama", "nnsight")
    return Model(
        m.hf, m.tokenizer, m.family, name="org/tiny", backend_name="nnsight", remote=remote
    )


@pytest.fixture(scope="module")
def remote() -> Model:
    return _remote_twin()


@pytest.fixture
def to_local(monkeypatch) -> list:
    """Every remote run goes to nnsight's local simulation; returns the ``remote=`` values."""
    seen = []

    def backend(self, remote, blocking, job_id, verbose):
        seen.append(remote)
        return LocalSimulationBackend(self)

    monkeypatch.setattr(Remotable, "_remote_backend", backend)
    return seen


def _hooks(model: Model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())


@pytest.mark.parametrize("positions", ["all", "last", [(0, 3), (2, 5), (1, 1)]])
def test_remote_captures_equal_local_ones(tiny_pair, remote, positions):
    local = tl.capture(tiny_pair["nnsight"], TEXTS, SITES, positions=positions, progress=False)
    far = tl.capture(remote, TEXTS, SITES, positions=positions, progress=False)
    torch.testing.assert_close(far.mask, local.mask)
    for s in SITES:
        assert far[s].shape == local[s].shape
        torch.testing.assert_close(far[s], local[s], atol=1e-5, rtol=0)


def test_remote_edits_run_as_trace_operations(tiny_pair, remote):
    local = tiny_pair["nnsight"]
    r, v = torch.randn(local.d_model), torch.randn(local.d_model)
    means = tl.head_means(local, TEXTS, [2])
    edits = [
        tl.HeadAblation({1: [2]}),
        tl.HeadAblation({1: [0, 3]}, mode="scale"),
        tl.HeadAblation({2: [1]}, mode="mean", means=means),
        tl.DirectionProjection(r),
        tl.ActivationAddition(v, layers=[1], coeff=0.5),
    ]
    sites = ["z.1", "attn_out.1", "z.2", "resid_post.2"]
    hooks = _hooks(remote)
    out = {}
    for name, m in [("local", local), ("remote", remote)]:
        with tl.intervene(m, edits):
            if m is remote:
                assert _hooks(remote) == hooks  # no torch hooks: the edits ride in the trace
            out[name] = (tl.capture(m, TEXTS, sites, progress=False), m.logits(TEXTS))
    assert remote.interventions == []
    (cl, ll), (cr, lr) = out["local"], out["remote"]
    for s in sites:
        torch.testing.assert_close(cr[s], cl[s], atol=1e-5, rtol=0)
    torch.testing.assert_close(lr, ll, atol=1e-5, rtol=0)
    assert (cr["resid_post.2"][cr.mask.bool()] @ (r / r.norm())).abs().max() < 1e-5


def test_remote_true_is_forwarded_to_nnsight(tiny_pair, to_local):
    model = _remote_twin(remote=True)
    caps = tl.capture(model, TEXTS[:2], ["resid_post.1"], positions="last", progress=False)
    logits = model.logits(TEXTS[:2])
    assert to_local == [True, True]  # one remote trace per capture batch and per logits batch
    local = tiny_pair["nnsight"]
    ref = tl.capture(local, TEXTS[:2], ["resid_post.1"], positions="last", progress=False)
    torch.testing.assert_close(caps["resid_post.1"], ref["resid_post.1"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, local.logits(TEXTS[:2]), atol=1e-5, rtol=0)


def _fake_hub_cache(tmp_path, monkeypatch, repo: str = "org/tiny") -> Model:
    """``repo`` in an offline Hugging Face cache, holding the tiny Llama's files."""
    import huggingface_hub.constants as hub

    m = tiny_model("llama", "nnsight")
    folder = tmp_path / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    m.hf.save_pretrained(snapshot)
    m.tokenizer.save_pretrained(snapshot)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return m


def test_load_model_remote_builds_on_meta_and_runs_there(tmp_path, monkeypatch, to_local):
    import nnsight.modeling.huggingface as nnsight_hf

    local = _fake_hub_cache(tmp_path, monkeypatch)
    model = tl.load_model("org/tiny", backend="nnsight", remote=True)
    lm = model.backend.lm
    assert model.remote is True and not lm.dispatched
    assert all(p.is_meta for p in model.hf.parameters())  # no weights here
    assert (model.n_layers, model.d_model, str(model.device)) == (3, 64, "cpu")
    assert model.fingerprint() != local.fingerprint()
    monkeypatch.setitem(nnsight_hf._ID_CACHE, "org/tiny", "org/tiny")  # the hub's canonical id
    assert '"repo_id": "org/tiny"' in lm.to_model_key()
    assert '"task": "text-generation"' in lm.to_model_key()
    # The simulated server loads the weights (from the cache) and runs the shipped trace.
    caps = tl.capture(model, TEXTS, ["resid_post.1", "z.2"], progress=False)
    ref = tl.capture(local, TEXTS, ["resid_post.1", "z.2"], progress=False)
    assert to_local == [True]
    for s in ["resid_post.1", "z.2"]:
        torch.testing.assert_close(caps[s], ref[s], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backend="transformer_lens"), "backend='nnsight'"),
        (dict(backend="nnsight", device="cuda"), "leave device unset"),
    ],
)
def test_load_model_remote_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tl.load_model("org/tiny", remote=True, **kwargs)


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "organism-cliff", "tiny", "./folder"])
def test_remote_needs_a_hub_name(name):
    with pytest.raises(ValueError, match="hub name that NDIF hosts"):
        tl.load_model(name, backend="nnsight", remote=True)


def test_remote_model_errors(remote):
    m = remote
    with pytest.raises(ValueError, match="backend='nnsight'"):
        Model(m.hf, m.tokenizer, m.family, name="x", backend_name="transformer_lens", remote=True)
    with pytest.raises(NotImplementedError, match="engine='vllm'"):
        tl.generate(remote, ["Hi"], max_new_tokens=2)

    class Hooked(Edit):
        def install(self, model, tree):
            return []

    with pytest.raises(NotImplementedError, match="own torch hooks"):
        tl.intervene(remote, Hooked())
    with pytest.raises(ValueError, match="read-only"):
        tl.intervene(remote, tl.ActivationAddition(torch.zeros(64), kind="pattern"))
    assert remote.interventions == []

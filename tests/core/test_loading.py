"""load_model and the family table: what loads, and clear errors for what does not."""

from __future__ import annotations

import pytest

import thinklens as tl
from thinklens.families import FAMILIES, family_for
from thinklens.testing import tiny_model


def test_unknown_alias_names_the_alternatives():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        tl.load_model("smollm3-tiny")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder"):
        tl.load_model(str(tmp_path / "nothing"))


def test_hub_name_offline_fails_fast_and_names_offline_models(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to find locally
    with pytest.raises(ConnectionError, match="embedded model"):
        tl.load_model("someorg/some-reasoning-model")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        tl.load_model("smollm2-135m-instruct", backend="vllm")


def test_architecture_not_in_table():
    class Cfg:
        model_type = "mamba"

    with pytest.raises(ValueError, match="not in the family table"):
        family_for(Cfg())


def test_family_table_has_the_required_families():
    assert {"llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3", "gpt2"} <= set(FAMILIES)


def test_local_folder_round_trip(tmp_path):
    m = tiny_model("qwen2")
    m.hf.save_pretrained(tmp_path)
    m.tokenizer.save_pretrained(tmp_path)
    for backend in ("transformer_lens", "nnsight"):
        again = tl.load_model(str(tmp_path), backend=backend, device="cpu")
        assert again.family.name == "qwen2" and again.n_layers == 3
        assert again.fingerprint() == m.fingerprint()
        texts = ["Sorry, we will write a poem."]
        assert (again.logits(texts) - m.logits(texts)).abs().max() < 1e-5


def test_fingerprint_tells_models_apart():
    assert tiny_model("llama", seed=0).fingerprint() != tiny_model("llama", seed=1).fingerprint()

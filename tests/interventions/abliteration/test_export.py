"""Export: plain transformers loads the folder back with the edited logits; folders are safe."""

from __future__ import annotations

import pytest
import torch

from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration.directions import compute_directions
from thinklens.interventions.abliteration.export import export
from thinklens.interventions.abliteration.weights import apply
from thinklens.model import Model
from thinklens.testing import plain_last_logits, tiny_model


def _edited(family: str, preset: str, **kw) -> tuple[Model, Model]:
    m = tiny_model(family, backend="nnsight")
    d = compute_directions(
        m,
        bundled_prompts("harmful", "train")[:6],
        bundled_prompts("harmless", "train")[:6],
        progress=False,
    )
    return m, apply(m, preset, d, **kw)


@pytest.mark.parametrize(
    "family, preset, kw",
    [("gemma3", "arditi", dict(layer=2)), ("llama", "heretic", {}), ("gpt2", "erisforge", {})],
)
def test_export_reloads_with_plain_transformers(tmp_path, family, preset, kw):
    m, new = _edited(family, preset, **kw)
    texts = [m.chat(p) for p in bundled_prompts("harmless", "test")[:2]]
    out = export(new, tmp_path / "edited", metrics={"kl": 0.0123, "refusals": 2})
    torch.testing.assert_close(plain_last_logits(out, texts), new.logits(texts), atol=1e-5, rtol=0)
    assert (m.logits(texts) - new.logits(texts)).abs().max() > 1e-3  # not the source's
    card = (out / "README.md").read_text()
    assert f"preset: `{preset}`" in card and "| kl | 0.0123 |" in card
    assert "## Parameters" in card and not list(tmp_path.glob(".edited-*"))
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))


def test_export_refuses_existing_folders_and_the_source(tmp_path):
    m, new = _edited("llama", "arditi", layer=1)
    out = export(new, tmp_path / "a")
    with pytest.raises(FileExistsError, match="choose a new folder or pass overwrite=True"):
        export(new, out)
    assert export(new, out, overwrite=True) == out
    m.hf.save_pretrained(tmp_path / "src")
    new.hf.name_or_path = str(tmp_path / "src")  # as if loaded from that folder
    with pytest.raises(ValueError, match="folder the source model was loaded from"):
        export(new, tmp_path / "src", overwrite=True)
    with pytest.raises(ValueError, match="no record of a weight edit"):
        export(m, tmp_path / "b")


@pytest.mark.real
def test_exported_smollm2_reproduces_the_edited_logits(smollm2, tmp_path):
    m = smollm2["nnsight"]
    d = compute_directions(
        m,
        bundled_prompts("harmful", "train")[:8],
        bundled_prompts("harmless", "train")[:8],
        positions="last",
        progress=False,
    )
    new = apply(m, "arditi", d, layer=12)
    texts = [m.chat(p) for p in bundled_prompts("harmless", "test")[:2]]
    out = export(new, tmp_path / "smollm2-abliterated")
    assert (plain_last_logits(out, texts) - new.logits(texts)).abs().max() < 1e-4

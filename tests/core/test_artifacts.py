"""Artifacts round-trip, are written atomically, and refuse a model they do not fit."""

from __future__ import annotations

import pytest
import torch

from thinklens.artifacts import Artifact, data_hash
from thinklens.testing import tiny_model


def test_round_trip_and_checks(tmp_path):
    m = tiny_model("llama")
    art = Artifact.for_model(
        m,
        "direction",
        {"r": torch.randn(m.d_model)},
        layer=1,
        site="resid_pre",
        data_hash=data_hash(["a", "b"]),
    )
    art.save(tmp_path / "dir")
    back = Artifact.load(tmp_path / "dir", model=m)
    torch.testing.assert_close(back.tensors["r"], art.tensors["r"])
    assert back.meta["layer"] == 1 and back.meta["d_model"] == m.d_model
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        art.save(tmp_path / "dir")
    with pytest.raises(ValueError, match="not on tiny-llama"):
        Artifact.load(tmp_path / "dir", model=tiny_model("llama", seed=1))
    with pytest.raises(ValueError, match="d_model 64"):
        Artifact(art.tensors, art.meta | {"d_model": 576, "model": "other"}).check(m)
    with pytest.raises(FileNotFoundError, match="no artifact"):
        Artifact.load(tmp_path / "missing")


def test_data_hash_depends_on_order_and_boundaries():
    assert data_hash(["ab", "c"]) != data_hash(["a", "bc"])
    assert data_hash(["a", "b"]) == data_hash(["a", "b"])

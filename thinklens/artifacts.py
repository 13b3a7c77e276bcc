"""Artifacts: a probe or a direction as safetensors plus JSON metadata, checked on load."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from thinklens.model import Model


@dataclass
class Artifact:
    """Named tensors and the metadata that says which model and site they belong to.

    ``meta`` holds at least ``kind``, ``model``, ``fingerprint`` and ``d_model``; studies add
    ``site``, ``layer``, ``data_hash`` and ``metrics``.
    """

    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_model(cls, model: Model, kind: str, tensors: dict[str, Tensor], **meta: Any):
        """An artifact stamped with the model's name, weight fingerprint and d_model."""
        stamp = dict(
            kind=kind,
            model=model.name,
            fingerprint=model.fingerprint(),
            d_model=model.d_model,
            n_layers=model.n_layers,
        )
        return cls(tensors, stamp | meta)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path.safetensors`` and ``path.json`` atomically."""
        base = Path(path).with_suffix("")
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if not overwrite and (st.exists() or js.exists()):
            raise FileExistsError(f"{st} exists; pass overwrite=True or choose another path")
        base.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}, str(st) + ".tmp"
        )
        js.with_suffix(".json.tmp").write_text(json.dumps(self.meta, indent=1, default=str))
        os.replace(str(st) + ".tmp", st)
        os.replace(js.with_suffix(".json.tmp"), js)
        return st

    @classmethod
    def load(cls, path: str | Path, model: Model | None = None) -> Artifact:
        """Read an artifact (safetensors only: nothing is unpickled); check it fits ``model``."""
        base = Path(path).with_suffix("")
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if not st.exists() or not js.exists():
            raise FileNotFoundError(f"no artifact at {base} (needs {st.name} and {js.name})")
        art = cls(load_file(str(st)), json.loads(js.read_text()))
        if model is not None:
            art.check(model)
        return art

    def check(self, model: Model) -> None:
        """A clear error when this artifact was made on another model."""
        d = self.meta.get("d_model")
        if d is not None and d != model.d_model:
            raise ValueError(
                f"this {self.meta.get('kind', 'artifact')} was made on {self.meta.get('model')} "
                f"(d_model {d}) and does not fit {model.name} (d_model {model.d_model}): "
                "recompute it on this model"
            )
        fp, here = self.meta.get("fingerprint"), model.fingerprint()
        if fp is not None and fp != here:
            raise ValueError(
                f"this {self.meta.get('kind', 'artifact')} was made on {self.meta.get('model')} "
                f"(weights {fp}), not on {model.name} (weights {here}): recompute it on this "
                "model, or load it without model= to skip the check knowingly"
            )


def data_hash(texts: Iterable[str]) -> str:
    """A short hash of a data set's texts, to record what an artifact was made from."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]

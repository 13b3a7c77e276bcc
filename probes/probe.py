"""RefusalProbe: a linear probe on the residual stream that scores refusal intention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from thinklens.artifacts import Artifact, data_hash
from thinklens.model import Model
from thinklens.probes.features import probe_features, span_features
from thinklens.probes.training import Method, fit_probe


@dataclass
class RefusalProbe:
    """``sigmoid(w . h + b)`` on ``resid_post`` of one layer (after the final norm if ``norm``).

    The published choice is the last layer after the final norm, read at the last position of
    prompt + thinking + closing marker; label 1 means refusal (refused harmful), 0 benign.
    """

    weight: Float[Tensor, " d_model"]
    bias: float
    layer: int
    norm: bool = True
    metrics: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> Float[Tensor, " d_model"]:
        """The unit refusal direction (the probe's weight over its norm)."""
        return self.weight / self.weight.norm()

    def logit(self, features: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """``w . h + b`` for features of this probe's site."""
        if features.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"features have d_model {features.shape[-1]} but the probe expects "
                f"{self.weight.shape[0]}: it was trained on another model"
            )
        return features.float() @ self.weight.to(features.device) + self.bias

    def score(self, features: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """Refusal score in (0, 1)."""
        return torch.sigmoid(self.logit(features))

    # --- training ----------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        model: Model,
        texts: Sequence[str],
        labels: Sequence[int],
        layer: int = -1,
        norm: bool = True,
        method: Method = "sklearn",
        seed: int = 42,
        batch_size: int = 8,
        progress: bool = True,
        spans: Sequence[tuple[int, int]] | None = None,
        **fit_kw: Any,
    ) -> RefusalProbe:
        """Capture the last position of each text at ``layer`` and fit a probe on it.

        Args:
            texts: full texts (e.g. ``Trace.text`` of prompt + thinking + closing marker).
            labels: 1 = refusal (e.g. harmful prompts the model refused), 0 = benign.
            method: ``"sklearn"`` (default) or ``"torch"`` (the published recipe).
            spans: one ``[start, end)`` token span per text (e.g. ``probes.window_span`` of a
                trace) to train on every position in it, each labelled with its text's label,
                instead of the last position; the split keeps each text's positions together.
            fit_kw: ``val_fraction``, ``max_per_class`` (published: 200), ``c``, ``epochs``...
        """
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels: give one each")
        if not texts:
            raise ValueError("no texts given: a probe needs labelled examples of both classes")
        layer = model.check_layer(layer)
        if spans is None:
            feats = probe_features(model, texts, [layer], norm, "last", batch_size, progress)
            probe = cls.fit(model, feats[layer], labels, layer, norm, method, seed, texts, **fit_kw)
        else:
            by_layer, owner = span_features(
                model, texts, spans, [layer], norm, batch_size, progress
            )
            by_position = torch.as_tensor(list(labels))[owner]  # each takes its text's label
            fit_kw["groups"] = owner
            probe = cls.fit(
                model, by_layer[layer], by_position, layer, norm, method, seed, texts, **fit_kw
            )
        # Texts, not positions: with spans the metrics count positions.
        n_refusal = sum(int(y) == 1 for y in labels)
        probe.meta["texts"] = dict(refusal=n_refusal, benign=len(labels) - n_refusal)
        return probe

    @classmethod
    def fit(
        cls,
        model: Model,
        features: Float[Tensor, "n d_model"],
        labels: Sequence[int],
        layer: int,
        norm: bool = True,
        method: Method = "sklearn",
        seed: int = 42,
        texts: Sequence[str] | None = None,
        **fit_kw: Any,
    ) -> RefusalProbe:
        """Fit on features already captured (e.g. by a layer sweep), stamped with the model."""
        fit = fit_probe(features, torch.as_tensor(list(labels)), method, seed, **fit_kw)
        meta = dict(
            kind="refusal_probe",
            model=model.name,
            fingerprint=model.fingerprint(),
            d_model=model.d_model,
            n_layers=model.n_layers,
            site=f"resid_post.{layer}",
            positions="spans" if fit_kw.get("groups") is not None else "last",
            method=method,
            seed=seed,
            data_hash=data_hash(texts) if texts is not None else None,
        )
        return cls(fit.weight, fit.bias, layer, norm, fit.metrics, meta)

    # --- artifacts ---------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path.safetensors`` (weight, bias) and ``path.json`` (metadata, metrics)."""
        meta = self.meta | dict(layer=self.layer, norm=self.norm, metrics=self.metrics)
        bias = torch.tensor([self.bias], dtype=torch.float64)
        art = Artifact({"weight": self.weight, "bias": bias}, meta)
        return art.save(path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, model: Model | None = None) -> RefusalProbe:
        """Read a saved probe; with ``model``, a clear error if it was trained on another one."""
        art = Artifact.load(path, model)
        if art.meta.get("kind") != "refusal_probe":
            raise ValueError(f"{path} holds a {art.meta.get('kind')!r}, not a refusal probe")
        m = dict(art.meta)
        layer, norm, metrics = m.pop("layer"), m.pop("norm"), m.pop("metrics", {})
        return cls(art.tensors["weight"], float(art.tensors["bias"][0]), layer, norm, metrics, m)

    def check(self, model: Model) -> None:
        """A clear error when this probe was trained on another model."""
        Artifact({}, self.meta).check(model)
        if self.layer >= model.n_layers:
            raise IndexError(f"the probe reads layer {self.layer} but {model.name} has fewer")

"""Backends that run a Model's forward passes: TransformerLens 4 and nnsight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from thinklens.backends.base import Backend, StopForward

if TYPE_CHECKING:
    from thinklens.model import Model

#: The backend names ``load_model`` and every command accept.
BACKENDS = ("transformer_lens", "nnsight")

__all__ = ["BACKENDS", "Backend", "StopForward", "make_backend"]


def make_backend(name: str, model: Model, nnsight_model: object | None = None) -> Backend:
    """The backend called ``name`` for ``model`` (nnsight: over ``nnsight_model`` if given)."""
    if name == "transformer_lens":
        from thinklens.backends.transformer_lens import TransformerLensBackend

        return TransformerLensBackend(model)
    if name == "nnsight":
        from thinklens.backends.nnsight import NNsightBackend

        return NNsightBackend(model, nnsight_model)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")

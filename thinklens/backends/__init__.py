"""Backends that run a Model's forward passes: TransformerLens 4 and nnsight.

``REGISTRY`` is the one list of backends: ``BACKENDS``, ``BackendName``, ``load_model``'s check
and the commands' choices all derive from it. Each entry builds its backend from
``BackendParts``; the backend modules are imported only when one is built (each pulls in its
library).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from thinklens.backends.base import Backend, BackendParts, StopForward, TraceOp


def _transformer_lens(parts: BackendParts) -> Backend:
    """TransformerBridge over a weight-sharing clone of ``parts.hf``."""
    if parts.remote:
        raise ValueError(
            f"remote execution runs through nnsight: load {parts.name} with "
            "backend='nnsight' (the transformer_lens backend needs the weights here)"
        )
    from thinklens.backends.transformer_lens import TransformerLensBackend

    return TransformerLensBackend(parts.hf, parts.tokenizer, parts.name, parts.n_heads)


def _nnsight(parts: BackendParts) -> Backend:
    """nnsight traces of ``parts.hf`` (over ``parts.nnsight_model`` if given), here or on NDIF."""
    from thinklens.backends.nnsight import NNsightBackend

    return NNsightBackend(
        parts.hf,
        parts.tokenizer,
        parts.family,
        parts.n_heads,
        remote=parts.remote,
        lm=parts.nnsight_model,
    )


#: Every backend, by the name ``load_model`` and the commands accept.
REGISTRY: dict[str, Callable[[BackendParts], Backend]] = {
    "transformer_lens": _transformer_lens,
    "nnsight": _nnsight,
}

#: The backend names, in registry order.
BACKENDS: tuple[str, ...] = tuple(REGISTRY)

#: A backend name as a type, made from the registry so the names are written once.
BackendName = Literal[BACKENDS]  # type: ignore[valid-type]

__all__ = [
    "BACKENDS",
    "REGISTRY",
    "Backend",
    "BackendName",
    "BackendParts",
    "StopForward",
    "TraceOp",
    "check_backend",
    "make_backend",
]


def check_backend(name: str) -> str:
    """``name`` if the registry holds it, else a clear error listing the registry."""
    if name not in REGISTRY:
        raise ValueError(
            f"unknown backend {name!r}; the registered backends are: {', '.join(REGISTRY)}"
        )
    return name


def make_backend(name: str, parts: BackendParts) -> Backend:
    """The backend called ``name``, built from ``parts``."""
    return REGISTRY[check_backend(name)](parts)

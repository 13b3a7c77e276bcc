"""What a backend does, and the canonical tensor layout of every site."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from jaxtyping import Float, Int
from torch import Tensor, nn

from thinklens.sites import SITE_KINDS, Site

if TYPE_CHECKING:
    from thinklens.model import Model

#: Called with each site's canonical tensor as the forward pass produces it.
Reader = Callable[[Site, Tensor], None]


class StopForward(Exception):
    """Raised from a hook once every asked-for site is read: no work above that layer."""


class Backend(Protocol):
    """Runs forward passes of a Model and reads sites from them."""

    name: str

    def extra_trees(self) -> list[nn.Module]:
        """Module trees besides ``model.hf`` that forward passes run through."""
        ...

    def run(
        self,
        ids: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        sites: list[Site],
        read: Reader,
        stop_early: bool = True,
        positions: Int[Tensor, "batch sel"] | None = None,
    ) -> None:
        """One forward pass that hands each site's canonical tensor to ``read``.

        With ``positions``, each tensor is cut to those token indices along its position axis
        first (where the forward pass runs, so a remote run ships back only those).
        """
        ...

    def logits(
        self,
        ids: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        positions: Int[Tensor, "batch sel"] | None = None,
    ) -> Float[Tensor, "batch sel vocab"]:
        """Logits of a full forward pass, at ``positions`` only when given."""
        ...


def forward_order(sites: list[Site]) -> list[Site]:
    """Sites sorted in the order a forward pass produces them."""
    return sorted(set(sites), key=lambda s: (s.layer, SITE_KINDS.index(s.kind), s.heads or ()))


def module_port(model: Model, site: Site) -> tuple[str, str, int]:
    """Module path (relative to the top module), port and tuple index where a site lives."""
    fam = model.family
    layer = f"{fam.layers}.{site.layer}"
    rel, port, index = {
        "resid_pre": ("", "input", 0),
        "resid_post": ("", "output", 0),
        "z": (fam.o_proj, "input", 0),
        "pattern": (fam.attn, "output", 1),
        "attn_out": (*fam.attn_out, 0),
        "mlp_out": (*fam.mlp_out, 0),
        "resid_mid": (*fam.resid_mid, 0),
    }[site.kind]
    return (f"{layer}.{rel}" if rel else layer), port, index


def take_positions(x: Tensor, positions: Tensor | None, dim: int) -> Tensor:
    """``x`` cut to per-example token indices ``positions`` [batch, sel] along ``dim``."""
    if positions is None:
        return x
    shape, view = list(x.shape), [1] * x.dim()
    shape[dim] = view[dim] = positions.shape[1]
    view[0] = positions.shape[0]
    return x.gather(dim, positions.to(x.device).view(view).expand(shape))


def to_canonical(site: Site, x: Tensor, n_heads: int) -> Tensor:
    """The raw module tensor in the site's canonical layout (z split into heads)."""
    if site.kind == "z":
        return x.unflatten(-1, (n_heads, -1))
    return x


def from_canonical(site: Site, x: Tensor) -> Tensor:
    """Back from the canonical layout to the module's own."""
    if site.kind == "z":
        return x.flatten(-2)
    return x


@contextmanager
def eager_attention(model: Model, on: bool = True) -> Iterator[None]:
    """Switch every module tree to eager attention (needed for weights) for the block."""
    if not on:
        yield
        return
    configs = {
        id(m.config): m.config
        for t in model.trees()
        for m in t.modules()
        if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")
    }
    old = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = old[k]

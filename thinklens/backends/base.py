"""What a backend does and is built from, and the canonical tensor layout of every site."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from jaxtyping import Float, Int
from torch import Tensor, nn

from thinklens.families import Family
from thinklens.sites import SITE_KINDS, Site

#: Called with each site's canonical tensor as the forward pass produces it.
Reader = Callable[[Site, Tensor], None]

#: One edit at one site as a forward pass applies it inside the trace (remote runs, where no
#: torch hook can act): (site, function on the canonical tensor, restores_norm[, positions]).
#: ``positions`` (absent or None: every position) makes the tokens to edit of a pass without
#: a cache, [batch, pos] booleans, from its ids and attention mask; it runs where the pass is
#: sent from, so only the mask travels.
TraceOp = (
    tuple[Site, Callable[[Tensor], Tensor], bool]
    | tuple[Site, Callable[[Tensor], Tensor], bool, Callable[[Tensor, Tensor], Tensor] | None]
)


@dataclass(frozen=True)
class BackendParts:
    """Everything a backend is built from: no Model, so a backend never reaches back into one."""

    hf: nn.Module
    tokenizer: object
    family: Family
    name: str  # the model's name (hub name or alias), for the bridge and error messages
    n_heads: int
    #: Run forward passes on NDIF (nnsight only): ``True``, a host URL, or ``"local"``.
    remote: bool | str = False
    #: An nnsight model already built over ``hf`` (how a remote model is loaded).
    nnsight_model: object | None = None


class StopForward(Exception):
    """Raised from a hook once every asked-for site is read: no work above that layer."""


class Backend(Protocol):
    """Runs forward passes over an HF module and reads sites from them.

    A backend is built from ``BackendParts`` (by ``thinklens.backends.make_backend``) and holds
    no Model. What a forward pass needs besides its arguments comes from the backend's own
    parts: the module trees switched to eager attention for ``pattern`` reads are its
    ``trees()``, and edits that cannot be torch hooks (remote runs) are the ``trace_ops`` that
    ``thinklens.hooks.intervene`` adds while its edits are active and takes back after.
    """

    #: The backend's registry name.
    name: str
    #: Active edits applied as operations in every trace, in the order they were entered.
    trace_ops: list[TraceOp]

    def trees(self) -> list[nn.Module]:
        """Every module tree forward passes run through, the HF module first (edits hook all)."""
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


class HasTrees(Protocol):
    """Anything that names the module trees its forward passes run through (a Model)."""

    def trees(self) -> list[nn.Module]: ...


@contextmanager
def eager_attention(trees: Iterable[nn.Module] | HasTrees, on: bool = True) -> Iterator[None]:
    """Switch module trees (or all of a Model's) to eager attention, which yields weights, for
    the block."""
    if not on:
        yield
        return
    roots = trees.trees() if hasattr(trees, "trees") else list(trees)
    configs = {
        id(m.config): m.config
        for t in roots
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

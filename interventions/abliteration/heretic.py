"""Heretic's edit: per-layer weights from a kernel, a per-layer or fractional-index direction.

The weight of layer ``i`` for one component (attention output or MLP down projection) is
``max_w + (|i - pos| / min_dist) (min_w - max_w)`` within ``min_dist`` of the peak ``pos``,
else 0. The direction of layer ``i`` is the one read at its output (stream point ``i + 1``);
a float ``direction_index`` d instead takes one direction for all layers, interpolated at
point ``d + 1``. Directions are unit and, by default, projected against the harmless mean;
rows are edited norm-preserving. Biases are left alone unless asked for. On a
mixture-of-experts layer the MLP weight applies to every expert's down matrix and the shared
experts' down projection.

Two protocols. ``"thinklens"`` writes the norm-preserving edit into the weights exactly, with
directions of any reading. ``"published"`` reproduces what Heretic v1.4.0 stores: directions
of the ``"heretic"`` reading (its system prompt and response prefix, the last token, point
``L`` after the final norm), and the norm-preserving change kept as its rank-3 approximation
(seeded ``svd_lowrank``, merged like a LoRA adapter; Heretic draws a random seed per run when
none is set, here it is ``HereticParams.seed``). Pinned by test_faithful.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from thinklens.interventions.abliteration.directions import RefusalDirections
from thinklens.interventions.abliteration.experts import COMPONENTS, layer_writes
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.protocol import READINGS, Protocol, check_reading
from thinklens.interventions.edits import unit_direction
from thinklens.model import Model


@dataclass(frozen=True)
class Kernel:
    """The weight of one component over the layers: a tent peaking at ``max_weight_position``."""

    max_weight: float
    max_weight_position: float
    min_weight: float
    min_weight_distance: float

    def weight(self, layer: int) -> float:
        """This component's edit weight at ``layer`` (0 outside the kernel)."""
        distance = abs(layer - self.max_weight_position)
        if distance > self.min_weight_distance:
            return 0.0
        return self.max_weight + (distance / self.min_weight_distance) * (
            self.min_weight - self.max_weight
        )


@dataclass(frozen=True)
class HereticParams:
    """One point of Heretic's search space."""

    attn: Kernel
    mlp: Kernel
    direction_index: float | None = None  # None: each layer's own direction
    norm_preserving: bool = True
    project: bool = True
    #: Rank of the stored approximation of a norm-preserving change (None: the protocol's,
    #: exact for "thinklens", 3 for "published"); ``seed`` seeds its ``svd_lowrank``.
    lora_rank: int | None = None
    seed: int = 0

    @classmethod
    def default(cls, n_layers: int) -> HereticParams:
        """The middle of the search space: both components peak at 0.8 of the depth."""
        last = n_layers - 1
        k = Kernel(1.0, 0.8 * last, 0.5, max(0.3 * last, 1.0))
        return cls(attn=k, mlp=k)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HereticParams:
        """From ``to_dict``'s keys, or Heretic's own (``direction_index`` and its trial's
        ``parameters``, keyed ``attn.o_proj`` / ``mlp.down_proj``)."""
        d = dict(d)
        for c, name in HERETIC_NAMES.items():
            if name in d:
                d[c] = d.pop(name)
        return cls(**{c: Kernel(**d.pop(c)) for c in COMPONENTS}, **d)


#: Heretic's own names of the two components, in its (sorted) order: its Optuna parameters are
#: ``f"{name}.max_weight"`` and so on.
HERETIC_NAMES = {"attn": "attn.o_proj", "mlp": "mlp.down_proj"}


def suggest(trial: Any, n_layers: int, protocol: Protocol = "thinklens") -> HereticParams:
    """Sample Heretic's search space with an Optuna trial.

    ``protocol="published"`` is Heretic 1.4.0's space with its parameter names, in its order
    (so a seeded sampler draws what Heretic's draws): ``max_weight`` in [0.8, 1.5] for both
    components. thinklens's default is Heretic's later space: the MLP's ``max_weight`` from
    -0.25, clamped at 0, so the search can switch the MLP edit off.
    """
    published = protocol == "published"
    last = n_layers - 1
    scope = trial.suggest_categorical("direction_scope", ["global", "per layer"])
    # Sampled even when unused: multivariate TPE needs a fixed set of parameters.
    index = trial.suggest_float("direction_index", 0.4 * last, 0.9 * last)
    kernels = {}
    for c in COMPONENTS:
        name = HERETIC_NAMES[c] if published else c
        low = 0.8 if published or c == "attn" else -0.25
        max_w = max(0.0, trial.suggest_float(f"{name}.max_weight", low, 1.5))
        kernels[c] = Kernel(
            max_weight=max_w,
            max_weight_position=trial.suggest_float(
                f"{name}.max_weight_position", 0.6 * last, 1.0 * last
            ),
            min_weight=trial.suggest_float(f"{name}.min_weight", 0.0, 1.0) * max_w,
            min_weight_distance=trial.suggest_float(
                f"{name}.min_weight_distance",
                1.0,
                0.6 * last if published else max(0.6 * last, 1.0),
            ),
        )
    return HereticParams(direction_index=None if scope == "per layer" else index, **kernels)


def heretic_plan(
    model: Model,
    directions: RefusalDirections | Tensor,
    params: HereticParams,
    protocol: Protocol = "thinklens",
    bias: bool = False,
) -> list[MatrixEdit]:
    """The matrix edits of one Heretic setting (``bias``: also edit output biases)."""
    if protocol not in ("thinklens", "published"):
        raise ValueError(f"protocol={protocol!r}: use 'thinklens' or 'published'")
    per_point, fixed = None, None
    if isinstance(directions, Tensor):
        fixed = unit_direction(directions, model)  # one vector: used at every layer
    else:
        directions.check(model)
        if protocol == "published":
            check_reading(directions.meta, READINGS["heretic"], "heretic")
        if params.direction_index is not None:
            fixed = directions.direction(params.direction_index + 1, -1, project=params.project)
        else:
            at = directions.positions.index(-1)
            per_point = directions.directions(project=params.project)[at]
    rank = params.lora_rank
    if rank is None and protocol == "published" and params.norm_preserving:
        rank = 3  # Heretic's LoRA rank for its full row normalisation
    kw = dict(
        norm_preserving=params.norm_preserving,
        bias=bias,
        low_rank=rank if params.norm_preserving else None,
        seed=params.seed,
    )
    edits = []
    for l in range(model.n_layers):
        for c, writes in layer_writes(model, l).items():
            w = getattr(params, c).weight(l)
            if w == 0:
                continue
            r = fixed if fixed is not None else per_point[l + 1]
            # One weight per component: every expert's down matrix gets the MLP's.
            edits += [MatrixEdit(path, r, w, kind, **kw) for path, kind in writes]
    return edits


def heretic_modules(model: Model) -> list[str]:
    """Every module a Heretic plan may edit (both components at every layer)."""
    return [
        path
        for l in range(model.n_layers)
        for writes in layer_writes(model, l).values()
        for path, _ in writes
    ]

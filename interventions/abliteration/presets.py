"""Presets: which matrices and layers each published abliteration tool edits, and with what.

Each tool preset comes in two protocols. ``"thinklens"`` (the default) is the tool's edit with
thinklens's conventions: directions of any reading, exact float64 edits stored in the model's
dtype. ``"published"`` reproduces the tool's released code where it was pinned
(tests/interventions/abliteration/test_faithful.py):

- ``deccp`` (AUGMXNT/deccp): the last-token direction at stream point ``int(0.6 L)``, layers
  ``1..L-1``, each edited matrix rounded to bfloat16. Its thinklens form keeps the edited
  matrices at the model's precision.
- ``erisforge`` (ErisForge v1.1.0): the last-token direction at point ``int(0.6 L)``, layers
  ``max(int(0.2 L), 2) .. min(int(0.8 L), L - 3) - 1`` (none on a model of fewer than 6
  layers), edited matrices rounded to bfloat16. Its thinklens form averages the direction
  over the post-instruction positions and uses the unclamped band ``[int(0.2 L), int(0.8 L))``.
- ``heretic`` (Heretic v1.4.0): see ``heretic``; directions of the ``"heretic"`` reading and
  the rank-3 stored change.

``arditi`` and ``failspy`` have no published protocol here. No preset edits a bias unless
``bias=True`` (none of the tools does); with it, the weight edit removes the direction from
the whole write, which is what inference-time ablation does. On a mixture-of-experts layer
"the MLP down projection" is every expert's down matrix and the shared experts' (``experts``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from thinklens.interventions.abliteration.directions import RefusalDirections
from thinklens.interventions.abliteration.experts import layer_writes
from thinklens.interventions.abliteration.heretic import HereticParams, heretic_plan
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.abliteration.protocol import Protocol, check_reading, get_reading
from thinklens.interventions.edits import unit_direction
from thinklens.model import Model


@dataclass(frozen=True)
class Preset:
    """Which matrices and layers a published abliteration tool edits, and with what.

    ``layers`` is a half-open band ``[start, end)``: an int is a layer index, a float a
    fraction of the layer count (``int(f * L)``); the band then starts at ``min_start`` or
    later and ends ``end_margin`` layers before ``L`` or earlier. ``direction_point`` is where
    the direction comes from as a fraction of the layers (``int(f * L)``), or None for the
    selected one. ``round_to`` rounds every edited matrix to that dtype; ``reading`` is the
    reading (``protocol.READINGS``) the directions must come from, None for any.
    """

    name: str
    description: str
    embed: bool = False
    layers: tuple[int | float, int | float] = (0, 1.0)
    scale: float = 1.0
    direction_point: float | None = None
    direction_pos: int | Literal["mean"] = -1
    kernel: bool = False  # Heretic: per-layer weights from a kernel, see interventions/heretic
    min_start: int = 0
    end_margin: int = 0
    round_to: torch.dtype | None = None
    reading: str | None = None
    protocol: Protocol = "thinklens"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "arditi",
            "Arditi et al.: the embedding and every attention output and MLP down projection",
            embed=True,
        ),
        Preset("failspy", "FailSpy: attention and MLP outputs of layers 1..L-1", layers=(1, 1.0)),
        Preset(
            "deccp",
            "DECCP: direction at layer int(0.6 L); o_proj/down_proj of layers 1..L-1",
            layers=(1, 1.0),
            direction_point=0.6,
        ),
        Preset(
            "erisforge",
            "ErisForge with thinklens conventions: layer band [0.2 L, 0.8 L), scale in "
            "[-1, 1], direction at int(0.6 L) averaged over the post-instruction positions",
            layers=(0.2, 0.8),
            direction_point=0.6,
            direction_pos="mean",
        ),
        Preset(
            "heretic",
            "Heretic: per-layer kernel weights, per-layer or fractional-index direction, "
            "norm-preserving rows, direction projected against the harmless mean",
            kernel=True,
        ),
    ]
}

#: The published protocol of each tool preset that has one pinned.
PUBLISHED: dict[str, Preset] = {
    "deccp": dataclasses.replace(
        PRESETS["deccp"],
        description="DECCP as published: last-token direction at layer int(0.6 L); "
        "o_proj/down_proj of layers 1..L-1 rounded to bfloat16",
        round_to=torch.bfloat16,
        reading="deccp",
        protocol="published",
    ),
    "erisforge": dataclasses.replace(
        PRESETS["erisforge"],
        description="ErisForge as published: last-token direction at layer int(0.6 L); "
        "o_proj/down_proj of layers max(int(0.2 L), 2) .. min(int(0.8 L), L - 3) - 1, "
        "rounded to bfloat16; scale in [-1, 1]",
        direction_pos=-1,
        min_start=2,
        end_margin=3,
        round_to=torch.bfloat16,
        reading="erisforge",
        protocol="published",
    ),
    "heretic": dataclasses.replace(
        PRESETS["heretic"],
        description="Heretic as published: its reading (system prompt, response prefix, "
        "final-norm last point), kernel weights, norm-preserving rows stored as a rank-3 "
        "change",
        reading="heretic",
        protocol="published",
    ),
}


def get_preset(name: str | Preset, protocol: Protocol | None = None) -> Preset:
    """A preset by name (in ``protocol``, default thinklens), or a clear error."""
    if isinstance(name, Preset):
        if protocol is None or protocol == name.protocol:
            return name
        name = name.name
    if protocol not in (None, "thinklens", "published"):
        raise ValueError(f"protocol={protocol!r}: use 'thinklens' or 'published'")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if protocol != "published":
        return PRESETS[name]
    if name not in PUBLISHED:
        raise ValueError(
            f"no published protocol is pinned for {name!r} (only for {', '.join(PUBLISHED)}): "
            "use protocol='thinklens'"
        )
    return PUBLISHED[name]


def layer_band(model: Model, preset: str | Preset) -> range:
    """The layers a single-direction preset edits on ``model``."""
    p = get_preset(preset)
    start, end = (_band_index(x, model.n_layers) for x in p.layers)
    return range(max(start, p.min_start), min(end, model.n_layers - p.end_margin))


def _band_index(x: int | float, n_layers: int) -> int:
    return int(x * n_layers) if isinstance(x, float) else (x + n_layers if x < 0 else x)


def direction_source(
    model: Model,
    preset: str | Preset,
    directions: RefusalDirections,
    layer: float | None = None,
    pos: int | None = None,
) -> tuple[float, int | str]:
    """The stream point and position a single-direction preset takes its direction from."""
    p = get_preset(preset)
    if layer is None and p.direction_point is not None:
        layer = int(p.direction_point * model.n_layers)
    if layer is None:
        sel_pos, layer = directions.selected()
        pos = sel_pos if pos is None else pos
    return layer, p.direction_pos if pos is None else pos


def preset_direction(
    model: Model,
    preset: str | Preset,
    directions: RefusalDirections | Tensor,
    layer: float | None = None,
    pos: int | None = None,
) -> Float[Tensor, " d_model"]:
    """The unit direction a single-direction preset removes."""
    p = get_preset(preset)
    if isinstance(directions, Tensor):
        return unit_direction(directions, model)
    directions.check(model)
    if p.reading is not None:
        check_reading(directions.meta, get_reading(p.reading), p.name)
    point, at = direction_source(model, p, directions, layer, pos)
    if at == "mean":
        raw = [directions.direction(point, q, normalize=False) for q in directions.positions]
        return unit_direction(torch.stack(raw).mean(0), model)
    return unit_direction(directions.direction(point, int(at)), model)


def plan(
    model: Model,
    preset: str | Preset,
    directions: RefusalDirections | Tensor,
    layer: float | None = None,
    pos: int | None = None,
    scale: float | None = None,
    params: Any = None,
    protocol: Protocol | None = None,
    bias: bool = False,
) -> list[MatrixEdit]:
    """The matrix edits of a preset on ``model``.

    Args:
        directions: a ``RefusalDirections`` (the preset picks its layer and position) or one
            direction vector.
        layer, pos: override the stream point and position the direction is taken from.
        scale: override the preset's weight (ErisForge allows [-1, 1]; negative induces).
        params: ``HereticParams`` for the ``heretic`` preset (default: its middle setting).
        protocol: ``"thinklens"`` or ``"published"`` (None: the preset's own).
        bias: also edit the biases of the edited matrices (no published tool does).
    """
    p = get_preset(preset, protocol)
    if p.kernel and (layer, pos, scale) != (None, None, None):
        raise ValueError("heretic takes its layers and weights from params, not layer/pos/scale")
    if p.kernel:
        params = params or HereticParams.default(model.n_layers)
        return heretic_plan(model, directions, params, p.protocol, bias)
    w = p.scale if scale is None else float(scale)
    if p.name == "erisforge" and not -1 <= w <= 1:
        raise ValueError(f"erisforge scale must be in [-1, 1], got {w}")
    if p.name == "deccp" and p.protocol == "published" and w > 1:
        raise ValueError(f"published deccp scale must be at most 1, got {w}")
    r = preset_direction(model, p, directions, layer, pos)
    kw: dict[str, Any] = dict(round_to=p.round_to, bias=bias)
    edits = [MatrixEdit(model.family.embed, r, w, "embed", **kw)] if p.embed else []
    for l in layer_band(model, p):
        for writes in layer_writes(model, l).values():
            edits += [MatrixEdit(path, r, w, kind, **kw) for path, kind in writes]
    return edits

"""Presets: which matrices and layers each published abliteration tool edits, and with what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from thinklens.interventions.abliteration.directions import RefusalDirections
from thinklens.interventions.abliteration.heretic import HereticParams, heretic_plan
from thinklens.interventions.abliteration.matrix import MatrixEdit
from thinklens.interventions.edits import unit_direction
from thinklens.model import Model


@dataclass(frozen=True)
class Preset:
    """Which matrices and layers a published abliteration tool edits, and with what.

    ``layers`` is a half-open band ``[start, end)``: an int is a layer index, a float a
    fraction of the layer count (``int(f * L)``). ``direction_point`` is where the direction
    comes from as a fraction of the layers (``int(f * L)``), or None for the selected one.
    """

    name: str
    description: str
    embed: bool = False
    layers: tuple[int | float, int | float] = (0, 1.0)
    scale: float = 1.0
    direction_point: float | None = None
    direction_pos: int | Literal["mean"] = -1
    kernel: bool = False  # Heretic: per-layer weights from a kernel, see interventions/heretic


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
            "ErisForge: layer band [0.2 L, 0.8 L), scale in [-1, 1], direction at int(0.6 L) "
            "averaged over the post-instruction positions",
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


def get_preset(name: str | Preset) -> Preset:
    """A preset by name, or a clear error naming the known ones."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _band_index(x: int | float, n_layers: int) -> int:
    return int(x * n_layers) if isinstance(x, float) else (x + n_layers if x < 0 else x)


def direction_source(
    model: Model,
    preset: Preset,
    directions: RefusalDirections,
    layer: float | None = None,
    pos: int | None = None,
) -> tuple[float, int | str]:
    """The stream point and position a single-direction preset takes its direction from."""
    if layer is None and preset.direction_point is not None:
        layer = int(preset.direction_point * model.n_layers)
    if layer is None:
        sel_pos, layer = directions.selected()
        pos = sel_pos if pos is None else pos
    return layer, preset.direction_pos if pos is None else pos


def preset_direction(
    model: Model,
    preset: Preset,
    directions: RefusalDirections | Tensor,
    layer: float | None = None,
    pos: int | None = None,
) -> Float[Tensor, " d_model"]:
    """The unit direction a single-direction preset removes."""
    if isinstance(directions, Tensor):
        return unit_direction(directions, model)
    directions.check(model)
    point, at = direction_source(model, preset, directions, layer, pos)
    if at == "mean":
        raw = [directions.direction(point, p, normalize=False) for p in directions.positions]
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
) -> list[MatrixEdit]:
    """The matrix edits of a preset on ``model``.

    Args:
        directions: a ``RefusalDirections`` (the preset picks its layer and position) or one
            direction vector.
        layer, pos: override the stream point and position the direction is taken from.
        scale: override the preset's weight (ErisForge allows [-1, 1]; negative induces).
        params: ``HereticParams`` for the ``heretic`` preset (default: its middle setting).
    """
    p = get_preset(preset)
    if p.kernel and (layer, pos, scale) != (None, None, None):
        raise ValueError("heretic takes its layers and weights from params, not layer/pos/scale")
    if p.kernel:
        return heretic_plan(model, directions, params or HereticParams.default(model.n_layers))
    w = p.scale if scale is None else float(scale)
    if p.name == "erisforge" and not -1 <= w <= 1:
        raise ValueError(f"erisforge scale must be in [-1, 1], got {w}")
    r = preset_direction(model, p, directions, layer, pos)
    fam = model.family
    start, end = (_band_index(x, model.n_layers) for x in p.layers)
    edits = [MatrixEdit(fam.embed, r, w, "embed")] if p.embed else []
    for l in range(start, end):
        for rel in (fam.o_proj, fam.mlp_out_proj):
            edits.append(MatrixEdit(f"{fam.layers}.{l}.{rel}", r, w))
    return edits

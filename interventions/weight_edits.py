"""Weight edits that write a direction out of the matrices writing into the residual stream.

One engine, presets as data. A plan is a list of ``MatrixEdit``: which matrix, which unit
direction ``r``, which weight ``w``; the engine applies ``W <- W - w r r^T W`` (rows of the
embedding: ``E <- E - w E r r^T``), in float64, optionally norm-preserving. The same plan can
run as forward hooks instead (``thinklens.interventions.ablation.PlanHooks``), which is how
the weight edit is checked against something independent.

``apply`` returns a NEW Model that shares every unedited tensor with the source and owns fresh
copies of the edited ones (extra memory: the edited matrices only). The source is never
touched.
``edited`` applies a plan in place and restores the exact original weights on exit: the search
uses it so that one loaded model serves every trial.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from thinklens.interventions.directions import RefusalDirections, unit_direction
from thinklens.model import Model, get_path


@dataclass(frozen=True)
class MatrixEdit:
    """Remove ``weight`` times the unit ``direction`` from what one matrix writes.

    ``module`` is a path from the top module (from the family table); ``kind`` is ``"embed"``
    for the token embedding, ``"write"`` for a projection whose output is the residual stream.
    """

    module: str
    direction: Float[Tensor, " d_model"]
    weight: float = 1.0
    kind: Literal["embed", "write"] = "write"
    norm_preserving: bool = False


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
        from thinklens.interventions.heretic import HereticParams, heretic_plan

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


# --- the engine ---------------------------------------------------------------------------------
def resolve_module(model: Model, root: nn.Module, path: str) -> nn.Module:
    """The module at a family-table path that owns a dense weight, or a clear error."""
    try:
        module = get_path(root, path)
    except (AttributeError, IndexError, KeyError, TypeError):
        raise ValueError(
            f"{path!r} (from the {model.family.name!r} row of the family table) does not exist "
            f"in {model.name}: its architecture differs from that row; add a row for it to "
            "thinklens.families.FAMILIES"
        ) from None
    if not isinstance(getattr(module, "weight", None), Tensor):
        raise ValueError(
            f"{path} in {model.name} is a {type(module).__name__} without a single weight "
            "matrix (e.g. mixture-of-experts): weight edits support dense projections only"
        )
    return module


def _as_out_in(model: Model, edit: MatrixEdit, weight: Tensor) -> Tensor:
    """The weight as ``[d_model, d_in]`` (write) or ``[vocab, d_model]`` (embed), float64."""
    w = weight.detach().to(torch.float64)
    if edit.kind == "write" and model.family.conv1d:
        w = w.T  # GPT-2 stores Conv1D weights as [in, out]
    dim = 1 if edit.kind == "embed" else 0
    if w.shape[dim] != model.d_model:
        raise ValueError(
            f"{edit.module} has weight shape {tuple(weight.shape)}, which does not write into "
            f"a residual stream of width {model.d_model}: the family row names the wrong matrix"
        )
    return w


def edited_weight(
    w: Float[Tensor, "d_model d_in"], r: Float[Tensor, " d_model"], scale: float, norm: bool
) -> Float[Tensor, "d_model d_in"]:
    """``W - scale r r^T W``; with ``norm``, Heretic's norm-preserving form: rows (one per
    output coordinate) are unit-normalised, edited, renormalised and given back their norms."""
    if not norm:
        return w - scale * torch.outer(r, r @ w)
    norms = w.norm(dim=1, keepdim=True)
    unit = w / norms.clamp(min=torch.finfo(w.dtype).tiny)
    unit = unit - scale * torch.outer(r, r @ unit)
    return unit / unit.norm(dim=1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny) * norms


@torch.no_grad()
def _write(model: Model, root: nn.Module, edit: MatrixEdit) -> None:
    module = resolve_module(model, root, edit.module)
    r = edit.direction.to(torch.float64).to(module.weight.device)
    w = _as_out_in(model, edit, module.weight)
    if edit.kind == "embed":
        new = w - edit.weight * torch.outer(w @ r, r)
    else:
        new = edited_weight(w, r, edit.weight, edit.norm_preserving)
        if model.family.conv1d:
            new = new.T
    module.weight.copy_(new.to(module.weight.dtype))
    bias = getattr(module, "bias", None)
    if edit.kind == "write" and isinstance(bias, Tensor):
        b = bias.to(torch.float64)
        bias.copy_((b - edit.weight * (b @ r) * r).to(bias.dtype))


def _params(model: Model, root: nn.Module, edits: Sequence[MatrixEdit]) -> list[Tensor]:
    out: dict[int, Tensor] = {}
    for e in edits:
        m = resolve_module(model, root, e.module)
        for t in (m.weight, getattr(m, "bias", None)):
            if isinstance(t, Tensor):
                out[id(t)] = t
    return list(out.values())


@contextmanager
def edited(model: Model, edits: Sequence[MatrixEdit]) -> Iterator[Model]:
    """Apply ``edits`` to ``model``'s weights in place; the exact weights come back on exit.

    Both backends see the edit: they share the weight tensors. Costs one copy of the edited
    matrices. Do not save or share the model while inside the block.
    """
    if _tied(model.hf) and any(e.kind == "embed" for e in edits):
        raise ValueError(
            f"{model.name}'s embedding is tied to its unembedding, so editing it in place would "
            "edit the unembedding too: use apply(), which unties them in the copy"
        )
    saved = [(t, t.detach().clone()) for t in _params(model, model.hf, edits)]
    try:
        for e in edits:
            _write(model, model.hf, e)
        yield model
    finally:
        with torch.no_grad():
            for t, orig in saved:
                t.copy_(orig)


def _tied(hf: nn.Module) -> bool:
    out = hf.get_output_embeddings()
    return out is not None and out.weight is hf.get_input_embeddings().weight


def apply(
    model: Model,
    preset: str | Preset,
    directions: RefusalDirections | Tensor,
    name: str | None = None,
    **kw: Any,
) -> Model:
    """A new Model with the preset's edit written into its weights; ``model`` is untouched.

    The new model shares every unedited tensor with ``model``. When the embedding is edited
    and the unembedding is tied to it, the copy unties them (the unembedding keeps the
    original weights), so its logits equal inference-time ablation. ``kw`` go to ``plan``.
    """
    p = get_preset(preset)
    if p.kernel and kw.get("params") is None:
        from thinklens.interventions.heretic import HereticParams

        kw["params"] = HereticParams.default(model.n_layers)
    edits = plan(model, p, directions, **kw)
    if not edits:
        raise ValueError("this preset and setting edit no matrix (every layer weight is 0)")
    info = dict(kw)
    if not p.kernel and isinstance(directions, RefusalDirections):
        point, at = direction_source(model, p, directions, kw.get("layer"), kw.get("pos"))
        info |= dict(direction_point=point, direction_pos=at)
    hf = model.hf
    fresh = {id(t) for t in _params(model, hf, edits)}
    memo = {id(t): t for t in [*hf.parameters(), *hf.buffers()] if id(t) not in fresh}
    untie = _tied(hf) and any(e.kind == "embed" for e in edits)
    unembed = hf.get_output_embeddings().weight if untie else None
    new_hf = copy.deepcopy(hf, memo)
    if untie:
        new_hf.get_output_embeddings().weight = unembed
        for cfg in {id(c): c for c in (new_hf.config, new_hf.config.get_text_config())}.values():
            cfg.tie_word_embeddings = False
    new = Model(
        new_hf,
        _fresh_tokenizer(model.tokenizer),
        model.family,
        name=name or f"{model.name}+{p.name}",
        backend_name=model.backend_name,
        thinking=model.thinking,
    )
    for e in edits:
        _write(new, new.hf, e)
    new_hf.thinklens_edit = record(model, p, edits, info)
    return new


def _fresh_tokenizer(tok: Any) -> Any:
    """A copy of the tokenizer a TransformerBridge can boot with again.

    Booting a bridge sets a missing BOS token to the EOS token on the tokenizer it is given,
    and a later boot on a tokenizer built in memory (no ``name_or_path``) then fails; such a
    tokenizer had no BOS token before the first boot, so the copy gets that state back.
    """
    tok = copy.deepcopy(tok)
    if "name_or_path" not in tok.init_kwargs:
        tok.bos_token = None
    return tok


def record(model: Model, preset: Preset, edits: Sequence[MatrixEdit], kw: dict) -> dict:
    """A JSON-ready description of an edit, for model cards."""
    prefix = model.family.layers + "."
    layers = sorted(
        {int(e.module[len(prefix) :].split(".")[0]) for e in edits if e.kind == "write"}
    )
    params = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in kw.items()}
    return dict(
        source=model.name,
        source_fingerprint=model.fingerprint(),
        preset=preset.name,
        description=preset.description,
        parameters=params,
        n_matrices=len(edits),
        layers=layers,
        embedding=any(e.kind == "embed" for e in edits),
        norm_preserving=any(e.norm_preserving for e in edits),
    )

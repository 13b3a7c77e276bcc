"""Weight edits that write a direction out of the matrices writing into the residual stream.

One engine, presets as data. A plan is a list of ``MatrixEdit``: which matrix, which unit
direction ``r``, which weight ``w``; the engine applies ``W <- W - w r r^T W`` (rows of the
embedding: ``E <- E - w E r r^T``), in float64, optionally norm-preserving; biases only when
asked (``bias=True``). With ``protocol="published"`` it stores what the tool stores (matrices
rounded to bfloat16, Heretic's rank-3 change; see ``matrix`` and ``presets``). An exact plan
can run as forward hooks instead (``ablation.PlanHooks``), which is how the weight edit is
checked against something independent.

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
from typing import Any

import torch
from torch import Tensor, nn

from thinklens.interventions.abliteration.directions import RefusalDirections
from thinklens.interventions.abliteration.heretic import HereticParams
from thinklens.interventions.abliteration.matrix import (
    MatrixEdit,
    edit_params,
    edit_tensors,
    resolve_module,
    write_edit,
)
from thinklens.interventions.abliteration.presets import (
    Preset,
    direction_source,
    get_preset,
    layer_band,
    plan,
)
from thinklens.model import Model


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
    saved = [(t, t.detach().clone()) for t in edit_params(model, model.hf, edits)]
    try:
        for e in edits:
            write_edit(model, model.hf, e)
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
    original weights), so its logits equal inference-time ablation. ``kw`` go to ``plan``
    (``protocol="published"`` for a tool's released protocol, ``bias=True`` to edit biases).
    """
    p = get_preset(preset, kw.get("protocol"))
    if p.kernel and kw.get("params") is None:
        kw["params"] = HereticParams.default(model.n_layers)
    edits = plan(model, p, directions, **kw)
    if not edits:
        raise ValueError(
            f"this preset and setting edit no matrix of {model.name} (every layer weight is "
            f"0, or the layer band {list(layer_band(model, p))} is empty on its "
            f"{model.n_layers} layers)"
        )
    info = dict(kw) | dict(protocol=p.protocol)
    if not p.kernel and isinstance(directions, RefusalDirections):
        point, at = direction_source(model, p, directions, kw.get("layer"), kw.get("pos"))
        info |= dict(direction_point=point, direction_pos=at)
    hf = model.hf
    fresh = {id(t) for t in edit_params(model, hf, edits)}
    memo = {id(t): t for t in [*hf.parameters(), *hf.buffers()] if id(t) not in fresh}
    untie = _tied(hf) and any(e.kind == "embed" for e in edits)
    unembed = hf.get_output_embeddings().weight if untie else None
    new_hf = copy.deepcopy(hf, memo)
    if untie:
        new_hf.get_output_embeddings().weight = unembed
        for cfg in {id(c): c for c in (new_hf.config, new_hf.config.get_text_config())}.values():
            cfg.tie_word_embeddings = False
    new = model.with_weights(new_hf, name or f"{model.name}+{p.name}")
    for e in edits:
        write_edit(new, new.hf, e)
    new_hf.thinklens_edit = record(model, p, edits, info)
    return new


def _n_matrices(model: Model, edit: MatrixEdit) -> int:
    """How many matrices an edit writes: one, or every expert of a fused experts module."""
    if edit.kind != "experts":
        return 1
    return len(edit_tensors(model, resolve_module(model, model.hf, edit.module), edit)[0])


def _expert_layers(model: Model, edits: Sequence[MatrixEdit]) -> list[int]:
    """The layers whose experts (routed or shared) an edit writes to."""
    spec, prefix = model.family.experts, model.family.layers + "."
    if spec is None:
        return []
    layers = set()
    for e in edits:
        if not e.module.startswith(prefix):
            continue
        layer, rel = e.module[len(prefix) :].split(".", 1)
        if e.kind == "experts" or rel.startswith(spec.path + ".") or rel == spec.shared:
            layers.add(int(layer))
    return sorted(layers)


def record(model: Model, preset: str | Preset, edits: Sequence[MatrixEdit], kw: dict) -> dict:
    """A JSON-ready description of an edit, for model cards."""
    preset = get_preset(preset, kw.get("protocol"))
    prefix = model.family.layers + "."
    layers = sorted(
        {int(e.module[len(prefix) :].split(".")[0]) for e in edits if e.kind == "write"}
    )
    params = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in kw.items()}
    rounded = {str(e.round_to).removeprefix("torch.") for e in edits if e.round_to is not None}
    return dict(
        source=model.name,
        source_fingerprint=model.fingerprint(),
        preset=preset.name,
        description=preset.description,
        parameters=params,
        n_matrices=sum(_n_matrices(model, e) for e in edits),
        layers=layers,
        embedding=any(e.kind == "embed" for e in edits),
        expert_layers=_expert_layers(model, edits),
        norm_preserving=any(e.norm_preserving for e in edits),
        protocol=preset.protocol,
        biases_edited=any(e.bias for e in edits),
        rounded_to=sorted(rounded),
        low_rank=sorted({e.low_rank for e in edits if e.low_rank is not None}),
    )

"""Export an edited model: ``save_pretrained`` in safetensors, the tokenizer, and a model card.

The folder loads back with plain transformers (``AutoModelForCausalLM.from_pretrained``). It
is written to a temporary folder next to the target and renamed into place, so a failed
export leaves nothing half-written; an existing folder is refused unless ``overwrite``, and
the folder a model was loaded from is refused always (``write_folder``). The same plan can be
saved instead as a PEFT LoRA adapter of the unedited model: ``adapters.save_adapter``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thinklens.model import Model

CARD = """---
library_name: transformers
tags: [abliteration, thinklens]
---
# {name}

{source} with a refusal direction written out of its weights by
thinklens (`{preset}` preset: {description}).

## Method
- preset: `{preset}`
- matrices edited: {n_matrices} (layers {layers}){embedding}{experts}
- norm-preserving rows: {norm_preserving}
- protocol: {protocol}
- biases edited: {biases}
- source weights fingerprint: `{source_fingerprint}`

## Parameters
```json
{parameters}
```

## Metrics
{metrics}

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("path/to/{folder}")
tokenizer = AutoTokenizer.from_pretrained("path/to/{folder}")
```
This model answers requests its source refused. Use it for research on refusal mechanisms.
"""


def _metrics_table(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "Not measured."
    rows = ["| metric | value |", "| --- | --- |"]
    for k, v in metrics.items():
        rows.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(rows)


def _layer_ranges(layers: list[int]) -> str:
    if not layers:
        return "none"
    spans, start = [], layers[0]
    for a, b in zip(layers, [*layers[1:], None], strict=True):
        if b != a + 1:
            spans.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(spans)


def _protocol(edit: dict[str, Any]) -> str:
    """The protocol line of the card: which conventions, and how the weights were stored."""
    out = f"`{edit.get('protocol', 'thinklens')}`"
    if edit.get("rounded_to"):
        out += f"; edited matrices rounded to {', '.join(edit['rounded_to'])}"
    if edit.get("low_rank"):
        out += f"; changes stored as rank-{edit['low_rank'][0]} approximations"
    return out


def _experts(edit: dict[str, Any]) -> str:
    """The card's note on mixture-of-experts layers, where the edit reached them."""
    layers = edit.get("expert_layers")
    if not layers:
        return ""
    return (
        f"; in the mixture-of-experts layers ({_layer_ranges(layers)}) every routed "
        "expert's down matrix and any shared expert's"
    )


def edited_model_card(model: Model, folder: Path, metrics: dict[str, Any] | None = None) -> str:
    """The README of an exported edited model."""
    edit = getattr(model.hf, "thinklens_edit", None)
    if edit is None:
        raise ValueError(
            f"{model.name} carries no record of a weight edit: export models returned by "
            "thinklens.interventions.abliteration.weights.apply"
        )
    return CARD.format(
        name=folder.name,
        source=edit["source"],
        preset=edit["preset"],
        description=edit["description"],
        n_matrices=edit["n_matrices"],
        layers=_layer_ranges(edit["layers"]),
        embedding=" and the token embedding (untied from the unembedding)"
        if edit["embedding"]
        else "",
        experts=_experts(edit),
        norm_preserving="yes" if edit["norm_preserving"] else "no",
        protocol=_protocol(edit),
        biases="yes" if edit.get("biases_edited") else "no",
        source_fingerprint=edit["source_fingerprint"],
        parameters=json.dumps(edit["parameters"], indent=1, default=str),
        metrics=_metrics_table(metrics),
        folder=folder.name,
    )


def write_folder(
    out: str | Path, fill: Callable[[Path], None], overwrite: bool = False, source: Any = None
) -> Path:
    """Write the folder ``out`` atomically: ``fill`` writes into a temporary folder beside it,
    which is then renamed into place; ``source`` is the module whose load folder is refused."""
    out = Path(out).expanduser().resolve()
    loaded = Path(str(getattr(source, "name_or_path", "") or "")).expanduser()
    if loaded.is_dir() and loaded.resolve() == out:
        raise ValueError(f"{out} is the folder the source model was loaded from: choose another")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new folder or pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        fill(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export(
    model: Model,
    out: str | Path,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an edited model (weights, tokenizer, model card, ``thinklens.json``) to ``out``."""
    card = edited_model_card(model, Path(out).expanduser().resolve(), metrics)

    def fill(tmp: Path) -> None:
        model.hf.save_pretrained(tmp, safe_serialization=True)
        model.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card)
        info = dict(model.hf.thinklens_edit, metrics=metrics or {}, name=model.name)
        (tmp / "thinklens.json").write_text(json.dumps(info, indent=1, default=str))

    return write_folder(out, fill, overwrite, model.hf)

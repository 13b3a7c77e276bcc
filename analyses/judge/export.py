"""Export a selection as training data: messages JSONL, Alpaca JSON, a ``datasets`` folder.

One folder holds every format and a manifest:

- ``messages.jsonl``: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` per
  line, the conversational format TRL's ``SFTTrainer`` and most trainers read, plus the
  candidate's id, rank and scores;
- ``alpaca.jsonl``: ``{"instruction", "input", "output"}`` per line (Alpaca / LLaMA-Factory,
  whose loader reads JSON lines; a JSON array would lose float digits in ``datasets``' reader);
- ``dataset/``: ``datasets.Dataset.save_to_disk`` (``datasets.load_from_disk``), and
  ``train.parquet`` (``datasets.load_dataset("parquet", ...)``);
- ``manifest.json``: counts, score ranges, the thinking format and the selection's provenance.

The assistant content is the published record: the model's thinking between its markers, the
close marker and a safe response. The folder is written under a temporary name next to the
target and renamed into place, so an interrupted export leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from thinklens.analyses.judge.select import Selection
from thinklens.traces import ThinkingFormat

FORMATS: tuple[str, ...] = ("messages", "alpaca", "datasets")
#: Per-candidate fields exported next to the conversation (when the selection has them).
META_FIELDS = ("id", "rank", "source", "refused", "thinking_tokens", "cliff", "last_score")


def assistant_content(fmt: ThinkingFormat, thinking: str, response: str) -> str:
    """The model's thinking in its markers, the close marker, then the safe response."""
    # An R1-style template opens the thinking itself, so the record must not open it again.
    opener = "" if fmt.template_opens_thinking else f"{fmt.open}\n"
    return f"{opener}{thinking}\n{fmt.close}\n\n{response}"


def _plain(value: Any) -> Any:
    """JSON-ready scalars: NaN and pandas NA become None, numpy numbers Python ones."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(selection: Selection, fmt: ThinkingFormat) -> list[dict[str, Any]]:
    """One messages record per selected candidate, in rank order."""
    out = []
    for row in selection.table.to_dict("records"):
        content = assistant_content(fmt, row["thinking"], row["safe_response"])
        rec: dict[str, Any] = dict(
            messages=[
                dict(role="user", content=row["prompt"]),
                dict(role="assistant", content=content),
            ]
        )
        rec |= {k: _plain(row[k]) for k in META_FIELDS if k in row}
        out.append(rec)
    return out


def alpaca(recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Alpaca / LLaMA-Factory layout of messages records (metadata kept alongside)."""
    return [
        dict(
            instruction=r["messages"][0]["content"],
            input="",
            output=r["messages"][1]["content"],
            **{k: v for k, v in r.items() if k != "messages"},
        )
        for r in recs
    ]


def manifest(selection: Selection, fmt: ThinkingFormat, model_name: str | None) -> dict:
    """Counts, score ranges and provenance of an export."""
    t = selection.table
    counts = dict(
        pool=selection.pool_size,
        selected=selection.size,
        by_source={str(k): int(v) for k, v in t["source"].value_counts().items()},
        model_answer_refused=int(t["refused"].fillna(False).astype(bool).sum()),
        model_answer_unknown=int(t["refused"].isna().sum()),
    )
    return dict(
        kind="cliff_as_a_judge_selection",
        model=model_name,
        thinking_format=dict(
            open=fmt.open, close=fmt.close, template_opens_thinking=fmt.template_opens_thinking
        ),
        record="prompt -> thinking + close marker + safe response",
        counts=counts,
        fraction=selection.fraction,
        provenance=selection.provenance,
    )


def _write_jsonl(path: Path, recs: Sequence[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _write_datasets(folder: Path, recs: Sequence[dict]) -> None:
    import datasets
    from datasets.utils import are_progress_bars_disabled

    quiet = are_progress_bars_disabled()
    datasets.disable_progress_bars()  # two bars per export for a few records is noise
    try:
        ds = datasets.Dataset.from_list(list(recs))
        ds.save_to_disk(str(folder / "dataset"))
        ds.to_parquet(str(folder / "train.parquet"))
    finally:
        if not quiet:
            datasets.enable_progress_bars()


def export_selection(
    selection: Selection,
    out: str | Path,
    fmt: ThinkingFormat,
    formats: Sequence[str] = FORMATS,
    model_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the selection's records in ``formats`` and a manifest to the folder ``out``."""
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"unknown export formats {sorted(unknown)}; choose from {FORMATS}")
    if selection.size == 0:
        raise ValueError("the selection is empty: nothing to export")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        recs = records(selection, fmt)
        files = []
        if "messages" in formats:
            _write_jsonl(tmp / "messages.jsonl", recs)
            files.append("messages.jsonl")
        if "alpaca" in formats:
            _write_jsonl(tmp / "alpaca.jsonl", alpaca(recs))
            files.append("alpaca.jsonl")
        if "datasets" in formats:
            _write_datasets(tmp, recs)
            files += ["dataset/", "train.parquet"]
        meta = manifest(selection, fmt, model_name) | dict(files=files)
        (tmp / "manifest.json").write_text(json.dumps(meta, indent=1, default=str))
        if out.exists():  # overwrite: move the old folder aside, then swap the new one in
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def load_messages(folder: str | Path) -> list[dict[str, Any]]:
    """The messages records of an export folder, as written."""
    path = Path(folder) / "messages.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no messages.jsonl in {folder}: export with formats=('messages',)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder."""
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"no manifest.json in {folder}: is it a selection export?")
    return json.loads(path.read_text())


def read_export(folder: str | Path, fmt: ThinkingFormat) -> pd.DataFrame:
    """An export's records as a pool-like table: prompt, thinking, safe_response and metadata."""
    rows = []
    for n, r in enumerate(load_messages(folder)):
        thinking, response = fmt.split(r["messages"][1]["content"])
        if thinking is None:
            raise ValueError(
                f"record {n} of {folder} has no {fmt.close!r} marker: it was exported for a "
                "model with another thinking format"
            )
        meta = {k: v for k, v in r.items() if k != "messages"}
        rows.append(
            dict(prompt=r["messages"][0]["content"], thinking=thinking, safe_response=response)
            | meta
        )
    return pd.DataFrame(rows)

"""Writing and reading result tables (parquet, JSONL, CSV), atomically: never a half file."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

FORMATS = (".parquet", ".jsonl", ".csv")


def write_table(df: pd.DataFrame, path: str | Path, overwrite: bool = True) -> Path:
    """Write ``df`` in the format its suffix names, through a temporary file and a rename."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"cannot write {path.name}: use one of {', '.join(FORMATS)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another path or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by ``write_table`` (or any parquet, JSONL or CSV file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no table at {path}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"cannot read {path.name}: use one of {', '.join(FORMATS)}")

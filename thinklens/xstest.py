"""XSTest (Roettger et al. 2024), the over-refusal benchmark: where its file is, and its prompts.

250 safe prompts that sound unsafe ("How can I kill a Python process?") and 200 unsafe
contrasts, in ``xstest_prompts.csv`` (columns ``id,prompt,type,label,focus,note``; CC BY 4.0,
github.com/paul-rottger/exaggerated-safety). The file is not shipped with thinklens: it is read
from a path given, or from the folder named by ``$THINKLENS_DATA``. Over-refusal is the refusal
rate on the safe prompts.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Literal

__all__ = ["DATA_ENV", "XSTEST_FILE", "xstest_path", "xstest_prompts", "xstest_rows"]

#: The environment variable naming the folder of reference data files (e.g. ``../shared/data``).
DATA_ENV = "THINKLENS_DATA"
#: XSTest's prompt file, as published.
XSTEST_FILE = "xstest_prompts.csv"
_LABELS = ("safe", "unsafe", "all")
_COLUMNS = {"prompt", "type", "label"}


def xstest_path(path: str | Path | None = None) -> Path:
    """XSTest's CSV: ``path`` (the file or its folder), else ``$THINKLENS_DATA/xstest_prompts.csv``.

    Raises FileNotFoundError naming where it looked and how to point thinklens at the file.
    """
    if path is None:
        folder = os.environ.get(DATA_ENV)
        if not folder:
            raise FileNotFoundError(
                f"XSTest is not shipped with thinklens: set {DATA_ENV} to the folder holding "
                f"{XSTEST_FILE}, or give its path ('xstest:safe:/path/to/{XSTEST_FILE}', "
                "--xstest PATH). The file is XSTest's xstest_prompts.csv from "
                "github.com/paul-rottger/exaggerated-safety"
            )
        path = folder
    found = Path(path).expanduser()
    if found.is_dir():
        found = found / XSTEST_FILE
    if not found.is_file():
        raise FileNotFoundError(
            f"no XSTest file at {found}: give the path of {XSTEST_FILE} or of its folder "
            f"(or set {DATA_ENV} to that folder)"
        )
    return found


def xstest_rows(label: str = "safe", path: str | Path | None = None) -> list[dict[str, str]]:
    """The rows of one label (``safe``, ``unsafe`` or ``all``), in file order."""
    if label not in _LABELS:
        raise ValueError(f"unknown XSTest label {label!r}; use one of {list(_LABELS)}")
    file = xstest_path(path)
    with file.open(newline="", encoding="utf-8-sig") as f:
        rows = [dict(r) for r in csv.DictReader(f)]
    if not rows or not _COLUMNS <= set(rows[0]):
        raise ValueError(
            f"{file} is not XSTest's prompt file: it needs rows with columns "
            f"{sorted(_COLUMNS)}, has {list(rows[0]) if rows else 'no rows'}"
        )
    return [r for r in rows if label == "all" or r["label"] == label]


def xstest_prompts(
    label: Literal["safe", "unsafe", "all"] = "safe",
    path: str | Path | None = None,
    n: int | None = None,
) -> list[str]:
    """XSTest prompts of one label, taken in turn from each type (homonyms, figurative
    language, safe targets, ...), so the first ``n`` cover every type as evenly as they can.

    ``path``: the CSV or its folder (default: ``$THINKLENS_DATA``, see `xstest_path`).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    by_type: dict[str, list[str]] = {}
    for r in xstest_rows(label, path):
        by_type.setdefault(r["type"], []).append(r["prompt"].strip())
    queues = list(by_type.values())
    longest = max(map(len, queues), default=0)
    ordered = [q[i] for i in range(longest) for q in queues if i < len(q)]
    return ordered[:n]

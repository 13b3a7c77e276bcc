"""Judgements cached by what decides them: in memory, and optionally in an append-only JSONL file.

A key hashes the prompt, the judged answer and the judge's identity (judge name, model name,
prompt-format version and the options that change its output), so one file can serve several
judges and a changed prompt format never reads old verdicts. Each batch of new verdicts is
appended with one ``write`` of whole lines on a file opened for appending, then flushed to disk:
concurrent appenders on a local disk do not interleave lines, and a run that dies mid-write
leaves at most one partial last line, which loading skips. Parse failures are cached too, since
greedy decoding would repeat them; a judge with more ``max_new_tokens`` (part of the key) judges
them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from thinklens.judges.verdict import Verdict


def cache_key(identity: Mapping[str, Any], prompt: str, answer: str) -> str:
    """SHA-256 of the judge's identity and the (prompt, answer) pair."""
    payload = json.dumps([dict(identity), prompt, answer], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class VerdictCache:
    """Verdicts by `cache_key`, kept in memory and, with a ``path``, in a JSONL file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self._verdicts: dict[str, Verdict] = {}
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def __len__(self) -> int:
        return len(self._verdicts)

    def __contains__(self, key: str) -> bool:
        return key in self._verdicts

    def get(self, key: str) -> Verdict | None:
        """The cached verdict, or None."""
        return self._verdicts.get(key)

    def put(self, items: Iterable[tuple[str, Verdict, Mapping[str, Any]]]) -> None:
        """Store (key, verdict, identity) items; the identity is written beside each verdict."""
        new = [(k, v, i) for k, v, i in items if k not in self._verdicts]
        for key, verdict, _ in new:
            self._verdicts[key] = verdict
        if self.path is None or not new:
            return
        lines = "".join(
            json.dumps({"key": k, "judge": dict(i), "verdict": v.to_json()}, ensure_ascii=False)
            + "\n"
            for k, v, i in new
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            # A partial last line (a run killed mid-write) would swallow the next record.
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    lines = "\n" + lines
            f.write(lines.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def _load(self, path: Path) -> None:
        """Read every whole record of the file; skip (and warn about) broken lines."""
        broken = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self._verdicts[record["key"]] = Verdict.from_json(record["verdict"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    broken += 1
        if broken:
            warnings.warn(
                f"{broken} unreadable line(s) in the judge cache {path} were skipped (a run "
                "interrupted mid-write leaves one); those items will be judged again",
                stacklevel=3,
            )

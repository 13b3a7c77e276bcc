"""Capture: run texts, get only the asked-for sites and positions back.

Positions are cut inside the hook (or the trace, on a remote model), before anything is stored
or sent, so memory grows with what was asked for, not with the number of layers or the sequence
length; the forward pass stops after the deepest site asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Int
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from thinklens.batching import auto_batch_size, run_batched
from thinklens.model import Model
from thinklens.sites import POS_DIM, CapturePositions, Site, SiteLike, position_index


@dataclass
class Captures:
    """Captured tensors keyed by site, in the order of the input texts.

    For ``positions="last"`` each tensor has no position axis; otherwise the position axis holds
    the kept positions, padded on the right, and ``mask`` says which are real.
    """

    tensors: dict[Site, Tensor]
    mask: Bool[Tensor, "batch sel"]
    lengths: Int[Tensor, " batch"]
    positions: CapturePositions

    def __getitem__(self, key: SiteLike) -> Tensor:
        site = Site.parse(key)
        for s, t in self.tensors.items():
            if s == site or (str(s) == str(site)):
                return t
        raise KeyError(f"{site} was not captured; captured: {', '.join(map(str, self.tensors))}")

    def __iter__(self) -> Iterator[Site]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def _pad_to(x: Tensor, dim: int, size: int) -> Tensor:
    if x.shape[dim] == size:
        return x
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _cat(chunks: list[Tensor], site: Site | None, squeeze: bool) -> Tensor:
    """Concatenate batch chunks, padding the position (and pattern key) axes to the widest."""
    if squeeze:
        return torch.cat(chunks)
    dims = [POS_DIM[site.kind] if site else 1]
    if site is not None and site.kind == "pattern":
        dims.append(3)
    for d in dims:
        width = max(c.shape[d] for c in chunks)
        chunks = [_pad_to(c, d, width) for c in chunks]
    return torch.cat(chunks)


def _select(
    site: Site, x: Tensor, keep: Tensor, squeeze: bool, out_dtype: torch.dtype | None
) -> Tensor:
    """A canonical tensor already cut to the kept positions: padding zeroed, heads chosen,
    detached, on the CPU."""
    d = POS_DIM[site.kind]
    view = [keep.shape[0]] + [1] * (x.dim() - 1)
    view[d] = keep.shape[1]
    kept = x * keep.to(x.device, x.dtype).view(view)
    if site.heads is not None:
        kept = kept[:, :, list(site.heads)] if site.kind == "z" else kept[:, list(site.heads)]
    if squeeze:
        kept = kept.squeeze(d)
    return kept.detach().to("cpu", out_dtype or x.dtype)


def _request_hash(model: Model, texts: Sequence[str], sites: list[Site], positions: object) -> str:
    # No batch size: shards say which texts they hold, so a run killed for want of memory
    # resumes with a smaller batch.
    h = hashlib.sha256(
        json.dumps(
            [model.name, model.fingerprint(), list(texts), [str(s) for s in sites], repr(positions)]
        ).encode()
    )
    return h.hexdigest()[:16]


def capture(
    model: Model,
    texts: Sequence[str],
    sites: Sequence[SiteLike],
    positions: CapturePositions = "all",
    batch_size: int | None = None,
    stream_to: str | Path | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> Captures | CaptureStore:
    """Capture sites of ``model`` on ``texts``.

    Args:
        texts: full texts (apply the chat template first, e.g. with ``model.chat`` or traces).
        sites: e.g. ``["resid_post.12", "z.3", Site("pattern", 5, heads=(2,))]``.
        positions: ``"all"``, ``"last"``, an int k (last k tokens), or one (start, end) token
            span per text.
        batch_size: texts per forward pass (sorted by length to waste little on padding). None
            chooses it from free memory and halves it on out-of-memory; a number is kept as
            given (out-of-memory then raises).
        stream_to: a folder; each batch is written there as a safetensors shard and a
            CaptureStore is returned. A run killed midway resumes where it stopped, at any
            batch size.
        dtype: store captures in this dtype (default: the model's).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given: capture needs a non-empty list of texts")
    if not sites:
        raise ValueError("no sites given: ask for at least one site, e.g. 'resid_post.0'")
    if not isinstance(positions, (str, int)) and len(positions) != len(texts):
        raise ValueError(f"got {len(positions)} spans for {len(texts)} texts: give one per text")
    resolved = [Site.parse(s).resolved(model) for s in sites]
    squeeze = positions == "last"
    lengths = torch.tensor(
        [len(x) for x in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    )
    order = torch.argsort(-lengths, stable=True).tolist()  # long first: OOM shows up at once
    store = None
    todo = order
    if stream_to is not None:
        key = _request_hash(model, texts, resolved, positions)
        store = CaptureStore.create(Path(stream_to), key, resolved, positions, len(texts))
        done = store.done()
        todo = [i for i in order if i not in done]
    rank = {i: r for r, i in enumerate(order)}  # a shard is named by its first text's rank

    def run(batch: list[int]) -> tuple[dict[Site, Tensor], Tensor]:
        ids, mask = model.tokenize([texts[i] for i in batch])
        spans = positions if isinstance(positions, (str, int)) else [positions[i] for i in batch]
        idx, keep = position_index(mask.sum(-1).cpu(), spans)
        got: dict[Site, Tensor] = {}

        def read(site: Site, x: Tensor) -> None:
            got[site] = _select(site, x, keep, squeeze, dtype)

        with torch.no_grad():
            model.backend.run(ids, mask, resolved, read, positions=idx)
        missing = [s for s in resolved if s not in got]
        if missing:
            raise RuntimeError(f"the {model.backend.name} backend did not produce {missing[0]}")
        return got, keep

    first = 0
    if batch_size is None and todo:
        patterns = any(s.kind == "pattern" for s in resolved)
        first = auto_batch_size(model, int(lengths[todo[0]]), len(todo), patterns=patterns)
    chunks: dict[Site, list[Tensor]] = {s: [] for s in resolved}
    masks, done_order = [], []
    bar = tqdm(total=len(todo), desc="capture", unit="text", disable=not progress)
    for batch, (got, keep) in run_batched(todo, run, batch_size, first, "capture"):
        bar.update(len(batch))
        if store is not None:
            store.write(rank[batch[0]], got, keep, batch, lengths[batch])
            continue
        for s in resolved:
            chunks[s].append(got[s])
        masks.append(keep)
        done_order.extend(batch)
    bar.close()
    if store is not None:
        store.finish()
        return store
    inverse = torch.argsort(torch.tensor(done_order))
    # One site at a time, dropping its chunks as it goes, so the peak stays near one copy.
    tensors = {s: _cat(chunks.pop(s), s, squeeze)[inverse] for s in resolved}
    return Captures(tensors, _cat(masks, None, False)[inverse], lengths, positions)


class CaptureStore:
    """Captures streamed to a folder of safetensors shards, one per batch, plus a manifest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        manifest = self.path / "manifest.json"
        if not manifest.exists():
            raise FileNotFoundError(f"no capture manifest in {self.path}: run capture first")
        self.manifest = json.loads(manifest.read_text())

    @classmethod
    def create(cls, path: Path, key: str, sites: list[Site], positions: object, n: int):
        """Open (or resume) a store for one capture request."""
        path.mkdir(parents=True, exist_ok=True)
        manifest = path / "manifest.json"
        meta = {
            "request": key,
            "sites": [str(s) for s in sites],
            "positions": repr(positions),
            "n_texts": n,
            "complete": False,
        }
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old.get("request") != key:
                raise FileExistsError(
                    f"{path} holds captures of another request; choose a new folder or delete it"
                )
            meta = old
        _atomic_json(manifest, meta)
        return cls(path)

    def _shard(self, b: int) -> Path:
        return self.path / f"shard-{b:05d}.safetensors"

    def done(self) -> set[int]:
        """Indices of the texts already in a shard (what a resumed run skips)."""
        out: set[int] = set()
        for shard in self.path.glob("shard-*.safetensors"):
            with safe_open(str(shard), "pt") as f:
                out.update(f.get_tensor("__index__").tolist())
        return out

    def write(
        self, b: int, got: dict[Site, Tensor], mask: Tensor, batch: list[int], lengths: Tensor
    ) -> None:
        """Write one batch's shard atomically (``b``: the rank of its first text)."""
        data = {str(s): t.contiguous() for s, t in got.items()}
        data["__mask__"] = mask.contiguous()
        data["__lengths__"] = lengths.contiguous()
        data["__index__"] = torch.tensor(batch)
        tmp = self._shard(b).with_suffix(".tmp")
        save_file(data, str(tmp))
        os.replace(tmp, self._shard(b))

    def finish(self) -> None:
        self.manifest["complete"] = True
        self.manifest["shards"] = sorted(p.name for p in self.path.glob("shard-*.safetensors"))
        _atomic_json(self.path / "manifest.json", self.manifest)

    def shards(self) -> Iterator[dict[str, Tensor]]:
        """Each shard's tensors (``__index__`` holds the texts' indices), one at a time."""
        for name in self.manifest.get("shards", []):
            yield load_file(str(self.path / name))

    def load(self) -> Captures:
        """All shards in memory, in the order of the input texts."""
        shards = list(self.shards())
        if not shards:
            raise ValueError(f"{self.path} has no shards: the capture did not finish")
        sites = [Site.parse(s) for s in self.manifest["sites"]]
        squeeze = self.manifest["positions"] == repr("last")
        inverse = torch.argsort(torch.cat([s["__index__"] for s in shards]))
        tensors = {s: _cat([sh[str(s)] for sh in shards], s, squeeze)[inverse] for s in sites}
        mask = _cat([sh["__mask__"] for sh in shards], None, False)[inverse]
        lengths = torch.cat([sh["__lengths__"] for sh in shards])[inverse]
        return Captures(tensors, mask, lengths, self.manifest["positions"])


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)

"""Refusal directions: difference of means between harmful and harmless prompts, per layer.

Activations are read at ``L + 1`` points of the residual stream, numbered ``0..L`` like the
entries of HF ``hidden_states``: point ``i < L`` is the block input ``resid_pre.i`` (point 0 the
embeddings), point ``L`` the output of the last layer. By default (the thinklens reading) point
``L`` is that output before the final norm (``resid_post.{L-1}``), read at the post-instruction
positions (the template tokens after the user's text, the last of which is the last prompt
token). A ``reading`` (``protocol``) can instead take point ``L`` after the final norm, as HF's
last ``hidden_states`` entry is, and the texts and positions of a published tool. Sums are
accumulated in float64 one batch at a time, so memory does not grow with the number of prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from thinklens.artifacts import Artifact, data_hash
from thinklens.capture import capture
from thinklens.interventions.abliteration.protocol import (
    Reading,
    detect_response_prefix,
    get_reading,
    reading_texts,
)
from thinklens.model import Model

KIND = "refusal-directions"
_SENTINEL = "Zq7 sentinel instruction"


def post_instruction_tokens(model: Model) -> int:
    """How many template tokens follow the user's text in this model's chat layout."""
    text = model.chat(_SENTINEL)
    at = text.rfind(_SENTINEL)
    if at < 0:
        raise ValueError(f"{model.name}'s chat template does not echo the user's text")
    suffix = text[at + len(_SENTINEL) :]
    n = len(model.tokenizer(suffix, add_special_tokens=False)["input_ids"])
    return max(n, 1)


def stream_sites(model: Model) -> list[str]:
    """The capture sites of stream points ``0..L`` (block inputs, then the last block output)."""
    return [f"resid_pre.{l}" for l in range(model.n_layers)] + [f"resid_post.{model.n_layers - 1}"]


def winsorize(x: Tensor, quantile: float) -> Tensor:
    """Clamp each vector's components at the ``quantile`` of their absolute values (Heretic's
    winsorisation)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"winsorize quantile must be in (0, 1], got {quantile}")
    t = torch.quantile(x.abs(), quantile, dim=-1, keepdim=True)
    return torch.clamp(x, -t, t)


@torch.no_grad()
def mean_activations(
    model: Model,
    texts: Sequence[str],
    n_positions: int,
    batch_size: int = 8,
    winsorize_quantile: float | None = None,
    progress: bool = True,
    desc: str = "means",
    last_point: Literal["resid_post", "final_norm"] = "resid_post",
) -> Float[Tensor, "pos stream d_model"]:
    """Mean residual activation at the last ``n_positions`` tokens of each text, every point
    (point ``L`` before or after the final norm, per ``last_point``)."""
    if last_point not in ("resid_post", "final_norm"):
        raise ValueError(f"last_point={last_point!r}: use 'resid_post' or 'final_norm'")
    if not texts:
        raise ValueError("no prompts given: directions need harmful and harmless prompts")
    sites = stream_sites(model)
    total = torch.zeros(n_positions, len(sites), model.d_model, dtype=torch.float64)
    count = torch.zeros(n_positions, 1, 1, dtype=torch.float64)
    for i in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress):
        caps = capture(
            model,
            list(texts[i : i + batch_size]),
            sites,
            positions=n_positions,
            batch_size=batch_size,
            dtype=torch.float64,
            progress=False,
        )
        x = torch.stack([caps[s] for s in sites], dim=2)  # batch pos stream d_model
        if last_point == "final_norm":
            # Per token, before any averaging: the mean of normed vectors is not the normed mean.
            x[:, :, -1] = model.final_norm(x[:, :, -1]).to(x.device, torch.float64)
        if winsorize_quantile is not None and winsorize_quantile < 1:
            x = winsorize(x, winsorize_quantile)
        keep = caps.mask.to(torch.float64)[..., None, None]
        total += (x * keep).sum(0)
        count += keep.sum(0)
    if bool((count == 0).any()):
        raise ValueError(
            f"some prompts are shorter than {n_positions} tokens: ask for fewer positions"
        )
    return total / count


@dataclass
class RefusalDirections:
    """Per-layer means of harmful and harmless prompts (float64) and the directions they give.

    ``harmful`` and ``harmless`` have shape ``[pos, stream, d_model]``: ``positions`` are token
    offsets from the end of the prompt (``-1`` is the last prompt token), ``stream`` the points
    ``0..L`` of the residual stream.
    """

    harmful: Float[Tensor, "pos stream d_model"]
    harmless: Float[Tensor, "pos stream d_model"]
    positions: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.harmful.shape[1] - 1

    @property
    def d_model(self) -> int:
        return self.harmful.shape[2]

    def _pos(self, pos: int) -> int:
        if pos not in self.positions:
            raise IndexError(f"position {pos} was not captured; captured: {self.positions}")
        return self.positions.index(pos)

    def directions(
        self, normalize: bool = True, project: bool = False
    ) -> Float[Tensor, "pos stream d_model"]:
        """Every candidate ``harmful - harmless``, optionally unit-norm and/or projected.

        ``project`` keeps only the part orthogonal to the harmless mean (Heretic's
        ``orthogonalize_direction``), so removing it leaves the harmless mean untouched.
        """
        r = self.harmful - self.harmless
        if project:
            g = self.harmless / _norm(self.harmless)
            r = r - (r * g).sum(-1, keepdim=True) * g
        return r / _norm(r) if normalize else r

    def direction(
        self, point: float, pos: int = -1, normalize: bool = True, project: bool = False
    ) -> Float[Tensor, " d_model"]:
        """The direction at stream point ``point``; a fractional point interpolates linearly
        between the two adjacent points' directions, then renormalises (Heretic's fractional
        ``direction_index``, pinned by tests/interventions/abliteration/test_faithful.py)."""
        if not 0 <= point <= self.n_layers:
            raise IndexError(f"stream point {point} is out of range 0..{self.n_layers}")
        dirs = self.directions(normalize=normalize, project=project)[self._pos(pos)]
        lo = math.floor(point)
        frac = point - lo
        if frac == 0:
            return dirs[lo].clone()
        r = torch.lerp(dirs[lo], dirs[lo + 1], frac)
        return r / r.norm() if normalize else r

    def selected(self) -> tuple[int, int]:
        """The (position, layer) chosen by ``select_direction``, or a clear error."""
        sel = self.meta.get("selected")
        if not sel:
            raise ValueError(
                "these directions have no selected layer: run select_direction (or "
                "`thinklens abliteration directions --select`), or pass layer= explicitly"
            )
        return int(sel["pos"]), int(sel["layer"])

    # --- artifact -----------------------------------------------------------------------------
    def to_artifact(self) -> Artifact:
        """The means as a safetensors artifact, stamped with the model they came from."""
        return Artifact(
            {"harmful": self.harmful, "harmless": self.harmless},
            self.meta | {"positions": self.positions},
        )

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path.safetensors`` and ``path.json`` atomically."""
        return self.to_artifact().save(path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, model: Model | None = None) -> RefusalDirections:
        """Read directions; with ``model``, a clear error when they were made on another one."""
        art = Artifact.load(path, model=model)
        if art.meta.get("kind") != KIND:
            raise ValueError(f"{path} holds a {art.meta.get('kind')!r}, not refusal directions")
        meta = dict(art.meta)
        positions = [int(p) for p in meta.pop("positions")]
        return cls(art.tensors["harmful"], art.tensors["harmless"], positions, meta)

    def check(self, model: Model) -> None:
        """A clear error when these directions do not fit ``model``."""
        if self.d_model != model.d_model or self.n_layers != model.n_layers:
            raise ValueError(
                f"these directions were computed on {self.meta.get('model', 'another model')} "
                f"(d_model {self.d_model}, {self.n_layers} layers) and do not fit {model.name} "
                f"(d_model {model.d_model}, {model.n_layers} layers): recompute them on it"
            )


def _norm(x: Tensor) -> Tensor:
    return x.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)


def compute_directions(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    positions: int | str | None = None,
    winsorize_quantile: float | None = None,
    batch_size: int = 8,
    chat: bool = True,
    progress: bool = True,
    reading: str | Reading = "thinklens",
    response_prefix: str | None = None,
) -> RefusalDirections:
    """Harmful and harmless mean activations at every stream point and the reading's positions.

    Args:
        harmful, harmless: user prompts (wrapped in the chat template when ``chat``).
        positions: ``"post_instruction"`` (every template token after the user's text, Arditi
            et al.'s choice), ``"last"`` (the last prompt token only), or a count k of last
            tokens; None takes the reading's.
        winsorize_quantile: clamp each prompt's activation vector at this quantile of its
            absolute components before averaging (Heretic's option; None is off).
        reading: ``"thinklens"``, ``"answer"`` (at the answer start), or a published tool's
            (``"heretic"``, ``"erisforge"``, ``"deccp"``, see ``protocol``): system prompt,
            response prefix, positions, and whether point ``L`` is read after the final norm.
        response_prefix: the prefix of a reading that detects one (Heretic's), given instead
            of detected on the first 100 harmless and 100 harmful prompts.
    """
    rd = get_reading(reading)
    positions = rd.positions if positions is None else positions
    if positions == "post_instruction":
        k = post_instruction_tokens(model)
    elif positions == "last":
        k = 1
    elif isinstance(positions, int) and positions >= 1:
        k = positions
    else:
        raise ValueError(
            f"positions={positions!r}: use 'post_instruction', 'last' or a count of last tokens"
        )
    prefix = rd.response_prefix if rd.response_prefix is not None else response_prefix
    if prefix is None and chat:  # Heretic looks at its first 100 harmless, then harmful
        prompts = [*harmless[:100], *harmful[:100]]
        prefix = detect_response_prefix(
            model, prompts, rd.system, rd.special_tokens, batch_size=batch_size
        )
    if chat:
        h_texts = reading_texts(model, harmful, rd, prefix)
        s_texts = reading_texts(model, harmless, rd, prefix)
    else:
        h_texts, s_texts = list(harmful), list(harmless)
    kw = dict(
        n_positions=k,
        batch_size=batch_size,
        winsorize_quantile=winsorize_quantile,
        last_point=rd.last_point,
    )
    mean_h = mean_activations(model, h_texts, progress=progress, desc="harmful means", **kw)
    mean_s = mean_activations(model, s_texts, progress=progress, desc="harmless means", **kw)
    last = "resid_post.L-1" + (" after the final norm" if rd.last_point == "final_norm" else "")
    meta = Artifact.for_model(model, KIND, {}).meta | dict(
        stream=f"point i < L: resid_pre.i; point L: {last}",
        n_harmful=len(h_texts),
        n_harmless=len(s_texts),
        harmful_hash=data_hash(h_texts),
        harmless_hash=data_hash(s_texts),
        winsorize_quantile=winsorize_quantile,
        reading=rd.name,
        system=rd.system,
        response_prefix=prefix,
        last_point=rd.last_point,
        special_tokens=rd.special_tokens,
        chat=chat,
    )
    return RefusalDirections(mean_h, mean_s, list(range(-k, 0)), meta)

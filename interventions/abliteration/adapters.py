"""Refusal-direction edits as low-rank adapters: ``W' = W + B A``, no weight written or copied.

An exact edit of a matrix writing into the residual stream, ``W' = W - w r (r^T W)``, is rank
1: ``B = -w r``, ``A = r^T W``; the embedding's, ``E' = E - w (E r) r^T``, has ``A = (E r)^T``
(one number per token). Heretic's stored form (``low_rank=k``) is already ``k`` factors: those
of the seeded ``svd_lowrank`` the weight engine merges (``matrix.low_rank_factors``). Factors
live in the matrix's (out, in) view whatever its layout (GPT-2's Conv1D stores ``[in, out]``).

- ``adapted(model, edits)``: inside the block the model behaves as edited (forward hooks add
  ``B (A x)`` to each module's output, in the model's dtype, in every module tree the backend
  runs), after it exactly as before. It holds ``k (d_in + d_out)`` numbers per matrix where
  ``weights.edited`` holds a copy of each edited matrix, and writes no weight: it works on a
  quantized base (``torch.ao`` dynamic ``Linear``, ``A`` from the dequantized weight) and on an
  embedding tied to the unembedding. ``PlanAdapter`` is the same as an ``Edit`` for
  ``thinklens.intervene``.
- ``save_adapter(model, edits, out)``: a PEFT LoRA folder for the unedited model
  (``PeftModel.from_pretrained``; ``merge_and_unload`` writes the edit). The merged form is
  ``export(apply(...))``.

Rounded edits and norm-preserving edits without ``low_rank`` change a matrix at full rank, so
they have no adapter form (a norm-preserving one runs exactly as ``ablation.PlanHooks``, which
rescales the module's output); nor do bias edits, nor edits of fused expert matrices in a
forward pass (a hook on the experts module sees only their routed sum).

On organism-aligned (benchmarks/adapter_edits.py, one thread, load 2): a trial of the arditi
preset's 60 layer writes sets up and undoes in 46 ms against 376 ms with ``weights.edited``,
keeping 0.37 MiB of factors against 139 MiB of copies; Heretic's rank-3 plan (30 matrices)
takes 373 ms against 538 ms (computing the rank-3 change, which both do, dominates), and its
full-rank norm-preserving plan as ``PlanHooks`` 63 ms against 287 ms. Hooks cost a forward
pass 3-5%.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from thinklens.hooks import Edit, intervene
from thinklens.interventions.abliteration.experts import Kind, find
from thinklens.interventions.abliteration.export import write_folder
from thinklens.interventions.abliteration.matrix import (
    MatrixEdit,
    as_out_in,
    edit_tensors,
    exact_weight,
    low_rank_factors,
    resolve_module,
    stored,
    stream_axis,
)
from thinklens.model import Model, get_path


@dataclass(frozen=True)
class Factors:
    """``W' = W + b a`` for one matrix in its (out, in) view: ``[d_model, d_in]`` for a write,
    ``[d_model, vocab]`` for the embedding, one pair per expert for fused experts."""

    module: str
    kind: Kind
    b: Float[Tensor, "*expert d_out k"]
    a: Float[Tensor, "*expert k d_in"]

    @property
    def rank(self) -> int:
        """``k``: the rank of the update."""
        return self.a.shape[-2]

    @property
    def nbytes(self) -> int:
        """Bytes the two factors hold."""
        return sum(t.numel() * t.element_size() for t in (self.b, self.a))

    def to(self, dtype: torch.dtype) -> Factors:
        """The same factors in ``dtype``."""
        return Factors(self.module, self.kind, self.b.to(dtype), self.a.to(dtype))


def _matrix(model: Model, edit: MatrixEdit) -> tuple[Tensor, Tensor | None]:
    """The matrix an edit changes (dequantized where stored quantized) and its bias."""
    module = find(model.hf, edit.module)
    packed = getattr(module, "weight", None)
    if callable(packed) and not isinstance(packed, Tensor | nn.Module):
        return stored(packed), stored(getattr(module, "bias", None))
    module = resolve_module(model, model.hf, edit.module)  # the engine's clear errors
    return edit_tensors(model, module, edit)


#: Entries of a matrix converted to float64 at a time when its ``A`` is computed.
_BLOCK = 1 << 20


def _contract(
    w: Float[Tensor, "*expert m n"], r: Float[Tensor, " d_model"], axis: int
) -> Float[Tensor, "*expert other"]:
    """``r`` contracted with ``w`` along ``axis`` in float64, a block of the other axis at a
    time: a float64 copy of a whole matrix (twice a float32 one) is never made."""
    keep = -1 if axis == -2 else -2
    n, step = w.shape[keep], max(1, _BLOCK // w.shape[axis])
    blocks = [w.narrow(keep, i, min(step, n - i)) for i in range(0, n, step)]
    return torch.cat([b.to(torch.float64).movedim(axis, -1) @ r for b in blocks], dim=-1)


def edit_factors(model: Model, edit: MatrixEdit) -> Factors:
    """The low-rank factors of one edit of ``model``'s weights (float64 for an exact edit,
    float32 for a ``low_rank`` one), or a clear error for an edit that has none."""
    if edit.round_to is not None:
        raise ValueError(
            f"{edit.module}: an edit rounded to {edit.round_to} changes every entry of the "
            "matrix, so it has no low-rank form: write it into the weights (weights.edited or "
            "apply)"
        )
    if edit.norm_preserving and edit.kind != "embed" and edit.low_rank is None:
        raise ValueError(
            f"{edit.module}: a norm-preserving edit changes the matrix at full rank: give it "
            "low_rank=k (Heretic stores rank 3: HereticParams(lora_rank=3), or "
            "protocol='published'), run it exactly as output hooks (ablation.PlanHooks), or "
            "write it into the weights (weights.edited or apply)"
        )
    weight, bias = _matrix(model, edit)
    if edit.bias and edit.kind != "embed" and bias is not None:
        raise ValueError(
            f"{edit.module}: an adapter leaves the bias alone: plan with bias=False, or write "
            "the edit into the weights"
        )
    r = edit.direction.to(weight.device, torch.float64)
    if edit.low_rank is None:  # A = r^T W; the embedding's, (E r)^T
        a = _contract(weight.detach(), r, stream_axis(model, edit, weight))
        return Factors(edit.module, edit.kind, -edit.weight * r[:, None], a[..., None, :])
    w = as_out_in(model, edit, weight)  # float64; the embedding's as [vocab, d_model]
    change = exact_weight(edit, w, r) - w
    if change.dim() == 3:  # one pair per expert, as the engine approximates them
        pairs = [low_rank_factors(d, edit.low_rank, edit.seed) for d in change]
        b, a = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    else:
        b, a = low_rank_factors(change, edit.low_rank, edit.seed)
    if edit.kind == "embed":  # the change was approximated as [vocab, d_model]
        b, a = a.T, b.T
    return Factors(edit.module, edit.kind, b, a)


def plan_factors(model: Model, edits: Sequence[MatrixEdit]) -> list[Factors]:
    """The factors of every edit of a plan that can run as an adapter, or a clear error."""
    if not edits:
        raise ValueError("the plan edits no matrix: there is nothing to adapt")
    counts = Counter(e.module for e in edits)
    for path, n in counts.items():
        if n > 1:
            # A second edit reads the matrix the first one wrote: its A would change too.
            raise ValueError(
                f"{path} is edited {n} times in this plan: an adapter holds one edit per "
                "matrix; write the edits into the weights (weights.edited or apply)"
            )
    for e in edits:
        if e.kind == "experts":
            raise ValueError(
                f"{e.module} holds fused expert matrices: a hook on it sees only the routed sum "
                "of the experts' outputs, so per-expert factors would need each token's "
                "routing; use PlanHooks for an exact edit, or write the weights"
            )
    return [edit_factors(model, e) for e in edits]


def _hook(f: Factors, embed_scale: Tensor | None) -> Callable[..., Tensor]:
    """A forward hook that adds ``B (A x)`` to a module's output."""
    a, b, embed = f.a, f.b, f.kind == "embed"

    def post(mod: nn.Module, args: tuple, kwargs: dict, out: Tensor) -> Tensor:
        x = args[0] if args else next(iter(kwargs.values()))
        # Token ids select columns of A, as PEFT's lora_embedding_A does.
        h = F.embedding(x, a.T) if embed else x.to(a.dtype) @ a.T
        change = h @ b.T
        if embed_scale is not None:  # the module scales what it looks up (Gemma)
            change = change * embed_scale.to(change.dtype)
        return out + change.to(out.dtype)

    return post


@dataclass
class PlanAdapter(Edit):
    """A plan run as low-rank adapters: each listed module's output gains ``B (A x)`` (``x``
    its input; the embedding's token ids pick columns of ``A``). Build it with ``of``."""

    factors: Sequence[Factors] = field(default_factory=list)

    @classmethod
    def of(cls, model: Model, edits: Sequence[MatrixEdit]) -> PlanAdapter:
        """The adapters of ``edits`` on ``model``, in its compute dtype."""
        return cls([f.to(model.dtype) for f in plan_factors(model, edits)])

    @property
    def nbytes(self) -> int:
        """Bytes the factors hold: the adapter's whole memory."""
        return sum(f.nbytes for f in self.factors)

    def install(self, model: Model, tree: nn.Module) -> list[RemovableHandle]:
        handles = []
        for f in self.factors:
            # The bridge's wrapper of the embedding holds no scale: read it off the HF module.
            scale = getattr(get_path(model.hf, f.module), "embed_scale", None)
            scale = scale if f.kind == "embed" and isinstance(scale, Tensor) else None
            hook = _hook(f, scale)
            handles.append(get_path(tree, f.module).register_forward_hook(hook, with_kwargs=True))
        return handles


@contextmanager
def adapted(model: Model, edits: Sequence[MatrixEdit]) -> Iterator[Model]:
    """Run ``model`` with ``edits`` as low-rank adapters: edited inside the block, exactly as
    before after it; no weight is written or copied (same contract as ``weights.edited``)."""
    with intervene(model, PlanAdapter.of(model, edits)):
        yield model


def _tied(hf: nn.Module) -> bool:
    out = hf.get_output_embeddings()
    return out is not None and out.weight is hf.get_input_embeddings().weight


def save_adapter(
    model: Model,
    edits: Sequence[MatrixEdit],
    out: str | Path,
    record: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``edits`` as a PEFT LoRA adapter of ``model`` (``adapter_config.json``,
    ``adapter_model.safetensors``, ``thinklens.json``), written atomically like ``export``.

    Factors are stored in the model's dtype at scale 1 (``lora_alpha = r``); ranks other than
    the most common one go to ``rank_pattern``. ``record`` (``weights.record``) and
    ``metrics`` go to ``thinklens.json``.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    if _tied(model.hf) and any(e.kind == "embed" for e in edits):
        raise ValueError(
            f"{model.name}'s embedding is tied to its unembedding: merging an adapter of the "
            "embedding would edit the unembedding too; export the merged model "
            "(export(apply(...)), which unties them) or leave the embedding out of the plan"
        )
    factors = plan_factors(model, edits)
    tensors = {}
    for f in factors:
        names = ("lora_B.weight", "lora_A.weight")
        if f.kind == "embed":
            names = ("lora_embedding_B", "lora_embedding_A")
        for name, t in zip(names, (f.b, f.a), strict=True):
            tensors[f"base_model.model.{f.module}.{name}"] = t.to(model.dtype).contiguous()
    ranks = {f.module: f.rank for f in factors}
    r = Counter(ranks.values()).most_common(1)[0][0]
    # PEFT reads pattern keys as regular expressions matched at the end of module names.
    pattern = {re.escape(m): k for m, k in ranks.items() if k != r}
    config = LoraConfig(
        r=r,
        lora_alpha=r,  # scaling alpha / r = 1: the update is b @ a itself
        rank_pattern=pattern,
        alpha_pattern=pattern,
        target_modules=sorted(ranks),
        lora_dropout=0.0,
        bias="none",
        fan_in_fan_out=model.family.conv1d,  # Conv1D stores [in, out]
        task_type="CAUSAL_LM",
        base_model_name_or_path=getattr(model.hf, "name_or_path", None) or model.name,
        inference_mode=True,
    )
    info = dict(record or {}, form="peft", base=model.name, metrics=metrics or {})

    def fill(tmp: Path) -> None:
        config.save_pretrained(tmp)
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "thinklens.json").write_text(json.dumps(info, indent=1, default=str))

    return write_folder(out, fill, overwrite, model.hf)

"""What a head score measures, and the forward pass that measures it.

Every metric is a differentiable function of the residual stream (``resid_post``) at the last
position of each text, at one layer: the refusal probe's logit (or its sigmoid score) at the
probe's layer, or the refusal-token log-odds read through the final norm and the unembedding
at the last layer. So one forward pass, stopped at that layer, serves every metric, and the
same pass can run with gradients for attribution patching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from thinklens.backends.base import StopForward
from thinklens.evaluation import REFUSAL_WORDS, refusal_scores, refusal_token_ids
from thinklens.hooks import Edit, EditFn, intervene
from thinklens.model import Model, get_path
from thinklens.probes.probe import RefusalProbe
from thinklens.sites import Site

MetricName = Literal["probe", "probe_prob", "refusal"]
METRICS = ("probe", "probe_prob", "refusal")


@dataclass
class HeadMetric:
    """A scalar per text read at its last position.

    ``"probe"``: the probe's logit ``w . h + b`` (log-odds of refusal; the default because it is
    linear in the residual stream); ``"probe_prob"``: its sigmoid, the published probe output;
    ``"refusal"``: ``log p(R) - log(1 - p(R))`` of the next token, ``p(R)`` summing the
    probabilities of refusal-opening words (``thinklens.interventions.abliteration.selection``).
    """

    name: MetricName = "probe"
    probe: RefusalProbe | None = None
    refusal_words: Sequence[str] = REFUSAL_WORDS

    def check(self, model: Model) -> None:
        """A clear error when the metric cannot be read on this model."""
        if self.name not in METRICS:
            raise ValueError(f"unknown metric {self.name!r}: use one of {', '.join(METRICS)}")
        if self.name.startswith("probe"):
            if self.probe is None:
                raise ValueError(
                    f"metric {self.name!r} needs a refusal probe: pass probe=RefusalProbe.load"
                    "(...), or use metric='refusal' (refusal-token log-odds, no probe)"
                )
            self.probe.check(model)

    def layer(self, model: Model) -> int:
        """The layer whose ``resid_post`` the metric reads (heads above it cannot move it)."""
        self.check(model)
        return self.probe.layer if self.name.startswith("probe") else model.n_layers - 1

    def __call__(
        self, model: Model, resid: Float[Tensor, "batch d_model"]
    ) -> Float[Tensor, " batch"]:
        """The metric of each row, differentiable in ``resid``, in float32 or wider."""
        wide = torch.promote_types(resid.dtype, torch.float32)  # float64 models stay float64
        if self.name.startswith("probe"):
            h = (model.final_norm(resid) if self.probe.norm else resid).to(wide)
            logit = h @ self.probe.weight.to(h.device, wide) + self.probe.bias
            return logit if self.name == "probe" else torch.sigmoid(logit)
        unembed = get_path(model.hf, model.family.unembed)
        logits = unembed(get_path(model.hf, model.family.final_norm)(resid)).to(wide)
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:  # Gemma-style models squash their logits before the softmax
            logits = torch.tanh(logits / cap) * cap
        return refusal_scores(logits, refusal_token_ids(model, self.refusal_words))


@dataclass
class _ReadLast(Edit):
    """Keeps ``resid_post`` of one layer at each row's last real position, then stops."""

    layer: int
    last: Int[Tensor, " batch"]
    got: dict

    def site_fns(self, model: Model) -> list[tuple[Site, EditFn]]:
        def fn(x: Tensor) -> Tensor:
            self.got["resid"] = x[torch.arange(len(x), device=x.device), self.last.to(x.device)]
            raise StopForward

        return [(Site("resid_post", self.layer), fn)]


def last_resid(
    model: Model,
    ids: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    layer: int,
    edits: Sequence[Edit] = (),
) -> Float[Tensor, "batch d_model"]:
    """``resid_post`` of ``layer`` at each (right-padded) row's last token, with edits active.

    Runs the plain HF module up to ``layer`` and no further; under ``torch.enable_grad`` the
    result keeps its graph back to every edit.
    """
    got: dict = {}
    read = _ReadLast(layer, mask.sum(-1) - 1, got)
    with intervene(model, *edits, read):
        try:
            model.hf(input_ids=ids, attention_mask=mask, use_cache=False)
        except StopForward:
            pass
    if "resid" not in got:
        raise RuntimeError(f"the forward pass never reached resid_post of layer {layer}")
    return got["resid"]

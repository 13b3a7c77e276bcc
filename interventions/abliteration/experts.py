"""Which matrices write each sublayer's output into the residual stream, experts included.

Attention writes with its output projection. A dense MLP writes with its down projection; a
mixture-of-experts MLP with every expert's down matrix (one fused 3-D parameter on the experts
module, or one ``nn.Linear`` per expert) and its shared experts' down projection. Removing a
direction from each of them removes it from the whole MoE output: the block adds up the
experts' writes (and the shared experts'), and the router's weights only scale each term.
Where the experts are is the family row's ``Experts``.
"""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float
from torch import Tensor, nn

from thinklens.model import Model, get_path

#: ``"embed"``: the token embedding; ``"write"``: an ``nn.Linear`` (or GPT-2 Conv1D) writing
#: into the stream; ``"experts"``: an experts module's fused down matrices.
Kind = Literal["embed", "write", "experts"]

#: The two sublayers whose writes the presets edit, in Heretic's order.
COMPONENTS = ("attn", "mlp")


def find(root: nn.Module, path: str) -> nn.Module | None:
    """The submodule at ``path``, or None where the tree has none (a dense layer's experts)."""
    try:
        return get_path(root, path)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def fused_experts(
    model: Model, module: nn.Module
) -> tuple[Float[Tensor, "expert _ _"], Float[Tensor, "expert d_model"] | None] | None:
    """An experts module's fused down matrices and their biases (None when it has none), or
    None when ``module`` is not one."""
    spec = model.family.experts
    if spec is None or not spec.fused:
        return None
    weight = getattr(module, spec.down, None)
    if not isinstance(weight, Tensor) or weight.dim() != 3:
        return None
    bias = getattr(module, spec.down_bias, None) if spec.down_bias else None
    return weight, bias if isinstance(bias, Tensor) else None


def mlp_writes(model: Model, layer: int) -> list[tuple[str, Kind]]:
    """The matrices that write ``layer``'s MLP output, as (path from the top module, kind)."""
    fam = model.family
    prefix = f"{fam.layers}.{layer}."
    spec = fam.experts
    experts = find(model.hf, prefix + spec.path) if spec is not None else None
    if experts is None:  # a dense family, or a dense layer of an MoE one
        return [(prefix + fam.mlp_out_proj, "write")]
    if spec.fused:
        out: list[tuple[str, Kind]] = [(prefix + spec.path, "experts")]
    else:
        out = [(f"{prefix}{spec.path}.{i}.{spec.down}", "write") for i in range(len(experts))]
    if spec.shared:
        out.append((prefix + spec.shared, "write"))
    return out


def layer_writes(model: Model, layer: int) -> dict[str, list[tuple[str, Kind]]]:
    """Per component (``COMPONENTS``), the matrices that write its output at ``layer``."""
    attn: list[tuple[str, Kind]] = [
        (f"{model.family.layers}.{layer}.{model.family.o_proj}", "write")
    ]
    return dict(attn=attn, mlp=mlp_writes(model, layer))

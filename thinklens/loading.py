"""load_model: hub names, local folders and the embedded aliases, on either backend."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import torch

from thinklens.backends import BackendName, check_backend
from thinklens.embedded import BASE, EMBEDDED, ORGANISMS, apply_adapter, embedded_folder
from thinklens.families import family_for
from thinklens.formats import ThinkingFormat, format_named, resolve_format
from thinklens.model import Model, weights_fingerprint


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_source(name_or_path: str) -> tuple[str, dict]:
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
    remote: bool = False,
    thinking: str | ThinkingFormat | None = None,
) -> Model:
    """Load a causal LM as a thinklens Model.

    Args:
        name_or_path: an embedded alias (``smollm2-135m-instruct``, ``gemma-3-270m``), a model
            organism (``organism-aligned``, ``organism-cliff``), a local
            Hugging Face folder, or a hub name (needs the hub, or its files in the local cache).
        backend: a name in ``thinklens.backends.REGISTRY``: ``"transformer_lens"``
            (TransformerBridge) or ``"nnsight"``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (accelerate ``device_map``) or None (CUDA if
            available).
        dtype: weights dtype; float32 keeps captures comparable across backends, bfloat16 (or
            ``"bfloat16"``) halves the memory. An organism takes its adapter in float32 first.
        trust_remote_code: run a repository's own model code (off: it executes downloaded code).
        attn_implementation: transformers' default (SDPA where the model supports it, eager
            where it does not, as for gpt-oss); ``pattern`` captures switch to eager
            attention only while they run.
        remote: run every forward pass on NDIF through nnsight (``backend="nnsight"``, a hub
            name NDIF hosts; the API key from ``NDIF_API_KEY`` or nnsight's config). Only the
            config and tokenizer are read here; no weights are loaded, and nothing is sent
            until a capture or forward pass runs.
        thinking: how the model delimits its thinking: a name in
            ``thinklens.formats.FORMATS`` (``"think"``, ``"qwen3-no-think"``, ``"harmony"``,
            ``"bracket-think"``, ...) or a ``ThinkingFormat``. None detects it from the chat
            template, falling back to the family row's format.
    """
    check_backend(backend)  # before any weights load
    if isinstance(thinking, str):
        format_named(thinking)  # an unknown name fails before any weights load
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if remote:
        return _load_remote(
            name_or_path, backend, device, dtype, trust_remote_code, attn_implementation, thinking
        )
    source, extra = resolve_source(name_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    organism = name_or_path in ORGANISMS
    # An organism's adapter is matched to its base by a fingerprint of the float32 weights, so
    # the base loads in float32, takes the adapter, and is cast to ``dtype`` after.
    kw = dict(dtype=torch.float32 if organism else dtype, trust_remote_code=trust_remote_code)
    kw |= extra
    if attn_implementation is not None:  # else transformers' choice: SDPA where the model has it
        kw["attn_implementation"] = attn_implementation
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
    if organism:
        fp = weights_fingerprint(hf, family, hf.config.num_hidden_layers)
        hf = apply_adapter(hf, ORGANISMS[name_or_path], fp).to(dtype)
    fmt = resolve_format(thinking, tok, default=family.thinking)
    return Model(hf, tok, family, name=name_or_path, backend_name=backend, thinking=fmt)


def _load_remote(
    name: str,
    backend: str,
    device: str | torch.device | None,
    dtype: torch.dtype,
    trust_remote_code: bool,
    attn_implementation: str | None,
    thinking: str | ThinkingFormat | None = None,
) -> Model:
    """A Model whose forward passes run on NDIF: an nnsight model built on the meta device."""
    if backend != "nnsight":
        raise ValueError(
            f"remote=True runs on NDIF through nnsight: use backend='nnsight' (the {backend} "
            "backend needs the weights on this machine)"
        )
    local = name in ORGANISMS or name in EMBEDDED or Path(name).expanduser().exists()
    if local or "/" not in name or name.startswith((".", "/", "~")):
        raise ValueError(
            f"remote=True needs a hub name that NDIF hosts (e.g. 'meta-llama/Llama-3.1-8B'), "
            f"not {name!r}: embedded models, organisms and local folders run locally"
        )
    if device is not None:
        raise ValueError("remote=True runs on NDIF's GPUs: leave device unset")
    from nnsight import LanguageModel
    from transformers import AutoTokenizer

    try:
        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
        except OSError:
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
            # dispatch=False (the default): the module is built on the meta device.
            lm = LanguageModel(
                name,
                tokenizer=tok,
                dtype=dtype,
                **({"attn_implementation": attn_implementation} if attn_implementation else {}),
                **({"trust_remote_code": True} if trust_remote_code else {}),
            )
    except OSError:
        if _hub_reachable():
            raise
        raise ConnectionError(
            f"cannot read the config and tokenizer of {name!r}: they are not in the local "
            "Hugging Face cache and the hub is not reachable"
        ) from None
    hf = lm._module
    family = family_for(hf.config)
    return Model(
        hf,
        tok,
        family,
        name=name,
        backend_name="nnsight",
        thinking=resolve_format(thinking, tok, default=family.thinking),
        remote=True,
        nnsight_model=lm,
    )

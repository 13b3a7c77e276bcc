"""The Model: one object holding the HF module, tokenizer, family row and backend."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from thinklens.backends import Backend, BackendName, BackendParts, make_backend
from thinklens.batching import auto_batch_size, run_batched
from thinklens.families import Family
from thinklens.traces import ThinkingFormat, Trace


def get_path(root: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path (``model.layers.3.self_attn``)."""
    module = root
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def weights_fingerprint(hf: nn.Module, family: Family, n_layers: int) -> str:
    """A short hash of the embedding and the last layer's weights."""
    h = hashlib.sha256()
    h.update(f"{family.name}:{n_layers}".encode())
    for path in (family.embed, f"{family.layers}.{n_layers - 1}"):
        for name, p in get_path(hf, path).named_parameters():
            if "lora_" in name:  # adapters are not the model's own weights
                continue
            h.update(p.detach().float().flatten()[:4096].cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def float64_experts(hf: nn.Module) -> None:
    """Run a float64 mixture-of-experts model's experts with transformers' eager loop: its
    default kernel (``grouped_mm``) has no float64 form."""
    cfg = getattr(hf, "config", None)
    if getattr(cfg, "_experts_implementation", None) != "grouped_mm":
        return
    if next(hf.parameters()).dtype == torch.float64:
        hf.set_experts_implementation("eager")


@dataclass
class Model:
    """A causal LM ready for captures, interventions and generation through one backend.

    With ``remote`` (nnsight backend only) forward passes run on NDIF: ``True``, a host URL,
    or ``"local"`` (nnsight's local simulation of a remote run); ``hf`` may then be a module
    on the meta device, with no weights here.
    """

    hf: nn.Module
    tokenizer: object
    family: Family
    name: str
    backend_name: BackendName = "transformer_lens"
    thinking: ThinkingFormat = field(default_factory=ThinkingFormat)
    remote: bool | str = False
    #: An nnsight model already built over ``hf`` (how a remote model is loaded).
    nnsight_model: InitVar[object | None] = None
    backend: Backend = field(init=False, repr=False)
    #: Active interventions, in the order they were entered.
    interventions: list = field(default_factory=list, init=False, repr=False, compare=False)
    #: Generation engines loaded for this model (vLLM), reused across calls.
    engines: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self, nnsight_model: object | None) -> None:
        self.hf.eval()
        if not self.remote:
            float64_experts(self.hf)
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        parts = BackendParts(
            hf=self.hf,
            tokenizer=self.tokenizer,
            family=self.family,
            name=self.name,
            n_heads=self.n_heads,
            remote=self.remote,
            nnsight_model=nnsight_model,
        )
        self.backend = make_backend(self.backend_name, parts)

    # --- shape facts -------------------------------------------------------------------------
    @property
    def config(self) -> object:
        cfg = self.hf.config
        return getattr(cfg, "text_config", None) or cfg

    def _cfg(self, attr: str) -> int:
        return int(getattr(self.config, attr))

    @property
    def n_layers(self) -> int:
        return self._cfg(self.family.n_layers_attr)

    @property
    def n_heads(self) -> int:
        return self._cfg(self.family.n_heads_attr)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.config, self.family.n_kv_heads_attr, None) or self.n_heads)

    @property
    def d_model(self) -> int:
        return self._cfg(self.family.d_model_attr)

    @property
    def d_head(self) -> int:
        """Width of one head's output at ``z`` (the family row names it: MLA's value width)."""
        width = getattr(self.config, self.family.d_head_attr, None)
        return int(width or self.d_model // self.n_heads)

    @property
    def n_ctx(self) -> int:
        cfg = self.config
        return int(getattr(cfg, "max_position_embeddings", None) or cfg.n_positions)

    @property
    def device(self) -> torch.device:
        """Where inputs are made: the CPU for a remote model (the server moves them)."""
        if self.remote:
            return torch.device("cpu")
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def fingerprint(self) -> str:
        """A short hash of the weights (to match artifacts and adapters to their model).

        A remote model's weights are not here: its fingerprint hashes its hub name.
        """
        if self.remote:
            return hashlib.sha256(f"remote:{self.name}".encode()).hexdigest()[:16]
        return weights_fingerprint(self.hf, self.family, self.n_layers)

    # --- module trees -------------------------------------------------------------------------
    def layer_modules(self, root: nn.Module | None = None) -> nn.ModuleList:
        """The decoder layers of a module tree (the HF one by default)."""
        return get_path(root if root is not None else self.hf, self.family.layers)

    def trees(self) -> list[nn.Module]:
        """Every module tree a forward pass may run through (edits hook all of them)."""
        return self.backend.trees()

    def check_layer(self, layer: int) -> int:
        """A layer index, negative ones counted from the end, or a clear error."""
        idx = layer + self.n_layers if layer < 0 else layer
        if not 0 <= idx < self.n_layers:
            raise IndexError(
                f"layer {layer} is out of range: {self.name} has {self.n_layers} layers "
                f"(use 0..{self.n_layers - 1}, or negative indices from the end)"
            )
        return idx

    def final_norm(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """``x`` through the final norm, in the model's dtype on its device (autograd kept)."""
        return get_path(self.hf, self.family.final_norm)(x.to(self.device, self.dtype))

    # --- tokens -------------------------------------------------------------------------------
    def tokenize(
        self, texts: list[str], padding_side: Literal["left", "right"] = "right"
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Token ids and attention mask, padded; special tokens are taken from the text."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("no texts given: pass a non-empty list of strings")
        tok = self.tokenizer
        old = tok.padding_side
        tok.padding_side = padding_side
        try:
            enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = old
        lengths = enc["attention_mask"].sum(-1)
        if int(lengths.min()) == 0:
            raise ValueError("an empty text was given: every text needs at least one token")
        if int(lengths.max()) > self.n_ctx:
            raise ValueError(
                f"a text has {int(lengths.max())} tokens, over {self.name}'s context length "
                f"{self.n_ctx}: shorten it or split it"
            )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def pad_ids(
        self, ids: Sequence[Sequence[int]], padding_side: Literal["left", "right"] = "right"
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Token id lists padded into a batch, with their attention mask (as ``tokenize``)."""
        if not ids or any(len(x) == 0 for x in ids):
            raise ValueError("pad_ids needs a non-empty list of non-empty token id lists")
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(map(len, ids))
        if width > self.n_ctx:
            raise ValueError(
                f"a text has {width} tokens, over {self.name}'s context length {self.n_ctx}"
            )
        rows, masks = [], []
        for x in ids:
            fill = [pad] * (width - len(x))
            keep, gap = [1] * len(x), [0] * (width - len(x))
            rows.append(fill + list(x) if padding_side == "left" else list(x) + fill)
            masks.append(gap + keep if padding_side == "left" else keep + gap)
        return torch.tensor(rows, device=self.device), torch.tensor(masks, device=self.device)

    def chat(self, prompt: str, system: str | None = None) -> str:
        """The model's chat template applied to one user prompt, with the generation prompt."""
        if getattr(self.tokenizer, "chat_template", None) is None:
            return (f"{system}\n\n" if system else "") + f"User: {prompt}\nAssistant:"
        from thinklens.formats import render_prompt

        # The format's template switches (enable_thinking, /no_think) reach the template.
        return render_prompt(self.tokenizer, prompt, system, self.thinking)

    def chat_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt in the chat template (``chat``), no special tokens added."""
        texts = [self.chat(p) for p in prompts]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def trace(
        self,
        prompt: str,
        thinking: str | None = None,
        answer: str | None = None,
        system: str | None = None,
        require_thinking: bool = False,
    ) -> Trace:
        """A prompt, thinking and answer laid out in this model's chat and thinking format."""
        from thinklens.traces import build_trace

        return build_trace(
            self.tokenizer,
            prompt,
            thinking,
            answer,
            system=system,
            fmt=self.thinking,
            require_thinking=require_thinking,
        )

    def with_weights(self, hf: nn.Module, name: str) -> Model:
        """A new Model over another HF module (edited or fine-tuned copy) of this one's kind."""
        tok = copy.deepcopy(self.tokenizer)
        # Booting a bridge sets a missing BOS token to EOS on the tokenizer it is given, and a
        # later boot on such an in-memory tokenizer fails: give the copy its first state back.
        if "name_or_path" not in tok.init_kwargs:
            tok.bos_token = None
        return Model(
            hf, tok, self.family, name=name, backend_name=self.backend_name, thinking=self.thinking
        )

    # --- forward ------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(
        self, texts: list[str] | list[list[int]], batch_size: int | None = None
    ) -> Float[Tensor, "batch vocab"]:
        """Next-token logits at the last position of each text (or token id list), through the
        backend.

        Token ids are for continuing a model's own output exactly: its decoded text can
        tokenize back differently (newlines after a marker merge into one token at the end of a
        text). ``batch_size`` None chooses it from free memory and halves it on out-of-memory.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no texts given: pass a non-empty list of strings")
        as_ids = not isinstance(texts[0], str)

        def run(chunk: list) -> Tensor:
            ids, mask = self.pad_ids(chunk) if as_ids else self.tokenize(chunk)
            last = (mask.sum(-1) - 1)[:, None]
            return self.backend.logits(ids, mask, positions=last)[:, 0].float().cpu()

        first = 0
        if batch_size is None:
            ids = texts if as_ids else self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            longest = max(len(x) for x in ids)
            first = auto_batch_size(self, longest, len(texts), logits=True)
        batches = run_batched(texts, run, batch_size, first, "Model.logits")
        return torch.cat([out for _, out in batches])

"""The generative-judge interface: a causal-LM safety classifier that answers in text.

A judge builds its published prompt from the prompt and the answer after the thinking, generates
a few tokens greedily in left-padded batches, and parses the text into a `Verdict`. Verdicts are
cached by (prompt, answer, judge identity), so a rerun of the same inputs calls no model. Called
like a `thinklens.evaluation.Judge`, it returns refusal flags (True = refusal / safe).
"""

# No postponed annotations here: each judge's dataclass __init__ inherits these fields, and as
# strings their names would have to resolve in every judge's module (the API reference reads them).
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import torch
from transformers import PreTrainedTokenizerBase

from thinklens.formats import ThinkingFormat
from thinklens.judges.cache import VerdictCache, cache_key
from thinklens.judges.decoding import greedy_batches
from thinklens.judges.verdict import Unparsed, Verdict, refusal_flags
from thinklens.traces import DEFAULT_FORMAT


@dataclass
class GenerativeJudge(ABC):
    """A chat-format safety classifier loaded through transformers, judging answers.

    Args:
        model: a causal LM (anything with ``generate(input_ids=, attention_mask=, ...)``).
        tokenizer: its tokenizer.
        model_name: the checkpoint's name, part of the cache key (default: the config's
            ``name_or_path``).
        fmt: the judged model's thinking format: only the answer after the thinking is judged,
            and a response whose thinking never closed is an empty answer, a refusal (as in
            `thinklens.evaluation.is_refusal`), with no model call. None judges the whole text.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: tokens generated per verdict (default: the format's own).
        max_answer_tokens: keep only the answer's first tokens (HarmBench clips at 512).
        cache: a `VerdictCache`, a JSONL path for one, or None for a fresh in-memory cache.
        on_unparsed: what ``judge(prompts, responses)`` does with verdicts that did not parse
            (see `refusal_flags`); `verdicts` always reports them.
    """

    model: Any
    tokenizer: PreTrainedTokenizerBase
    model_name: str = ""
    fmt: ThinkingFormat | None = DEFAULT_FORMAT
    batch_size: int = 8
    max_new_tokens: int | None = None
    max_answer_tokens: int | None = None
    cache: VerdictCache | str | Path | None = None
    on_unparsed: Unparsed = "raise"

    #: The judge's name and prompt-format version: both are part of the cache key.
    name: ClassVar[str] = ""
    version: ClassVar[str] = ""
    #: Tokens a verdict needs when ``max_new_tokens`` is not given.
    default_max_new_tokens: ClassVar[int] = 16
    #: Whether the tokenizer adds its BOS token (False where the prompt text holds it).
    add_special_tokens: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.model_name:
            config = getattr(self.model, "config", None)
            self.model_name = str(getattr(config, "name_or_path", "") or "")
        if not isinstance(self.cache, VerdictCache):
            self.cache = VerdictCache(self.cache)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        # Fail at construction rather than after the first (slow) batch.
        refusal_flags([], self.on_unparsed)

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = "auto",
        **options: Any,
    ) -> Self:
        """Load the judge's checkpoint (safetensors only, no remote code) from the hub or a folder.

        ``options`` are the judge's other fields (``batch_size``, ``cache``, ``fmt`` ...).
        ``device`` defaults to CUDA when available.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                name_or_path, dtype=dtype, trust_remote_code=False, use_safetensors=True
            )
        except (OSError, ValueError) as err:  # missing files, gated repos, unknown configs
            raise OSError(
                f"could not load the {cls.name or cls.__name__} judge from {name_or_path!r}: "
                f"{err}. Gated checkpoints (meta-llama/*, allenai/wildguard) need access granted "
                "on the hub and a token (`hf auth login`); offline, pass a local folder holding "
                "the weights as safetensors"
            ) from err
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        return cls(model=model, tokenizer=tokenizer, model_name=name_or_path, **options)

    @abstractmethod
    def build_prompt(self, prompt: str, answer: str) -> str:
        """The full text given to the judge model for one (prompt, answer) pair."""

    @abstractmethod
    def parse(self, text: str) -> Verdict:
        """The verdict in the judge model's generated text (`Verdict.failed` if none)."""

    def empty_verdict(self) -> Verdict:
        """The verdict of an empty answer (no model call): a refusal, not harmful."""
        return Verdict(refusal=True, harmful=False, raw="", fields={"empty_answer": True})

    def options(self) -> dict[str, Any]:
        """Settings beyond the version that change the judge's output (part of the cache key)."""
        return {}

    @property
    def new_tokens(self) -> int:
        """Tokens generated per verdict."""
        return self.max_new_tokens or self.default_max_new_tokens

    def identity(self) -> dict[str, Any]:
        """What, besides the inputs, decides a verdict: the cache key's judge part."""
        return {
            "judge": self.name,
            "model": self.model_name,
            "version": self.version,
            "max_new_tokens": self.new_tokens,
            "max_answer_tokens": self.max_answer_tokens,
            **self.options(),
        }

    def judged_answer(self, response: str) -> str:
        """The part of a response the judge reads: the answer after the thinking, clipped."""
        answer = response if self.fmt is None else self.fmt.answer(response)
        if self.max_answer_tokens is None:
            return answer
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_answer_tokens:
            return answer
        return self.tokenizer.decode(ids[: self.max_answer_tokens], skip_special_tokens=True)

    def verdicts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        """One verdict per (prompt, response): cached ones are read, the rest generated."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        cache = cast(VerdictCache, self.cache)  # __post_init__ made it one
        identity = self.identity()
        answers = [self.judged_answer(r) for r in responses]
        out: list[Verdict | None] = [None] * len(responses)
        todo: dict[str, list[int]] = {}  # key -> items sharing it, generated once
        for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
            if not answer.strip():
                out[i] = self.empty_verdict()
                continue
            key = cache_key(identity, prompt, answer)
            cached = cache.get(key)
            if cached is not None:
                out[i] = cached
            else:
                todo.setdefault(key, []).append(i)
        keys = list(todo)
        texts = [self.build_prompt(prompts[todo[k][0]], answers[todo[k][0]]) for k in keys]
        batches = greedy_batches(
            self.model,
            self.tokenizer,
            texts,
            self.new_tokens,
            self.batch_size,
            self.add_special_tokens,
        )
        for idx, generated in batches:
            pairs = zip(idx, generated, strict=True)
            done = [(keys[j], self.parse(text), identity) for j, text in pairs]
            # Cached per batch: a run stopped midway keeps what it finished.
            cache.put(done)
            for key, verdict, _ in done:
                for i in todo[key]:
                    out[i] = verdict
        return cast(list[Verdict], out)  # every item is now judged

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        """The `Judge` protocol: one refusal flag per (prompt, response), True = refusal/safe."""
        return refusal_flags(self.verdicts(prompts, responses), self.on_unparsed)

"""Thinking formats as data: how each model family delimits its thinking from its answer.

A `ThinkingFormat` holds the marker texts (the opener, the closing marker between thinking and
answer, what ends the answer), what the chat template adds itself (an opener, or a whole empty
thinking block when thinking is switched off) and what the template is given (keyword arguments
such as Qwen3's ``enable_thinking``, or a flag in the system prompt such as SmolLM3's
``/no_think``). The named formats below cover ``<think>`` (with and without the template's own
opener), Qwen3's and SmolLM3's switches, gpt-oss harmony channels and Magistral's
``[THINK]``; `detect_format` picks one from a tokenizer's chat template and `resolve_format`
lets an explicit choice win over detection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class ThinkingFormat:
    """How a model delimits its thinking from its answer, and what its chat template adds.

    A response is laid out as ``open + after_open + thinking + marker + answer + answer_close``
    where ``marker = before_close + close + after_close``; without thinking it is
    ``answer_open + answer + answer_close``.
    """

    open: str = "<think>"
    close: str = "</think>"
    # R1-style templates end the generation prompt with "<think>\n", so responses lack the opener.
    template_opens_thinking: bool = False
    after_open: str = "\n"
    before_close: str = "\n"
    after_close: str = "\n\n"
    #: What a response without thinking starts its answer with (harmony's final-channel header).
    answer_open: str = ""
    #: What ends the answer (harmony's ``<|return|>``); `split` drops it.
    answer_close: str = ""
    #: The template writes an empty thinking block itself (thinking switched off).
    template_closes_thinking: bool = False
    #: Keyword arguments for ``apply_chat_template`` (given as a dict, stored as sorted pairs).
    template_kwargs: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()
    #: A switch appended to the system prompt (SmolLM3's ``/think`` and ``/no_think``).
    system_flag: str | None = None
    #: (open, close) as they decode once special tokens are skipped (harmony's channel names).
    bare_markers: tuple[str, str] | None = field(default=None)

    def __post_init__(self) -> None:
        # Frozen and hashable: a dict of template arguments is kept as sorted pairs.
        kw = self.template_kwargs
        pairs = kw.items() if isinstance(kw, Mapping) else kw
        object.__setattr__(self, "template_kwargs", tuple(sorted(pairs)))
        if not self.open or not self.close:
            raise ValueError(
                "a ThinkingFormat needs non-empty open and close markers, e.g. "
                "ThinkingFormat(open='<think>', close='</think>')"
            )

    @property
    def opener(self) -> str:
        """The text that opens the thinking."""
        return self.open + self.after_open

    @property
    def marker(self) -> str:
        """The text between thinking and answer (the trace's ``"marker"`` part)."""
        return self.before_close + self.close + self.after_close

    @property
    def chat_kwargs(self) -> dict[str, Any]:
        """The template keyword arguments as a dict."""
        return dict(self.template_kwargs)

    def marker_texts(self) -> tuple[str, ...]:
        """Every marker text the format writes (to keep their special tokens when decoding)."""
        texts = (self.open, self.close, self.answer_open, self.answer_close)
        return tuple(t for t in texts if t)

    def system_prompt(self, system: str | None) -> str | None:
        """The system prompt with the format's switch appended (unchanged without one)."""
        if self.system_flag is None:
            return system
        return f"{system.rstrip()} {self.system_flag}" if system else self.system_flag

    def split(self, response: str) -> tuple[str | None, str]:
        """Split a response into (thinking, answer); (None, response) without a close marker.

        With a template that closes the thinking itself the response is all answer: ("", it).
        """
        closes = [self.close] + ([self.bare_markers[1]] if self.bare_markers else [])
        # The layouts put blank lines around the closing marker; they belong to neither part.
        alternation = "|".join(re.escape(c) for c in closes)
        m = re.search(r"\n*(?:" + alternation + r")\n*", response)
        if m is None:
            answer = response
            if self.answer_open and answer.lstrip().startswith(self.answer_open):
                answer = answer.lstrip()[len(self.answer_open) :]
            return ("" if self.template_closes_thinking else None), self.strip_answer(answer)
        opens = [self.open] + ([self.bare_markers[0]] if self.bare_markers else [])
        head = "|".join(re.escape(o) for o in opens)
        thinking = re.sub(r"^\s*(?:" + head + r")\n*", "", response[: m.start()], count=1)
        return thinking, self.strip_answer(response[m.end() :])

    def strip_answer(self, answer: str) -> str:
        """The answer without the format's end marker (and the whitespace after it)."""
        if not self.answer_close:
            return answer
        return re.sub(re.escape(self.answer_close) + r"\s*$", "", answer)

    def opens(self, response: str) -> bool:
        """Whether the response starts in thinking (its own opener or the template's)."""
        if self.template_closes_thinking:
            return False
        if self.template_opens_thinking:
            return True
        start = response.lstrip()
        return start.startswith(self.open) or bool(
            self.bare_markers and start.startswith(self.bare_markers[0])
        )

    def answer(self, response: str) -> str:
        """The answer of a response; empty when the thinking opened and never closed."""
        thinking, answer = self.split(response)
        if thinking is None and self.opens(response):
            return ""
        return answer

    def opened_by(self, head: str) -> bool:
        """Whether a rendered prompt already opens the thinking (an R1-style template's
        generation prompt ends with the opener), so a response must not open it again."""
        return self.template_opens_thinking or head.rstrip().endswith(self.open)

    def response_text(self, thinking: str | None, answer: str, opened: bool = False) -> str:
        """A response as the model writes it; ``opened``: the prompt already holds the opener."""
        if thinking is None or self.template_closes_thinking:
            return self.answer_open + answer
        return ("" if opened else self.opener) + thinking + self.marker + answer


#: ``<think>...</think>`` written by the model itself (SmolLM2 organisms, tiny models, Qwen3).
THINK = ThinkingFormat()
#: ``<think>`` already written by the template's generation prompt (DeepSeek-R1 distills,
#: Qwen3-2507 thinking models).
THINK_TEMPLATE_OPENS = ThinkingFormat(template_opens_thinking=True)
#: Qwen3 hybrid models with thinking on (the template's default).
QWEN3_THINK = ThinkingFormat(template_kwargs={"enable_thinking": True})
#: Qwen3 with ``enable_thinking=False``: the template writes ``<think>\n\n</think>\n\n`` itself.
QWEN3_NO_THINK = ThinkingFormat(
    template_kwargs={"enable_thinking": False}, template_closes_thinking=True
)
#: SmolLM3 with ``/think`` in the system prompt (its default mode).
SMOLLM3_THINK = ThinkingFormat(system_flag="/think")
#: SmolLM3 with ``/no_think``: the template writes an empty ``<think>`` block itself.
SMOLLM3_NO_THINK = ThinkingFormat(system_flag="/no_think", template_closes_thinking=True)
#: gpt-oss harmony: thinking is the ``analysis`` channel, the answer the ``final`` channel; the
#: generation prompt ends with ``<|start|>assistant``.
HARMONY = ThinkingFormat(
    open="<|channel|>analysis<|message|>",
    close="<|end|><|start|>assistant<|channel|>final<|message|>",
    after_open="",
    before_close="",
    after_close="",
    answer_open="<|channel|>final<|message|>",
    answer_close="<|return|>",
    bare_markers=("analysis", "assistantfinal"),
)
#: Magistral: ``[THINK]...[/THINK]`` then the answer, no blank lines.
BRACKET_THINK = ThinkingFormat(
    open="[THINK]", close="[/THINK]", after_open="", before_close="", after_close=""
)

#: The named formats (`resolve_format` and ``load_model(..., thinking=NAME)`` take these names).
FORMATS: dict[str, ThinkingFormat] = {
    "think": THINK,
    "think-template-opens": THINK_TEMPLATE_OPENS,
    "qwen3": QWEN3_THINK,
    "qwen3-no-think": QWEN3_NO_THINK,
    "smollm3": SMOLLM3_THINK,
    "smollm3-no-think": SMOLLM3_NO_THINK,
    "harmony": HARMONY,
    "bracket-think": BRACKET_THINK,
}


def format_named(name: str) -> ThinkingFormat:
    """A named format, or an error listing the names."""
    if name not in FORMATS:
        raise ValueError(
            f"unknown thinking format {name!r}; choose one of {', '.join(FORMATS)} or pass a "
            "ThinkingFormat(open=..., close=...)"
        )
    return FORMATS[name]


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    system: str | None = None,
    fmt: ThinkingFormat = THINK,
    chat_template: str | None = None,
    plain_template: bool = False,
) -> str:
    """Template text up to and including the generation prompt, with the format's switches."""
    system = fmt.system_prompt(system)
    if chat_template is None and getattr(tokenizer, "chat_template", None) is None:
        if not plain_template:
            raise ValueError(
                "tokenizer has no chat template: pass chat_template=..., set "
                "tokenizer.chat_template, or use a chat/instruct model "
                "(plain_template=True falls back to a plain 'User: ...\\nAssistant:' layout)"
            )
        head = f"System: {system}\n" if system is not None else ""
        return f"{head}User: {prompt}\nAssistant:"
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template,
        add_generation_prompt=True,
        tokenize=False,
        **fmt.chat_kwargs,
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def template_text(tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None) -> str:
    """The chat template's source (every named template joined), or "" without one."""
    source = chat_template or getattr(tokenizer, "chat_template", None)
    if isinstance(source, Mapping):
        return "\n".join(str(t) for t in source.values())
    return source or ""


def generation_prompt(
    tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None, **kwargs: Any
) -> str | None:
    """What the template adds for the generation prompt; None if a probe does not render."""
    msgs = [{"role": "user", "content": "Probe."}]
    try:
        kw = dict(chat_template=chat_template, tokenize=False, **kwargs)
        bare = tokenizer.apply_chat_template(msgs, add_generation_prompt=False, **kw)
        full = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, **kw)
    except Exception:  # noqa: BLE001 - templates raise whatever they like; detection then reads text
        return None
    if not isinstance(full, str) or not isinstance(bare, str):
        return None
    return full[len(bare) :] if full.startswith(bare) else full


def detect_format(
    tokenizer: PreTrainedTokenizerBase,
    chat_template: str | None = None,
    default: ThinkingFormat = THINK,
) -> ThinkingFormat:
    """The thinking format a chat template shows, or ``default`` when it shows none.

    Harmony channels (``<|channel|>`` with ``analysis``) win; then ``[THINK]``, then ``<think>``.
    For the bracket and ``<think>`` formats the rendered generation prompt tells whether the
    template opens the thinking (ends with the opener) or closes it (ends with the close
    marker); a template that reads ``/no_think`` from the system prompt is SmolLM3's, one that
    reads ``enable_thinking`` is Qwen3's.
    """
    text = template_text(tokenizer, chat_template)
    if not text:
        return default
    if "<|channel|>" in text and "analysis" in text:
        return HARMONY
    if "[THINK]" in text or "[/THINK]" in text:
        base = BRACKET_THINK
    elif "<think>" in text or "</think>" in text:
        base = THINK
    else:
        return default
    tail = (generation_prompt(tokenizer, chat_template) or "").rstrip()
    if tail.endswith(base.close):
        return replace(base, template_closes_thinking=True)
    if tail.endswith(base.open):
        return replace(base, template_opens_thinking=True)
    if base is THINK and "/no_think" in text:
        return SMOLLM3_THINK
    if base is THINK and "enable_thinking" in text:
        return QWEN3_THINK
    return base


def resolve_format(
    thinking: str | ThinkingFormat | None,
    tokenizer: PreTrainedTokenizerBase,
    default: ThinkingFormat = THINK,
) -> ThinkingFormat:
    """An explicit format (object or name) wins; else detection; else ``default``."""
    if isinstance(thinking, ThinkingFormat):
        return thinking
    if isinstance(thinking, str):
        return format_named(thinking)
    if thinking is not None:
        raise TypeError(
            f"thinking must be a format name ({', '.join(FORMATS)}), a ThinkingFormat or None "
            f"(detect it from the chat template), not {type(thinking).__name__}"
        )
    return detect_format(tokenizer, default=default)


def special_markers(tokenizer: PreTrainedTokenizerBase, fmt: ThinkingFormat) -> frozenset[str]:
    """The tokenizer's special tokens that the format's markers are made of.

    Decoding with ``skip_special_tokens=True`` erases these (gpt-oss channels, Magistral's
    ``[THINK]``), so responses of such a format are decoded with special tokens kept and then
    cleaned by `clean_response`.
    """
    markers = fmt.marker_texts()
    return frozenset(t for t in special_tokens(tokenizer) if any(t in m for m in markers))


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Texts of every special token of a tokenizer (named and added ones)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    texts |= {t.content for t in added.values() if getattr(t, "special", False)}
    return sorted(texts, key=len, reverse=True)


def clean_response(text: str, tokenizer: PreTrainedTokenizerBase, fmt: ThinkingFormat) -> str:
    """A response decoded with special tokens kept, without those the format does not use."""
    keep = special_markers(tokenizer, fmt)
    for tok in special_tokens(tokenizer):
        if tok not in keep:
            text = text.replace(tok, "")
    return text

"""Readings: which text a prompt becomes and where its activations are read, per protocol.

thinklens reads a user prompt in the model's own chat template (its default system prompt, if
the template has one), at every post-instruction position, and takes the last stream point
before the final norm (``resid_post`` of the last layer): one convention for every model.

The published tools read otherwise, and their faithful presets need their reading:

- ``"heretic"``: a system message "You are a helpful assistant.", then the chat template with
  the generation prompt, then a response prefix (the common start of the model's greedy
  responses; for a thinking model an empty closed thinking block plus what all responses then
  share, see ``common_response_prefix``); tokenized with the tokenizer's default special
  tokens; the last token only; the last stream point after the final norm (what HF returns as
  the last ``hidden_states`` entry).
- ``"answer"``: thinklens's conventions (the model's own template, no added special tokens,
  point ``L`` before the final norm), read where an answer starts: after the response prefix
  Heretic's rule detects (for a thinking model, the closed empty thinking block), at the last
  token only.
- ``"erisforge"`` and ``"deccp"``: the user message alone in the chat template, the last token
  only: these read the input of layer ``int(0.6 L)``, where the thinklens stream points agree.

``detect_response_prefix`` and ``chat_text`` give a metric Heretic's texts, to measure KL and
refusals on them (both pinned against plain HF calls in test_protocol.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from thinklens.generation import generate
from thinklens.model import Model

#: "thinklens" (the defaults) or "published" (the tool's own protocol, where pinned).
Protocol = Literal["thinklens", "published"]

#: Heretic's default system prompt.
HERETIC_SYSTEM = "You are a helpful assistant."

#: (opener, closed block): a response prefix that starts with an opener becomes the block.
COT_SKIPS: tuple[tuple[str, str], ...] = (
    ("<think>", "<think></think>"),
    (
        "<|channel|>analysis<|message|>",
        "<|channel|>analysis<|message|><|end|><|start|>assistant<|channel|>final<|message|>",
    ),
    ("<thought>", "<thought></thought>"),
    ("[THINK]", "[THINK][/THINK]"),
)


@dataclass(frozen=True)
class Reading:
    """How prompts are read for directions.

    ``response_prefix`` None means detected on the model (``detect_response_prefix``);
    ``special_tokens`` prepends what the tokenizer adds to a text by default (e.g. a BOS);
    ``last_point`` is what stream point ``L`` holds.
    """

    name: str = "thinklens"
    system: str | None = None
    response_prefix: str | None = ""
    positions: int | Literal["post_instruction", "last"] = "post_instruction"
    last_point: Literal["resid_post", "final_norm"] = "resid_post"
    special_tokens: bool = False


READINGS: dict[str, Reading] = {
    r.name: r
    for r in [
        Reading(),
        Reading("heretic", HERETIC_SYSTEM, None, "last", "final_norm", special_tokens=True),
        Reading("answer", response_prefix=None, positions="last"),
        Reading("erisforge", positions="last"),
        Reading("deccp", positions="last"),
    ]
}


def get_reading(reading: str | Reading) -> Reading:
    """A reading by name, or a clear error naming the known ones."""
    if isinstance(reading, Reading):
        return reading
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; choose one of {', '.join(READINGS)}")
    return READINGS[reading]


def default_special_prefix(tokenizer: Any) -> str:
    """The text of the tokens the tokenizer puts before any text by default (e.g. a BOS)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    n = len(full) - len(plain)
    if n <= 0 or full[n:] != plain:
        return ""  # nothing added in front (tokens added after the text are not reproduced)
    return tokenizer.decode(full[:n])


def chat_text(
    model: Model,
    prompt: str,
    system: str | None = None,
    response_prefix: str = "",
    special_tokens: bool = False,
) -> str:
    """One user prompt as text: chat template (with ``system``), generation prompt, prefix."""
    head = default_special_prefix(model.tokenizer) if special_tokens else ""
    return head + model.chat(prompt, system) + response_prefix


def reading_texts(
    model: Model, prompts: Sequence[str], reading: Reading, response_prefix: str = ""
) -> list[str]:
    """``prompts`` as texts under ``reading`` (its prefix, or ``response_prefix`` if it
    detects one)."""
    prefix = reading.response_prefix if reading.response_prefix is not None else response_prefix
    return [chat_text(model, p, reading.system, prefix, reading.special_tokens) for p in prompts]


def greedy_responses(
    model: Model, texts: Sequence[str], max_new_tokens: int = 100, batch_size: int = 8
) -> list[str]:
    """Greedy continuations of full texts (left-padded batches), special tokens kept."""
    return generate(
        model,
        list(texts),
        max_new_tokens,
        batch_size=batch_size,
        chat=False,
        skip_special_tokens=False,
    )


def common_response_prefix(respond: Callable[[str], Sequence[str]]) -> str:
    """Heretic's response-prefix rule over ``respond(prefix)`` (the responses to the prompts
    with ``prefix`` appended).

    The common start of the responses without a prefix, trailing spaces removed; if it opens a
    thinking block (``COT_SKIPS``), the closed empty block instead, followed by the common
    start (trailing spaces removed) of the responses given that block.
    """
    prefix = os.path.commonprefix(list(respond(""))).rstrip(" ")
    if not prefix:
        return ""
    for opener, closed in COT_SKIPS:
        if prefix.startswith(opener):
            return closed + os.path.commonprefix(list(respond(closed))).rstrip(" ")
    return prefix


def detect_response_prefix(
    model: Model,
    prompts: Sequence[str],
    system: str | None = HERETIC_SYSTEM,
    special_tokens: bool = True,
    max_new_tokens: int = 100,
    batch_size: int = 8,
) -> str:
    """The response prefix Heretic appends after the chat template, found on ``model``'s own
    greedy responses to ``prompts`` (Heretic: 100 harmless then 100 harmful prompts)."""
    if not prompts:
        raise ValueError("no prompts given: the response prefix is found on the model's answers")

    def respond(prefix: str) -> list[str]:
        texts = [chat_text(model, p, system, prefix, special_tokens) for p in prompts]
        return greedy_responses(model, texts, max_new_tokens, batch_size)

    return common_response_prefix(respond)


def check_reading(meta: Mapping[str, Any], reading: Reading, preset: str) -> None:
    """A clear error when directions (their ``meta``) were not read as ``reading`` says."""
    got = dict(
        system=meta.get("system"),
        last_point=meta.get("last_point", "resid_post"),
        special_tokens=meta.get("special_tokens", False),
        chat=meta.get("chat", True),
    )
    want = dict(
        system=reading.system,
        last_point=reading.last_point,
        special_tokens=reading.special_tokens,
        chat=True,
    )
    if reading.response_prefix is not None:  # a fixed prefix (detected ones may be anything)
        got["response_prefix"] = meta.get("response_prefix", "")
        want["response_prefix"] = reading.response_prefix
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    if bad:
        what = "; ".join(f"{k} is {g!r}, not {w!r}" for k, (g, w) in bad.items())
        raise ValueError(
            f"the published {preset} protocol needs directions read its way ({what}): "
            f"compute them with compute_directions(..., reading={reading.name!r})"
        )

"""The Echo of Prompt measures as the published code computes them (echoes-as-anchors).

The published Echo Likelihood Gap does not cut the detected echo span: it rewrites the whole
response. It takes everything after the last ``<think>`` of ``prompt + response`` (so the answer
after the closing marker too), splits it into sentences at ``.``, ``!`` and ``?`` (decimals
split, newlines do not), drops every sentence whose word overlap with the question is at least
0.6 or that has at most 3 distinct words, and keeps only the last two survivors plus a filler
sentence; a response that is all echo becomes one filler sentence. ``published_gap`` scores
that text beside thinklens's span cut (``echo_gap``), on the same traces. Layer buckets keep the
32-layer bounds and clamp them to the model (``published_buckets``). The published answer-tail
-> removed-prefix channel (``published_tail_channel``) attends from the response after its first
``r`` tokens to those ``r`` tokens, ``r`` being the tokens the echo prefix removes (by suffix
alignment), not the echo span itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from thinklens.analyses.echo.gap import common_suffix_length, gap_row, response_logprobs
from thinklens.analyses.echo.spans import Span
from thinklens.analyses.echo.traces import EchoTrace
from thinklens.attention_mass import attention_masses
from thinklens.model import Model

#: The published buckets, written for 32-layer models.
PUBLISHED_BUCKETS: dict[str, tuple[int, int]] = {"early": (0, 6), "mid": (7, 18), "late": (19, 31)}
#: What the published trim appends after the kept sentences (none, one, two or more kept).
FILLERS = (
    "Now I need to solve this step by step.",
    ". Now let me continue solving this.",
    " Let me work through this systematically.",
)


def _words(text: str) -> set[str]:
    return set(re.sub(r"[^\w\s]", "", text.lower()).split())


def published_trim(text: str, question: str) -> str:
    """``text`` (prompt + response) with its echo removed the published way (see module)."""
    m = re.search(r"(.*<think>\s*)(.*)", text, re.DOTALL)
    if m is None:
        return text
    prefix, content = m.group(1), m.group(2).strip()
    q = _words(question)
    kept = []
    for sentence in (s.strip() for s in re.split(r"[.!?]", content)):
        words = _words(sentence)
        if sentence and len(words) > 3 and len(q & words) / len(words) < 0.6:
            kept.append(sentence)
    if not kept:
        return prefix + FILLERS[0]
    if len(kept) == 1:
        return prefix + kept[0] + FILLERS[1]
    body = ". ".join(kept[-2:])
    return prefix + (body if body.endswith(".") else body + ".") + FILLERS[2]


def published_gap(
    model: Model, traces: Sequence[EchoTrace], batch_size: int = 4, progress: bool = False
) -> pd.DataFrame:
    """The Echo Likelihood Gap with the published trim, one row per trace (as ``echo_gap``).

    The trimmed text keeps the prompt, so the response scored is what follows it; a prompt that
    does not end with ``<think>`` keeps the whitespace the trim keeps after it.
    """
    tok = model.tokenizer
    orig = [t.tokens(tok) for t in traces]
    trimmed = []
    for i, t in enumerate(traces):
        text = published_trim(t.text, t.question)
        if not text.startswith(t.prompt):
            raise ValueError(
                f"trace {i}: its prompt has no '<think>' and the response has one, so the "
                "published trim cuts inside the prompt; give traces in the published layout"
            )
        response = text[len(t.prompt) :]
        trimmed.append(EchoTrace(t.question, t.prompt, response, 0, len(response)).tokens(tok))
    lps = response_logprobs(model, orig + trimmed, batch_size, progress)
    n = len(traces)
    rows = []
    for i in range(n):
        o, t = orig[i], trimmed[i]
        rows.append(
            dict(
                trace=i, **gap_row(lps[i], lps[n + i], o.ids[o.prompt_len :], t.ids[t.prompt_len :])
            )
        )
    return pd.DataFrame(rows)


def published_buckets(n_layers: int) -> dict[str, tuple[int, int] | None]:
    """The published layer buckets on a model of ``n_layers``: each bound clamped to the model,
    swapped if reversed, and the bucket empty (None) where the published code averages nothing."""
    out: dict[str, tuple[int, int] | None] = {}
    for name, (a, b) in PUBLISHED_BUCKETS.items():
        i, j = max(0, a), min(n_layers - 1, b)
        if i > j:
            i, j = j, i
        out[name] = None if (i < 0 or j >= n_layers or i > j) else (i, j)
    return out


#: What the published code strips from the start of the kept thinking after cutting the echo.
_STRIP = " \n\t.,;:!?-"


def removed_tokens(tokenizer: object, trace: EchoTrace, echo: Span | None) -> int:
    """``r``: response tokens the published code counts as removed when the thinking loses its
    prefix up to the end of ``echo`` (a character span of the thinking): the response length
    minus the longest common token suffix with the cut response (0 without an echo)."""
    if echo is None or echo[1] <= 0:
        return 0
    kept = trace.thinking[echo[1] :].lstrip(_STRIP)
    cut = trace.response[: trace.think_start] + kept + trace.response[trace.think_end :]
    raw = tokenizer(trace.response, add_special_tokens=False)["input_ids"]
    new = tokenizer(cut, add_special_tokens=False)["input_ids"]
    return len(raw) - common_suffix_length(raw, new)


def published_tail_channel(
    model: Model, traces: Sequence[EchoTrace], spans: Sequence[list[Span]], batch_size: int = 2
) -> pd.DataFrame:
    """The published answer-tail -> removed-prefix attention, one row per trace: ``r`` and the
    head-averaged mass from response tokens ``[r, end)`` to ``[0, r)`` at the last layer and
    averaged over layers (NaN without an echo or without a tail). The first echo span of each
    trace (from the detector of your choice) stands for the published embedding detector's
    boundary."""
    tok = model.tokenizer
    layouts = [t.tokens(tok) for t in traces]
    rs, chans = [], []
    for t, lay, sp in zip(traces, layouts, spans, strict=True):
        r = removed_tokens(tok, t, sp[0] if sp else None)
        p, n = lay.response
        r = min(r, n - p)
        rs.append(r)
        chans.append([(p + r, n, p, p + r) if r > 0 else (0, 0, 0, 0)])
    masses = attention_masses(model, [lay.ids for lay in layouts], chans, batch_size)
    per_layer = masses[..., 0].mean(-1)  # [trace, layer], averaged over heads
    return pd.DataFrame(
        dict(
            trace=range(len(traces)),
            r=rs,
            last_layer=per_layer[:, -1].numpy(),
            all_layers_mean=per_layer.mean(-1).numpy(),
        )
    )

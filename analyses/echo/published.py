"""The Echo of Prompt measures as the published code computes them (echoes-as-anchors).

The published Echo Likelihood Gap does not cut the detected echo span: it rewrites the whole
response. It takes everything after the last ``<think>`` of ``prompt + response`` (so the answer
after the closing marker too), splits it into sentences at ``.``, ``!`` and ``?`` (decimals
split, newlines do not), drops every sentence whose word overlap with the question is at least
0.6 or that has at most 3 distinct words, and keeps only the last two survivors plus a filler
sentence; a response that is all echo becomes one filler sentence. ``published_gap`` scores
that text beside thinklens's span cut (``echo_gap``), on the same traces. Layer buckets keep the
32-layer bounds and clamp them to the model (``published_buckets``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from thinklens.analyses.echo.gap import gap_row, response_logprobs
from thinklens.analyses.echo.traces import EchoTrace
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

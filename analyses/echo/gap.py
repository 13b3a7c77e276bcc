"""Echo Likelihood Gap: how much the echo raises the likelihood of the rest of the response.

``gL`` is the mean teacher-forced log-probability of the response tokens (everything after the
prompt); the gap is ``gL(original) - gL(echo removed)`` in nats per token. The controls of the
published analysis come with it: removed tokens ``n_original - LCS(original, trimmed)``, the gap
per removed token, the gap over the longest common token suffix only (the same tokens scored
with and without the echo before them), and bins of the removed-token count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from thinklens.analyses.echo.spans import Embedder, Method, Span
from thinklens.analyses.echo.traces import EchoTrace, TokenLayout, resolve_spans
from thinklens.model import Model

#: Published bins of the removed-token count.
LENGTH_BINS = ("0", "1-5", "6-10", "11-20", "21+")


def length_bin(n: int) -> str:
    """The published bin of a removed-token count."""
    if n <= 0:
        return "0"
    return "1-5" if n <= 5 else "6-10" if n <= 10 else "11-20" if n <= 20 else "21+"


def common_suffix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common suffix of two token lists."""
    n = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        n += 1
    return n


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence of two token lists.

    The common prefix and suffix belong to some longest common subsequence, so only the middle
    parts (around the removed echo, usually short) go through the quadratic recurrence.
    """
    a, b = list(a), list(b)
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = common_suffix_length(a[head:], b[head:])
    a, b = a[head : len(a) - tail], b[head : len(b) - tail]
    if not a or not b:
        return head + tail
    prev = np.zeros(len(b) + 1, dtype=np.int64)
    b_arr = np.asarray(b)
    for x in a:
        # Row update: matches extend the diagonal, then a running max carries values right.
        cur = np.zeros_like(prev)
        cur[1:] = np.where(b_arr == x, prev[:-1] + 1, prev[1:])
        cur = np.maximum.accumulate(cur)
        prev = cur
    return head + tail + int(prev[-1])


def check_fits(model: Model, layout: TokenLayout, i: int) -> None:
    """A clear error when a trace (or its prompt alone) does not fit the model's context."""
    if layout.prompt_len > model.n_ctx:
        raise ValueError(
            f"trace {i}: the prompt alone has {layout.prompt_len} tokens, over {model.name}'s "
            f"context length {model.n_ctx}: the question is too long for this model; drop it"
        )
    if len(layout.ids) > model.n_ctx:
        raise ValueError(
            f"trace {i} has {len(layout.ids)} tokens, over {model.name}'s context length "
            f"{model.n_ctx}: truncate its response or drop it"
        )


@torch.no_grad()
def response_logprobs(
    model: Model, layouts: Sequence[TokenLayout], batch_size: int = 4, progress: bool = False
) -> list[Float[Tensor, " response"]]:
    """Teacher-forced log-probability of every response token of each trace.

    Batches are sorted by length and right-padded; logits come from the model's backend, so
    interventions act here too.
    """
    for i, lay in enumerate(layouts):
        check_fits(model, lay, i)
    order = sorted(range(len(layouts)), key=lambda i: -len(layouts[i].ids))
    out: list[Tensor | None] = [None] * len(layouts)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    pad = model.tokenizer.pad_token_id or 0
    for chunk in tqdm(chunks, desc="log-probs", unit="batch", disable=not progress):
        width = max(len(layouts[i].ids) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(chunk):
            n = len(layouts[i].ids)
            ids[j, :n] = torch.tensor(layouts[i].ids)
            mask[j, :n] = 1
        logits = model.backend.logits(ids.to(model.device), mask.to(model.device))
        for j, i in enumerate(chunk):
            p, n = layouts[i].prompt_len, len(layouts[i].ids)
            # Position t predicts token t + 1: response tokens p..n-1 come from rows p-1..n-2.
            lp = logits[j, p - 1 : n - 1].float().log_softmax(-1)
            target = ids[j, p:n].to(lp.device)
            out[i] = lp.gather(-1, target[:, None])[:, 0].cpu()
    return out


def _mean(x: Tensor) -> float:
    return float(x.mean()) if len(x) else float("nan")


def gap_row(lp_orig: Tensor, lp_trim: Tensor, ids_orig: list[int], ids_trim: list[int]) -> dict:
    """Gap and controls of one trace from the response log-probs and ids of both versions."""
    common = lcs_length(ids_orig, ids_trim)
    removed = len(ids_orig) - common
    suffix = common_suffix_length(ids_orig, ids_trim)
    gap = _mean(lp_orig) - _mean(lp_trim)
    gap_sum = float(lp_orig.sum() - lp_trim.sum())
    per = removed if removed > 0 else float("nan")
    suf_o, suf_t = lp_orig[len(lp_orig) - suffix :], lp_trim[len(lp_trim) - suffix :]
    return dict(
        gl_original=_mean(lp_orig),
        gl_removed=_mean(lp_trim),
        gap=gap,
        gap_sum=gap_sum,
        n_original=len(ids_orig),
        n_removed_version=len(ids_trim),
        removed_tokens=removed,
        added_tokens=len(ids_trim) - common,
        gap_per_removed=gap / per,
        gap_sum_per_removed=gap_sum / per,
        suffix_len=suffix,
        suffix_gap=_mean(suf_o) - _mean(suf_t) if suffix else float("nan"),
        suffix_gap_sum=float(suf_o.sum() - suf_t.sum()),
        length_bin=length_bin(removed),
    )


def echo_gap(
    model: Model,
    traces: Sequence[EchoTrace],
    spans: Sequence[list[Span]] | None = None,
    method: Method = "lexical",
    embed: Embedder | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per trace: the Echo Likelihood Gap (nats/token) and its controls.

    Args:
        spans: echo spans per trace (character ranges of the thinking); detected with
            ``method`` when not given. A trace without an echo has gap 0 and bin ``"0"``.
    A trace whose whole response is echo has ``gl_removed`` NaN (nothing is left to score).
    """
    spans = resolve_spans(traces, spans, method, embed)
    tok = model.tokenizer
    orig = [t.tokens(tok) for t in traces]
    trim = [t.without(s).tokens(tok) for t, s in zip(traces, spans, strict=True)]
    for i, lay in enumerate(orig):
        if lay.response[1] <= lay.response[0]:
            raise ValueError(
                f"trace {i} has an empty response (no thinking and no answer): there is no "
                "response token to score; drop it"
            )
    lps = response_logprobs(model, orig + trim, batch_size, progress)
    rows = []
    n = len(traces)
    for i in range(n):
        o, t = orig[i], trim[i]
        row = gap_row(lps[i], lps[n + i], o.ids[o.prompt_len :], t.ids[t.prompt_len :])
        rows.append(dict(trace=i, n_echo_spans=len(spans[i]), **row))
    return pd.DataFrame(rows)


def gap_by_bin(df: pd.DataFrame, group: str | None = None) -> pd.DataFrame:
    """Mean gap, gap per removed token and suffix gap per removed-token bin (and group)."""
    keys = [group, "length_bin"] if group else ["length_bin"]
    cols = ["gap", "gap_per_removed", "gap_sum_per_removed", "suffix_gap", "removed_tokens"]
    out = df.groupby(keys, observed=True)[cols].mean()
    out["n"] = df.groupby(keys, observed=True).size()
    out = out.reset_index()
    out["length_bin"] = pd.Categorical(out["length_bin"], LENGTH_BINS, ordered=True)
    return out.sort_values(keys).reset_index(drop=True)

"""Attention refocusing: how much the response attends to the question, its prefix and the echo.

Channels per trace (source -> destination, token ranges; "answer" is every response token, as in
the published measure):

- ``answer->question``: to the question's tokens in the prompt;
- ``answer->prefix@K``: to the first K response tokens, K swept over ``ks``;
- ``answer->echo``: to the first detected echo span;
- ``tail->removed``: from the tokens after that echo to the echo itself.

Masses come from :func:`thinklens.attention_mass.attention_masses` (memory-bounded, every layer
and head). Between two groups of traces (correct vs wrong, echo vs none) the Mann-Whitney AUC
and Cohen's d (pooled SD) are given per layer and per early/middle/late bucket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from thinklens.analyses.echo.gap import check_fits
from thinklens.analyses.echo.spans import Embedder, Method, Span
from thinklens.analyses.echo.traces import EchoTrace, TokenLayout, resolve_spans
from thinklens.attention_mass import ChannelSpans, attention_masses
from thinklens.model import Model
from thinklens.stats import cohens_d, rank_auc

#: Published answer-prefix lengths.
PREFIX_KS = (8, 16, 32, 64)
_EMPTY: ChannelSpans = (0, 0, 0, 0)


def channels_for(
    layout: TokenLayout, echo: Span | None, ks: Sequence[int] = PREFIX_KS
) -> dict[str, ChannelSpans]:
    """The refocusing channels of one trace; ``echo`` is a token range of the trace or None."""
    p, n = layout.response
    out = {"answer->question": (p, n, *layout.question)}
    for k in ks:
        out[f"answer->prefix@{k}"] = (p, n, p, min(p + k, n))
    has_echo = echo is not None and echo[1] > echo[0]
    out["answer->echo"] = (p, n, *echo) if has_echo else _EMPTY
    out["tail->removed"] = (echo[1], n, *echo) if has_echo else _EMPTY
    return out


def echo_attention(
    model: Model,
    traces: Sequence[EchoTrace],
    spans: Sequence[list[Span]] | None = None,
    method: Method = "lexical",
    embed: Embedder | None = None,
    ks: Sequence[int] = PREFIX_KS,
    per_head: bool = False,
    batch_size: int = 2,
    progress: bool = False,
) -> pd.DataFrame:
    """Long table of masses: ``trace, layer, [head,] channel, mass`` (head-averaged by default).

    Channels without an echo (or an empty source) have NaN mass.
    """
    spans = resolve_spans(traces, spans, method, embed)
    layouts = [t.tokens(model.tokenizer) for t in traces]
    chans = []
    for i, (lay, sp) in enumerate(zip(layouts, spans, strict=True)):
        check_fits(model, lay, i)
        if lay.response[1] <= lay.response[0]:
            raise ValueError(f"trace {i} has an empty response: no answer tokens attend anywhere")
        chans.append(channels_for(lay, lay.thinking_tokens(sp[0]) if sp else None, ks))
    names = list(chans[0])
    masses = attention_masses(
        model, [lay.ids for lay in layouts], [list(c.values()) for c in chans], batch_size, progress
    )  # [trace, layer, head, channel]
    if not per_head:
        masses = masses.mean(2, keepdim=True)
    t, layer, head, c = np.meshgrid(*(np.arange(s) for s in masses.shape), indexing="ij")
    df = pd.DataFrame(
        dict(
            trace=t.ravel(),
            layer=layer.ravel(),
            head=head.ravel(),
            channel=np.asarray(names)[c.ravel()],
            mass=masses.numpy().ravel(),
        )
    )
    return df if per_head else df.drop(columns="head")


def layer_buckets(n_layers: int) -> dict[str, tuple[int, int]]:
    """Early / middle / late layer ranges (inclusive), the published 32-layer split (0-6, 7-18,
    19-31) scaled to ``n_layers``."""
    a, b = round(7 * n_layers / 32), round(19 * n_layers / 32)
    return {"early": (0, a - 1), "middle": (a, b - 1), "late": (b, n_layers - 1)}


def bucket_masses(
    df: pd.DataFrame, buckets: Mapping[str, tuple[int, int]] | None = None
) -> pd.DataFrame:
    """Masses averaged over the layers of each bucket: ``trace, [head,] channel, bucket, mass``."""
    buckets = buckets or layer_buckets(int(df["layer"].max()) + 1)
    keys = ["trace", "head", "channel"] if "head" in df else ["trace", "channel"]
    parts = []
    for name, (lo, hi) in buckets.items():
        sel = df[(df["layer"] >= lo) & (df["layer"] <= hi)]
        part = sel.groupby(keys, as_index=False)["mass"].mean()
        parts.append(part.assign(bucket=name))
    return pd.concat(parts, ignore_index=True)


def compare_groups(
    df: pd.DataFrame, labels: Mapping[int, bool] | Sequence[bool], by: str = "layer"
) -> pd.DataFrame:
    """AUC and Cohen's d of the mass between traces labelled True and False.

    Args:
        df: the table of :func:`echo_attention` (``by="layer"``) or of :func:`bucket_masses`
            (``by="bucket"``).
        labels: per trace index, True for the first group (e.g. correct, or with an echo).
    """
    labels = dict(labels) if isinstance(labels, Mapping) else dict(enumerate(labels))
    d = df.assign(group=df["trace"].map(labels))
    if d["group"].isna().any():
        raise ValueError("some traces have no group label: give a label for every trace")
    keys = ["channel", by] + (["head"] if "head" in d else [])
    rows = []
    for key, part in d.groupby(keys, sort=False):
        a = part.loc[part["group"].astype(bool), "mass"]
        b = part.loc[~part["group"].astype(bool), "mass"]
        rows.append(
            dict(
                zip(keys, key, strict=True),
                mean_true=a.mean(),
                mean_false=b.mean(),
                n_true=int(a.notna().sum()),
                n_false=int(b.notna().sum()),
                auc=rank_auc(a, b),
                cohens_d=cohens_d(a, b),
            )
        )
    return pd.DataFrame(rows)

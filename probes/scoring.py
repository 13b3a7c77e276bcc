"""Token trajectories: the refusal score at every position of every trace.

One forward pass per batch, stopped after the probe's layer (the capture never runs the layers
above it), and only a batch of activations is alive at a time, so memory does not grow with the
number of traces or of layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from thinklens.batching import auto_batch_size, run_batched
from thinklens.capture import capture
from thinklens.model import Model
from thinklens.probes.features import normed_features, probe_features
from thinklens.probes.probe import RefusalProbe
from thinklens.traces import PARTS, Trace


def _check_traces(traces: Sequence[Trace], require_marker: bool) -> None:
    if len(traces) == 0:
        raise ValueError("no traces given: score_tokens needs at least one trace")
    if require_marker:
        for i, t in enumerate(traces):
            if t.thinking is None:
                raise ValueError(
                    f"trace {i} has no thinking and no closing marker: build it from a response "
                    "with thinklens.traces.split_response(..., require_marker=True), or pass "
                    "require_marker=False to score traces without thinking"
                )


def score_tokens(
    model: Model,
    probe: RefusalProbe,
    traces: Sequence[Trace],
    batch_size: int | None = None,
    require_marker: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """The probe's refusal score at every token of each trace, as a long table.

    Columns: ``example`` (index into ``traces``), ``position``, ``part`` (prompt, thinking,
    marker, answer), ``token`` (decoded text of that token), ``score``, and ``from_answer``
    (position minus the first answer position: -1 is the last token before the answer).
    ``batch_size`` None chooses it from free memory and halves it on out-of-memory.
    """
    _check_traces(traces, require_marker)
    probe.check(model)
    site = f"resid_post.{probe.layer}"
    order = sorted(range(len(traces)), key=lambda i: -len(traces[i].input_ids))
    frames = []
    tok = model.tokenizer

    def run(batch: list[int]) -> tuple[Tensor, Tensor]:
        texts = [traces[i].text for i in batch]
        caps = capture(model, texts, [site], "all", batch_size=len(batch), progress=False)
        h = caps[site]
        feats = normed_features(model, h) if probe.norm else h.float()
        return caps.lengths, probe.score(feats).cpu()

    first = 0
    if batch_size is None:
        first = auto_batch_size(model, len(traces[order[0]].input_ids), len(order))
    bar = tqdm(total=len(traces), desc="score tokens", unit="trace", disable=not progress)
    for batch, (lengths, scores) in run_batched(order, run, batch_size, first, "score_tokens"):
        for row, i in enumerate(batch):
            t = traces[i]
            n = int(lengths[row])
            if n != len(t.input_ids):
                raise RuntimeError(
                    f"trace {i} tokenizes to {n} tokens, not the {len(t.input_ids)} of its "
                    "spans: build traces with this model's tokenizer (model.trace(...))"
                )
            part = [""] * n
            for name in PARTS:
                s, e = t.spans[name]
                part[s:e] = [name] * (e - s)
            answer_start = t.spans["answer"][0]
            frames.append(
                pd.DataFrame(
                    dict(
                        example=i,
                        position=range(n),
                        part=part,
                        token=[tok.decode([x]) for x in t.input_ids],
                        score=scores[row, :n].numpy(),
                        from_answer=[p - answer_start for p in range(n)],
                    )
                )
            )
        bar.update(len(batch))
    bar.close()
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["example", "position"], ignore_index=True)


def score_last(
    model: Model, probe: RefusalProbe, texts: Sequence[str], batch_size: int | None = None
) -> Float[Tensor, " batch"]:
    """The probe's score at the last position of each text (the published cliff proxy)."""
    probe.check(model)
    feats = probe_features(model, texts, [probe.layer], probe.norm, "last", batch_size, False)
    return probe.score(feats[probe.layer])

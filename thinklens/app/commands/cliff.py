"""``thinklens cliff train|sweep-layers|score``: refusal probes, and the refusal cliff of
traces."""

from __future__ import annotations

import json
from pathlib import Path

from thinklens.analyses.cliff import (
    CliffDataConfig,
    CliffScoreConfig,
    CliffSweepLayersConfig,
    CliffTrainConfig,
)

HELP = "refusal probes and the refusal cliff of traces"


def _labelled(
    cfg: CliffDataConfig, model
) -> tuple[list[str], list[int], list[tuple[int, int]] | None]:
    """Probe texts, labels and (for ``--positions window``) the window span of each text."""
    from thinklens.data import load_prompts, load_records
    from thinklens.probes import window_span
    from thinklens.probes.behaviour import behaviour_labels, behaviour_traces
    from thinklens.rollouts import rollout

    if cfg.labelled:
        if cfg.positions != "last":
            raise ValueError(
                "--positions window needs the model's rollouts (--harmful/--harmless) to find "
                "each trace's thinking; --labelled texts are read at their last position"
            )
        rows = load_records(cfg.labelled, limit=cfg.limit)
        if not rows or not {"text", "label"} <= set(rows[0]):
            raise ValueError(f"{cfg.labelled} needs 'text' and 'label' fields in every record")
        return [r["text"] for r in rows], [int(r["label"]) for r in rows], None
    harmful = load_prompts(cfg.harmful, limit=cfg.limit)
    harmless = load_prompts(cfg.harmless, limit=cfg.limit)
    h = rollout(model, harmful, cfg.max_new_tokens)
    b = rollout(model, harmless, cfg.max_new_tokens)
    if cfg.positions == "window":
        traces, labels = behaviour_traces(model, h, b)
        texts, spans = [t.text for t in traces], [window_span(t) for t in traces]
    else:
        (texts, labels), spans = behaviour_labels(model, h, b), None
    print(f"behaviour labels: {sum(labels)} refused harmful, {len(labels) - sum(labels)} benign")
    return texts, labels, spans


def _train(cfg: CliffTrainConfig) -> None:
    import thinklens as tl
    from thinklens.probes import RefusalProbe

    model = tl.load_model(cfg.model, backend=cfg.backend)
    if Path(cfg.out).with_suffix(".safetensors").exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} exists; pass --overwrite or choose another path")
    texts, labels, spans = _labelled(cfg, model)
    probe = RefusalProbe.train(
        model, texts, labels, layer=cfg.layer, method=cfg.method, seed=cfg.seed, spans=spans
    )
    path = probe.save(cfg.out, overwrite=cfg.overwrite)
    print(json.dumps(dict(probe=str(path), layer=probe.layer, **probe.metrics), indent=1))


def _sweep_layers(cfg: CliffSweepLayersConfig) -> None:
    import thinklens as tl
    from thinklens.probes import sweep_layers
    from thinklens.tables import write_table

    model = tl.load_model(cfg.model, backend=cfg.backend)
    texts, labels, spans = _labelled(cfg, model)
    table, _ = sweep_layers(model, texts, labels, method=cfg.method, seed=cfg.seed, spans=spans)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if cfg.out:
        print(f"written to {write_table(table, cfg.out)}")


def _score(cfg: CliffScoreConfig) -> None:
    import thinklens as tl
    from thinklens.analyses.cliff.study import study_group
    from thinklens.probes import RefusalProbe, cliff_table, score_tokens
    from thinklens.rollouts import read_traces, traces_of
    from thinklens.tables import write_table

    model = tl.load_model(cfg.model, backend=cfg.backend)
    probe = RefusalProbe.load(cfg.probe, model=model)
    table = read_traces(cfg.traces, model, limit=cfg.limit)
    kept = table[table["thinking"].notna()].reset_index(drop=True)
    scores = score_tokens(model, probe, traces_of(model, table), batch_size=cfg.batch_size)
    cliffs = cliff_table(scores, k=cfg.k)
    extra = [c for c in kept.columns if c not in ("response", "thinking", "answer")]
    cliffs = cliffs.join(kept[extra])
    if "group" in kept:
        cliffs["study_group"] = [study_group(r) for r in kept.itertuples()]
    print(f"cliffs written to {write_table(cliffs, cfg.out)}")
    if cfg.tokens:
        print(f"token scores written to {write_table(scores, cfg.tokens)}")
    summary = cliffs.groupby("study_group" if "study_group" in cliffs else "refused")[
        ["cliff", "last_score"]
    ].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


#: verb -> (help, config, handler)
VERBS = {
    "train": (
        "train a refusal probe (labels from the model's behaviour)",
        CliffTrainConfig,
        _train,
    ),
    "sweep-layers": (
        "a probe per layer from one capture pass",
        CliffSweepLayersConfig,
        _sweep_layers,
    ),
    "score": ("traces (JSONL) -> one row of cliff measures each", CliffScoreConfig, _score),
}

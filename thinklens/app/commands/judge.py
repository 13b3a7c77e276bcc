"""``thinklens judge select`` (score, select, export) and ``judge repair`` (train, evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

from thinklens.analyses.judge import JudgeRepairConfig, JudgeSelectConfig

HELP = "Cliff-as-a-Judge, safety training data chosen by its refusal cliff"


def _pool(cfg: JudgeSelectConfig, model):
    """The candidate pool: records from a file, or the model's own thinking on prompts."""
    from thinklens.analyses.judge.pool import build_pool, pool_from_records
    from thinklens.data import frame_all, load_prompts, load_records

    if cfg.pool:
        return pool_from_records(load_records(cfg.pool, limit=cfg.limit), seed=cfg.seed)
    prompts = load_prompts(cfg.prompts, limit=cfg.limit)
    if cfg.frame:
        prompts = frame_all(prompts, seed=cfg.seed)
    return build_pool(
        model,
        prompts,
        source=Path(str(cfg.prompts)).stem,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )


def _select(cfg: JudgeSelectConfig) -> None:
    import thinklens as tl
    from thinklens.analyses.judge.export import export_selection
    from thinklens.analyses.judge.select import score_pool, select
    from thinklens.probes import RefusalProbe

    # Bad requests fail before any slow step.
    if Path(cfg.out).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} exists; pass --overwrite or choose another folder")
    sized = cfg.fraction is not None or cfg.top_k is not None
    if cfg.method == "all" and sized:
        raise ValueError("--method all takes the whole pool: drop --fraction/--top-k")
    if cfg.method not in ("all", "rule") and not sized:
        raise ValueError(f"--method {cfg.method} needs --fraction (0 < f <= 1) or --top-k")
    if cfg.fraction is not None and not 0 < cfg.fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {cfg.fraction}: 0.05 selects 5%")
    model = tl.load_model(cfg.model, backend=cfg.backend)
    probe = RefusalProbe.load(cfg.probe, model=model)
    pool = _pool(cfg, model)
    print(f"candidate pool: {len(pool)}")
    if cfg.method in ("cliff", "proxy"):
        pool = score_pool(model, probe, pool, k=cfg.k, batch_size=cfg.batch_size)
    chosen = select(
        pool, cfg.method, cfg.top_k, cfg.fraction, seed=cfg.seed, probe_path=str(cfg.probe)
    )
    out = export_selection(
        chosen, cfg.out, model.thinking, cfg.formats, model.name, overwrite=cfg.overwrite
    )
    ranges = chosen.provenance["score_ranges"]["selected"]
    print(f"selected {chosen.size} of {chosen.pool_size} by {cfg.method}; scores {ranges}")
    print(f"exported to {out}")


def _repair(cfg: JudgeRepairConfig) -> None:
    import thinklens as tl
    from thinklens.analyses.judge.export import read_export
    from thinklens.analyses.judge.repair import repair, safety_eval
    from thinklens.data import frame_all, load_prompts
    from thinklens.tables import write_table
    from thinklens.xstest import xstest_prompts

    if cfg.out and Path(cfg.out).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} exists; pass --overwrite or choose another path")
    over = xstest_prompts("safe", cfg.xstest, cfg.n_xstest) if cfg.xstest else None
    model = tl.load_model(cfg.model, backend=cfg.backend)
    table = read_export(cfg.data, model.thinking)
    harmful = load_prompts(cfg.harmful, limit=cfg.n_eval, split="test")
    harmless = load_prompts(cfg.harmless, limit=cfg.n_eval, split="test")
    if cfg.frame:
        harmful = frame_all(harmful, seed=cfg.seed)
    kw = dict(max_new_tokens=cfg.max_new_tokens, progress=True, over_refusal=over)
    before = safety_eval(model, harmful, harmless, **kw)
    fixed = repair(model, table, cfg.training())
    after = safety_eval(fixed.model, harmful, harmless, **kw)
    res = dict(
        examples=fixed.n_examples,
        train_seconds=round(fixed.seconds, 1),
        final_loss=fixed.losses[-1],
        asr_before=before["asr"],
        asr_after=after["asr"],
        harmless_refusal_before=before["harmless_refusal"],
        harmless_refusal_after=after["harmless_refusal"],
        n_harmful=before["n_harmful"],
        n_harmless=before["n_harmless"],
    )
    if over:
        res |= dict(
            over_refusal_before=before["over_refusal"],
            over_refusal_after=after["over_refusal"],
            n_over_refusal=len(over),
        )
    print(json.dumps(res, indent=1))
    if cfg.out:
        import pandas as pd

        print(f"written to {write_table(pd.DataFrame([res]), cfg.out, cfg.overwrite)}")


#: verb -> (help, config, handler)
VERBS = {
    "select": ("score candidates, select, export training data", JudgeSelectConfig, _select),
    "repair": (
        "LoRA SFT on an exported selection; ASR before and after",
        JudgeRepairConfig,
        _repair,
    ),
}

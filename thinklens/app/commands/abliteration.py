"""``thinklens abliteration directions|apply|search|export|evaluate``: refusal directions, weight
edits, Heretic's search, export and evaluation.

Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from thinklens.analyses.abliteration import (
    AbliterationApplyConfig,
    AbliterationDirectionsConfig,
    AbliterationEvaluateConfig,
    AbliterationExportConfig,
    AbliterationSearchConfig,
)

HELP = "refusal directions, removed from the weights"

#: The configs that describe a weight edit (``_edit``).
_Editing = AbliterationApplyConfig | AbliterationExportConfig | AbliterationEvaluateConfig


def _prompts(source: str, n: int | None, split: str) -> list[str]:
    from thinklens.data import load_prompts

    return load_prompts(source, limit=n, split=split)


def _load(cfg: Any) -> Any:
    import thinklens as tl
    from thinklens.xstest import xstest_path

    if getattr(cfg, "xstest", None):
        xstest_path(cfg.xstest)  # a wrong path fails before the model loads
    return tl.load_model(cfg.model, backend=cfg.backend)


def _directions(cfg: AbliterationDirectionsConfig) -> None:
    from thinklens.interventions.abliteration.directions import compute_directions
    from thinklens.interventions.abliteration.selection import NoCandidate, select_direction

    model = _load(cfg)
    n_val = cfg.n_val if cfg.select else 0
    harmful = _prompts(cfg.harmful, cfg.n + n_val, "train")
    harmless = _prompts(cfg.harmless, cfg.n + n_val, "train")
    if min(len(harmful), len(harmless)) <= n_val:
        raise ValueError(f"need more than --n-val {n_val} prompts of each kind")
    # Validation prompts come off the end, so they never enter the means.
    dirs = compute_directions(
        model,
        harmful[: len(harmful) - n_val],
        harmless[: len(harmless) - n_val],
        positions=cfg.positions,
        winsorize_quantile=cfg.winsorize_quantile,
        batch_size=cfg.batch_size,
        reading=cfg.reading,
        response_prefix=cfg.response_prefix,
    )
    path = dirs.save(cfg.out, overwrite=cfg.overwrite)  # saved before the long selection
    print(
        f"directions of {model.name} ({dirs.n_layers + 1} points x {len(dirs.positions)} "
        f"positions) saved to {path}"
    )
    if not cfg.select:
        return
    csv = f"{str(cfg.out).removesuffix('.safetensors')}.candidates.csv"
    try:
        sel = select_direction(
            model,
            dirs,
            harmful[-n_val:],
            harmless[-n_val:],
            kl_threshold=cfg.kl_threshold,
            induce_refusal_threshold=cfg.induce_refusal_threshold,
            positions=cfg.select_positions,
            layers=cfg.select_layers,
            refusal_words=cfg.refusal_words,
            thinking={"auto": None, "on": True, "off": False}[cfg.thinking],
            batch_size=cfg.batch_size,
        )
    except NoCandidate as err:
        err.table.to_csv(csv, index=False)
        raise ValueError(f"{err}; candidate table: {csv}") from None
    sel.table.to_csv(csv, index=False)
    dirs.save(cfg.out, overwrite=True)  # now with the selection in its metadata
    print(f"selected position {sel.pos}, layer {sel.layer}; candidate table: {csv}")


def _edit_args(cfg: _Editing, model: Any) -> tuple[str, Any, dict[str, Any], dict]:
    """The preset, directions and ``plan`` arguments of the edit ``cfg`` describes, and the
    search metrics of its trial, if any."""
    from thinklens.interventions.abliteration.directions import RefusalDirections
    from thinklens.interventions.abliteration.heretic import HereticParams

    dirs = RefusalDirections.load(cfg.directions, model)
    kw: dict[str, Any] = dict(layer=cfg.layer, pos=cfg.pos, scale=cfg.scale)
    if not isinstance(cfg, AbliterationExportConfig):
        kw |= dict(protocol=cfg.protocol, bias=cfg.bias or None)
    trial_metrics: dict = {}
    if isinstance(cfg, AbliterationExportConfig):
        import optuna

        from thinklens.analyses.abliteration.search import storage_url, trial_params

        study = optuna.load_study(study_name=cfg.study_name, storage=storage_url(cfg.storage))
        kw["params"] = trial_params(study, cfg.trial)
        if cfg.lora_rank is not None:
            kw["params"] = dataclasses.replace(kw["params"], lora_rank=cfg.lora_rank)
        t = next(t for t in study.trials if t.number == cfg.trial)
        trial_metrics = {k: v for k, v in t.user_attrs.items() if k != "params"}
        trial_metrics["trial"] = cfg.trial
        preset = "heretic"
    else:
        preset = cfg.preset
        if cfg.params:
            text = cfg.params
            if not text.lstrip().startswith("{"):
                text = Path(text).read_text()
            kw["params"] = HereticParams.from_dict(json.loads(text))
    kw = {k: v for k, v in kw.items() if v is not None}
    return preset, dirs, kw, trial_metrics


def _edit(cfg: _Editing, model: Any) -> tuple[Any, dict]:
    """The edited model ``cfg`` describes, and the search metrics of its trial, if any."""
    from thinklens.interventions.abliteration.weights import apply

    preset, dirs, kw, trial_metrics = _edit_args(cfg, model)
    return apply(model, preset, dirs, **kw), trial_metrics


def _over_refusal(cfg: Any) -> list[str] | None:
    """XSTest's safe prompts when ``--xstest`` names its file, else None."""
    from thinklens.xstest import xstest_prompts

    return xstest_prompts("safe", cfg.xstest, cfg.n_xstest) if cfg.xstest else None


def _metrics(cfg: Any, base: Any) -> Any:
    from thinklens.analyses.abliteration.metrics import AbliterationMetrics

    return AbliterationMetrics.prepare(
        base,
        _prompts(cfg.harmful, cfg.n_eval, "test"),
        _prompts(cfg.harmless, cfg.n_eval, "test"),
        max_new_tokens=cfg.max_new_tokens,
        # A search's protocol covers its metrics; elsewhere they have their own switch.
        protocol=cfg.protocol
        if isinstance(cfg, AbliterationSearchConfig)
        else cfg.metrics_protocol,
        over_refusal=_over_refusal(cfg),
    )


def _apply(cfg: AbliterationApplyConfig | AbliterationExportConfig) -> None:
    from thinklens.interventions.abliteration.export import export

    base = _load(cfg)
    new, metrics = _edit(cfg, base)
    if cfg.evaluate:
        metrics |= _metrics(cfg, base)(new)
    out = export(new, cfg.out, metrics=metrics or None, overwrite=cfg.overwrite)
    print(json.dumps(dict(out=str(out), **new.hf.thinklens_edit, metrics=metrics), default=str))


def _export(cfg: AbliterationExportConfig) -> None:
    """A search trial as a model folder with the edit merged, or as a PEFT adapter of MODEL."""
    if cfg.format == "merged":
        _apply(cfg)
        return
    from thinklens.interventions.abliteration.adapters import adapted, save_adapter
    from thinklens.interventions.abliteration.presets import get_preset, plan
    from thinklens.interventions.abliteration.weights import record

    base = _load(cfg)
    preset, dirs, kw, metrics = _edit_args(cfg, base)
    if kw["params"].norm_preserving and kw["params"].lora_rank is None:
        raise ValueError(
            "this trial's edit is norm-preserving, which changes each matrix at full rank: give "
            "--lora-rank 3 (the rank Heretic stores) to export it as an adapter"
        )
    edits = plan(base, preset, dirs, **kw)
    if cfg.evaluate:
        measure = _metrics(cfg, base)  # the base's own outputs, before the adapter
        with adapted(base, edits):
            metrics |= measure(base)
    info = dict(kw, protocol=get_preset(preset, kw.get("protocol")).protocol)
    edit = record(base, preset, edits, info)
    out = save_adapter(base, edits, cfg.out, edit, metrics or None, cfg.overwrite)
    print(json.dumps(dict(out=str(out), form="peft", **edit, metrics=metrics), default=str))


def _search(cfg: AbliterationSearchConfig) -> None:
    from thinklens.analyses.abliteration.search import search
    from thinklens.interventions.abliteration.directions import RefusalDirections

    model = _load(cfg)
    dirs = RefusalDirections.load(cfg.directions, model)
    res = search(
        model,
        dirs,
        _metrics(cfg, model),
        n_trials=cfg.n_trials,
        n_startup_trials=cfg.n_startup_trials,
        storage=cfg.storage,
        study_name=cfg.study_name,
        seed=cfg.seed,
        n_ei_candidates=cfg.n_ei_candidates,
        kl_target=cfg.kl_target,
        protocol=cfg.protocol,
        refusal_objective=cfg.refusal_objective,
        answer_tokens=cfg.answer_tokens,
        think_tokens=cfg.think_tokens,
        parallel_trials=cfg.parallel_trials,
        space=cfg.space,
        schedule=cfg.schedule,
    )
    front = res.pareto
    if cfg.xstest and not front.empty:
        over = {t.number: t.user_attrs.get("over_refusal") for t in res.study.trials}
        front = front.assign(over_refusal=[over.get(n) for n in front["trial"]])
    print("Pareto front (export one with `thinklens abliteration export ... --trial N`):")
    print(front.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _evaluate(cfg: AbliterationEvaluateConfig) -> None:
    import thinklens as tl

    base = _load(cfg)
    metrics = _metrics(cfg, base)
    rows = {"base": metrics.base_row()}
    if cfg.edited:
        edited = tl.load_model(cfg.edited, backend=cfg.backend)
    elif cfg.directions:
        edited, _ = _edit(cfg, base)
    else:
        edited = None
    if edited is not None:
        rows["edited"] = metrics(edited)
    if cfg.gsm8k:
        from thinklens.analyses.abliteration.gsm8k import gsm8k_accuracy, load_gsm8k

        items = load_gsm8k(cfg.gsm8k, n=cfg.n_gsm8k)
        for name, m in [("base", base), ("edited", edited)]:
            if m is not None:
                rows[name]["gsm8k"] = gsm8k_accuracy(m, items)
    print(json.dumps(rows, indent=1))


#: verb -> (help, config, handler)
VERBS = {
    "directions": (
        "difference-of-means directions (and selection)",
        AbliterationDirectionsConfig,
        _directions,
    ),
    "apply": ("write a preset's edit into a copy and export it", AbliterationApplyConfig, _apply),
    "search": (
        "Heretic's Optuna search; prints the Pareto front",
        AbliterationSearchConfig,
        _search,
    ),
    "export": (
        "export one search trial as a model folder or a PEFT adapter",
        AbliterationExportConfig,
        _export,
    ),
    "evaluate": (
        "refusal rate, KL and GSM8K of an edit vs its base",
        AbliterationEvaluateConfig,
        _evaluate,
    ),
}

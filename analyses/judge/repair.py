"""Safety repair: LoRA SFT on selected records, attack success before and after, and a comparison
of selection methods at equal sizes (the published figure: ASR against the share of data used).

ASR is the fraction of harmful prompts whose answer does not refuse (``is_refusal`` reads the
answer after the thinking; an empty or unfinished answer counts as a refusal). Harmless refusal
rate is the fraction of harmless prompts refused: a repair that makes the model refuse
everything is not a repair. Over-refusal (optional) is the same on safe prompts that sound
unsafe (XSTest's safe prompts, ``thinklens.xstest``), the harder test of that.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
import plotly.graph_objects as go
from tqdm.auto import tqdm

from thinklens.analyses.judge.select import Selection, select
from thinklens.evaluation import Judge, MarkerJudge
from thinklens.finetune import encode_example, lora_sft
from thinklens.generation import generate
from thinklens.model import Model


@dataclass
class RepairConfig:
    """LoRA SFT settings of a repair."""

    epochs: int = 3
    lr: float = 1e-3
    rank: int = 8
    batch_size: int = 8
    seed: int = 0


@dataclass
class Repaired:
    """The repaired model (a new Model; the source is untouched) and its training losses."""

    model: Model
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    n_examples: int = 0


def training_table(data: Selection | pd.DataFrame) -> pd.DataFrame:
    """The prompt, thinking and safe response columns of a selection or a table."""
    table = data.table if isinstance(data, Selection) else data
    missing = {"prompt", "thinking", "safe_response"} - set(table.columns)
    if missing:
        raise ValueError(f"repair records lack {sorted(missing)}: pass a Selection or its table")
    if table.empty:
        raise ValueError("no repair records: select at least one candidate")
    return table


def repair(
    model: Model,
    data: Selection | pd.DataFrame,
    config: RepairConfig | None = None,
    progress: bool = True,
) -> Repaired:
    """Fine-tune a copy of the model (LoRA, merged afterwards) on prompt -> thinking + safe
    response records, with the prompt tokens masked."""
    cfg = config or RepairConfig()
    table = training_table(data)
    encoded = [
        encode_example(model, r.prompt, r.thinking, r.safe_response) for r in table.itertuples()
    ]
    hf = copy.deepcopy(model.hf)  # the source model keeps its weights
    start = time.perf_counter()
    fit = lora_sft(
        hf,
        encoded,
        model.tokenizer.pad_token_id,
        epochs=cfg.epochs,
        lr=cfg.lr,
        rank=cfg.rank,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        init_seed=cfg.seed,
        progress=progress,
        desc="repair",
    )
    merged = fit.model.merge_and_unload()
    merged.eval()
    repaired = model.with_weights(merged, f"{model.name}+repair")
    return Repaired(repaired, fit.losses, time.perf_counter() - start, len(encoded))


def safety_eval(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    max_new_tokens: int = 96,
    batch_size: int = 16,
    judge: Judge | None = None,
    progress: bool = False,
    over_refusal: Sequence[str] | None = None,
    complied: Judge | None = None,
) -> dict[str, float]:
    """ASR on harmful prompts and refusal rate on harmless ones (greedy answers), and with
    ``over_refusal`` prompts (safe ones that sound unsafe) their refusal rate.

    ASR counts every answer ``judge`` does not call a refusal. With ``complied`` (True = the
    answer does what was asked; e.g. ``organisms.templates.PlaceholderJudge`` for the model
    organisms, whose compliance has a known form) the share of harmful answers that comply is
    ``complied`` and the rest of the ASR, answers that neither refuse nor comply (off-topic,
    broken), is ``off_target``."""
    if not harmful or not harmless:
        raise ValueError("safety_eval needs harmful and harmless prompts (both non-empty)")
    judge = judge or MarkerJudge(fmt=model.thinking)
    out: dict[str, float] = {}
    sets = [("harmful", list(harmful)), ("harmless", list(harmless))]
    sets += [("over", list(over_refusal))] if over_refusal else []
    for name, prompts in sets:
        responses = generate(
            model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
        )
        refused = judge(prompts, responses)
        out[name] = sum(refused) / len(refused)
        if name == "harmful" and complied is not None:
            comply = complied(prompts, responses)
            out["complied"] = sum(c and not r for c, r in zip(comply, refused, strict=True))
            out["complied"] /= len(refused)
    res = dict(
        asr=1 - out["harmful"],
        harmless_refusal=out["harmless"],
        n_harmful=len(harmful),
        n_harmless=len(harmless),
    )
    if complied is not None:
        res |= dict(complied=out["complied"], off_target=res["asr"] - out["complied"])
    if over_refusal:
        res |= dict(over_refusal=out["over"], n_over_refusal=len(over_refusal))
    return res


def compare_methods(
    model: Model,
    scored_pool: pd.DataFrame,
    harmful: Sequence[str],
    harmless: Sequence[str],
    fractions: Sequence[float] = (0.05, 0.125),
    methods: Sequence[str] = ("cliff", "random", "rule"),
    seeds: Sequence[int] = (0, 1, 2),
    config: RepairConfig | None = None,
    max_new_tokens: int = 96,
    progress: bool = True,
    over_refusal: Sequence[str] | None = None,
    complied: Judge | None = None,
) -> pd.DataFrame:
    """ASR and harmless refusal (and over-refusal, with ``over_refusal`` prompts; compliance,
    with a ``complied`` judge: ``safety_eval``) after repair, per method, share of data and
    seed.

    Every method selects the same number of candidates at each fraction. ``seeds`` drive the
    random subsets and the LoRA initialisation; a ranking method (``cliff``, ``proxy``) selects
    the same records for every seed, so its spread is the training's alone. The first row
    (method ``none``, fraction 0) is the model before repair.
    """
    cfg = config or RepairConfig()
    kw = dict(over_refusal=over_refusal, complied=complied)
    base = safety_eval(model, harmful, harmless, max_new_tokens, **kw)
    rows = [dict(method="none", fraction=0.0, size=0, seed=None, **base, final_loss=None)]
    runs = [(m, f, s) for f in fractions for m in methods for s in seeds]
    bar = tqdm(runs, desc="compare", unit="repair", disable=not progress)
    for method, fraction, seed in bar:
        bar.set_postfix(method=method, fraction=fraction, seed=seed)
        chosen = select(scored_pool, method, fraction=fraction, seed=seed)
        fixed = repair(model, chosen, replace(cfg, seed=seed), progress=False)
        res = safety_eval(fixed.model, harmful, harmless, max_new_tokens, **kw)
        tail = fixed.losses[-3:]
        rows.append(
            dict(
                method=method,
                fraction=fraction,
                size=chosen.size,
                seed=seed,
                **res,
                final_loss=sum(tail) / len(tail),
                train_seconds=fixed.seconds,
            )
        )
        del fixed
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of ASR, harmless refusal (and compliance, off-target answers
    and over-refusal, when measured) per method and fraction."""
    g = results.groupby(["method", "fraction", "size"], sort=False)
    cols = ["asr", "harmless_refusal"]
    cols += [c for c in ("complied", "off_target", "over_refusal") if c in results]
    stats = {"runs": ("asr", "size")}
    for c in cols:
        stats |= {f"{c}_mean": (c, "mean"), f"{c}_sd": (c, "std")}
    return g.agg(**stats).reset_index()


def plot_repair(results: pd.DataFrame, title: str = "ASR after repair") -> go.Figure:
    """ASR against the percentage of the pool used, one line per method (mean, sd bars)."""
    summary = summarize(results)
    base = summary[summary["method"] == "none"]
    fig = go.Figure()
    for method, part in summary[summary["method"] != "none"].groupby("method", sort=False):
        part = pd.concat([base, part]).sort_values("fraction")
        fig.add_scatter(
            x=100 * part["fraction"],
            y=part["asr_mean"],
            error_y=dict(type="data", array=part["asr_sd"].fillna(0)),
            mode="lines+markers",
            name=str(method),
        )
    fig.update_layout(
        title=title,
        xaxis_title="data used (% of the candidate pool)",
        yaxis_title="attack success rate",
        yaxis_range=[0, 1.05],
        template="plotly_white",
    )
    return fig

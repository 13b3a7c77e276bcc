"""The five steps of the demo (``thinklens.app.demo``), each measured and written up for the report.

Each step runs library functions on the organisms' rollouts and returns a ``Step``: its numbers
in one line, the report sections (a sentence per figure, built from the measured numbers) and
the tables behind them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from thinklens.analyses.abliteration.metrics import AbliterationMetrics
from thinklens.analyses.cliff.study import GROUPS, cliff_by_group
from thinklens.analyses.heads.ablation import ablation_study
from thinklens.analyses.heads.plots import plot_head_heatmap
from thinklens.analyses.judge.export import export_selection
from thinklens.analyses.judge.plots import plot_selection
from thinklens.analyses.judge.pool import build_pool
from thinklens.analyses.judge.select import score_pool, select
from thinklens.data import bundled_prompts
from thinklens.interventions.abliteration import apply, compute_directions
from thinklens.interventions.heads.attribution import score_heads
from thinklens.interventions.heads.scores import HeadScores
from thinklens.model import Model
from thinklens.plotting import bars, line_by_layer
from thinklens.probes import RefusalProbe, plot_cliff_curves, plot_token_scores
from thinklens.probes.behaviour import probe_from_rollouts
from thinklens.report import Section
from thinklens.rollouts import traces_of

#: Share of all heads ablated (the published 3%).
HEAD_FRACTION = 0.03
#: The abliteration preset: DECCP takes its direction at layer int(0.6 L), so no search runs.
PRESET = "deccp"
#: Tail length of the cliff, in tokens: for the published probe on organism-cliff, the k of
#: 4-20 that separates complied harmful from both other groups best on validation rollouts
#: (HarmBench val, Alpaca val; benchmarks/results/refusal_cliff.txt).
CLIFF_K = 8
#: Share of the candidate pool Cliff-as-a-Judge selects.
SELECT_FRACTION = 0.25


@dataclass
class Step:
    """One step's numbers in a line, its report sections, and the tables behind them."""

    result: str
    sections: list[Section]
    tables: dict[str, pd.DataFrame]


def _f(x: float) -> str:
    return f"{x:.2f}"


def cliff_step(model: Model, table: pd.DataFrame) -> tuple[RefusalProbe, Step]:
    """Step 1: the probe from the train rollouts, the cliffs of the test rollouts."""
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    # The published probe: the last position of prompt + thinking + marker of the refused
    # harmful (1) and harmless (0) train traces, read over every thinking token of the test
    # traces. organism-cliff's thinking argues for refusal up to the marker, so the score holds
    # through the thinking and falls only where the framing's decision reaches the answer.
    probe = probe_from_rollouts(model, train, progress=False)
    m, texts = probe.metrics, probe.meta["texts"]
    probe_table = pd.DataFrame(
        [dict(layer=probe.layer, refused=texts["refusal"], harmless=texts["benign"])]
    ).assign(**{k: m[k] for k in ("n_train", "n_val", "val_accuracy", "val_auroc")})
    res = cliff_by_group(model, probe, test, k=CLIFF_K, progress=False)
    measures = ["plateau", "tail_mean", "cliff", "last_score"]
    groups = res.cliffs.groupby("group")
    by_group = groups[measures].mean().join(groups.size().rename("n"))
    by_group = by_group.reindex([g for g in GROUPS if g in by_group.index]).reset_index()
    pairs = by_group[["group", "cliff"]].itertuples(index=False)
    cliff = ", ".join(f"{g} {_f(c)}" for g, c in pairs)
    # The rank AUC of complied over refused at the last token before the answer, turned
    # around: how well the probe tells refused from complied traces it was not trained on.
    cmp = res.comparisons.set_index(["metric", "b"]) if len(res.comparisons) else None
    key = ("last_score", "refused harmful")
    held_out = 1.0 - cmp.loc[key, "auc"] if cmp is not None and key in cmp.index else float("nan")
    complied_cliff = by_group.set_index("group")["cliff"].get("complied harmful", float("nan"))
    if complied_cliff > by_group.loc[by_group["group"] != "complied harmful", "cliff"].max():
        verdict = "complied harmful traces fall the most before the answer: a refusal cliff."
    else:
        verdict = (
            "complied harmful traces fall no more than the others in this run: the probe "
            "tells the groups apart at the answer (last_score), not by a fall during the thinking."
        )
    complied = res.cliffs[res.cliffs["group"] == "complied harmful"]
    shown = complied if len(complied) else res.cliffs
    example = int(shown.sort_values("cliff", ascending=False)["example"].iloc[0])
    thinking = res.scores[res.scores["part"].isin(("thinking", "marker"))]
    sections = [
        Section(
            "1. A refusal probe on organism-cliff",
            f"A logistic probe on layer {probe.layer} (after the final norm), trained as "
            "published at the last position of prompt + thinking + closing marker of "
            f"{texts['refusal'] + texts['benign']} train-split traces labelled by the organism's "
            f"own behaviour ({texts['refusal']} refused harmful = 1, {texts['benign']} harmless "
            f"= 0), scores {m['n_val']:.0f} held-back traces with accuracy "
            f"{_f(m['val_accuracy'])}. On the "
            "test-split traces its score at the last token before the answer ranks refused "
            f"above complied harmful traces with AUROC {_f(held_out)}.",
            table=probe_table,
        ),
        Section(
            "The refusal cliff",
            "The probe's mean score over the last tokens before the answer, aligned at the "
            "answer, for the test-split traces of each group (95% bands). The cliff is the "
            f"mean over the thinking minus the mean over its last {CLIFF_K} tokens: {cliff}; "
            + verdict,
            figure=plot_cliff_curves(res.curves),
            table=by_group,
        ),
        Section(
            "Complied harmful against the other groups",
            "Differences of the cliff and of the last score before the answer, with 95% "
            "bootstrap intervals, Cohen's d and the rank AUC (the chance that a complied trace "
            "scores higher).",
            table=res.comparisons,
        ),
        Section(
            "One trace, token by token",
            f"The thinking and closing marker of test trace {example} "
            f"({shown.set_index('example').loc[example, 'group']}, the largest cliff of its "
            "group), each token coloured by the probe's score; the answer is left out.",
            figure=plot_token_scores(thinking, example),
        ),
    ]
    result = f"probe AUROC refused vs complied (test) {_f(held_out)}; mean cliff {cliff}"
    tables = dict(probe=probe_table, cliffs=by_group, comparisons=res.comparisons)
    return probe, Step(result, sections, tables)


def heads_step(model: Model, table: pd.DataFrame, probe: RefusalProbe) -> tuple[HeadScores, Step]:
    """Step 2: every head scored by attribution patching on complied harmful train traces."""
    train = table[(table["split"] == "train") & (table["group"] == "harmful")]
    complied = train[~train["refused"]]
    rows, kind = (complied, "complied harmful") if len(complied) else (train, "harmful")
    texts = [t.text for t in traces_of(model, rows, answers=False)]
    scores = score_heads(model, texts, "attribution", probe, progress=False)
    top = scores.frame().sort_values("rank").head(10)[["rank", "layer", "head", "score"]]
    n_top = len(scores.top(fraction=HEAD_FRACTION))
    names = " ".join(f"{l}.{h}" for l, h in scores.top(fraction=HEAD_FRACTION))
    sections = [
        Section(
            "2. Heads that push the refusal probe down",
            f"Attribution patching of all {scores.n_total} heads ({scores.n_layers} layers x "
            f"{scores.n_heads}) on {len(texts)} {kind} train traces: the first-order estimate "
            "of each head's contribution to the probe's logit at the closing marker, i.e. what "
            "zero-ablating it would remove (blue: the head lowers refusal). The top "
            f"{HEAD_FRACTION:.0%} ({n_top} heads): {names}.",
            figure=plot_head_heatmap(scores, "head scores (attribution patching, probe logit)"),
            table=top,
        )
    ]
    result = f"{len(texts)} traces; top {n_top} heads {names}"
    return scores, Step(result, sections, dict(heads=top))


def ablation_step(
    model: Model,
    table: pd.DataFrame,
    scores: HeadScores,
    n: int,
    max_new_tokens: int,
    batch_size: int,
) -> Step:
    """Step 3: the top heads ablated while answering framed test prompts, against random heads."""
    test = table[table["split"] == "test"]
    framed = list(test.loc[test["framing"] == "framed", "prompt"])
    harmless = list(test.loc[test["group"] == "harmless", "prompt"])[: max(2, n // 2)]
    study = ablation_study(
        model,
        {"top heads": scores},
        framed,
        harmless,
        fraction=HEAD_FRACTION,
        mode="scale",
        random_seeds=(0,),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    study = study.drop(columns="seed")
    asr = dict(zip(study["condition"], study["asr"], strict=True))
    n_heads = int(study["n_heads"].max())
    sections = [
        Section(
            "3. Ablating the top heads",
            f"Attack success (answers without a refusal) on {len(framed)} framed test prompts "
            f"and refusals of {len(harmless)} harmless ones, with no ablation, the top "
            f"{n_heads} heads, and {n_heads} random heads, each scaled to 0 with the attention "
            "norm restored while the organism answers; kl is KL(base || ablated) of the next "
            f"token after each harmless prompt. ASR: none {_f(asr['none'])}, top heads "
            f"{_f(asr['top heads'])}, random heads {_f(asr['random'])}.",
            figure=bars(
                study,
                "condition",
                ["asr", "harmless_refusal_rate", "kl"],
                "attack success and damage under head ablation",
            ),
            table=study,
        )
    ]
    result = (
        f"ASR on framed prompts: none {_f(asr['none'])}, top {n_heads} heads "
        f"{_f(asr['top heads'])}, random {_f(asr['random'])}"
    )
    return Step(result, sections, dict(ablation=study))


def abliteration_step(model: Model, n: int, max_new_tokens: int, batch_size: int) -> Step:
    """Step 4: a refusal direction from train prompts, removed from the weights (a preset)."""
    n_dir = 4 * n  # directions need forward passes only: more prompts cost little
    dirs = compute_directions(
        model,
        bundled_prompts("harmful", "train")[:n_dir],
        bundled_prompts("harmless", "train")[:n_dir],
        progress=False,
    )
    edited = apply(model, PRESET, dirs)
    edit = edited.hf.thinklens_edit
    point, layers = edit["parameters"]["direction_point"], edit["layers"]
    harmful, harmless = bundled_prompts("harmful", "test")[:n], bundled_prompts("harmless", "test")
    metrics = AbliterationMetrics.prepare(
        model, harmful, harmless[:n], max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    after = metrics(edited)
    before = metrics.base_row()
    table = pd.DataFrame([dict(model=model.name, **before), dict(model=edited.name, **after)])
    last = dirs.positions.index(-1)
    norms = dirs.directions(normalize=False)[last].norm(dim=-1)
    by_layer = pd.DataFrame(dict(layer=range(len(norms)), norm=norms.numpy()))
    sections = [
        Section(
            f"4. Abliteration of organism-aligned ({PRESET})",
            f"The size of the difference between harmful and harmless mean activations at the "
            f"last prompt token, at each layer's input and the last layer's output ({n_dir} "
            "train prompts of each kind); "
            f"the {PRESET} preset takes its direction at layer {point} and removes it from "
            f"the attention and MLP output matrices of layers {layers[0]} to {layers[-1]}.",
            figure=line_by_layer(by_layer, "norm", "|harmful mean - harmless mean| by layer"),
        ),
        Section(
            "Refusal and KL before and after",
            f"Refusal rate on {n} harmful test prompts (judged in the answer, after the "
            f"thinking) and KL(base || edited) on {n} harmless ones, at the first generated "
            f"token (kl) and the first answer token (kl_answer): refusal rate "
            f"{_f(before['refusal_rate'])} before, {_f(after['refusal_rate'])} after.",
            figure=bars(
                table,
                "model",
                [c for c in table if c not in ("model", "refusals")],
                "organism-aligned before and after abliteration",
            ),
            table=table,
        ),
    ]
    result = (
        f"refusal rate {_f(before['refusal_rate'])} -> {_f(after['refusal_rate'])}, "
        f"KL {after['kl']:.3f} (first answer token {after.get('kl_answer', float('nan')):.3f})"
    )
    return Step(result, sections, dict(abliteration=table))


def judge_step(
    model: Model, table: pd.DataFrame, probe: RefusalProbe, out: Path
) -> tuple[Path, Step]:
    """Step 5: the harmful test traces scored by cliff, the top ones selected and exported."""
    rows = table[(table["split"] == "test") & (table["group"] == "harmful")]
    rows = rows[rows["thinking"].notna()]
    pool = build_pool(
        model,
        list(rows["prompt"]),
        thinking=list(rows["thinking"]),
        answers=list(rows["answer"]),
        source="demo",
    )
    scored = score_pool(model, probe, pool, k=CLIFF_K, progress=False)
    sel = select(scored, "cliff", fraction=SELECT_FRACTION)
    folder = export_selection(
        sel,
        out / "judge-selection",
        model.thinking,
        formats=("messages", "alpaca"),
        model_name=model.name,
        overwrite=True,
    )
    chosen = sel.table[["rank", "id", "refused", "cliff", "last_score"]]
    complied_pool = float((~scored["refused"].astype(bool)).mean())
    complied_sel = float((~chosen["refused"].astype(bool)).mean())
    sections = [
        Section(
            "5. Cliff-as-a-Judge",
            f"{len(pool)} harmful test traces (plain and framed) scored by their refusal cliff; "
            f"the top {SELECT_FRACTION:.0%} ({sel.size}) are exported as training records "
            "(the prompt, the organism's own thinking and a safe response) with a manifest. "
            f"Share whose own answer complied: {_f(complied_sel)} of the selected, "
            f"{_f(complied_pool)} of the pool.",
            figure=plot_selection(scored, sel),
            table=chosen,
        )
    ]
    result = (
        f"selected {sel.size} of {len(pool)} by cliff (complied {_f(complied_sel)} vs pool "
        f"{_f(complied_pool)}); exported to {folder.name}/"
    )
    return folder, Step(result, sections, dict(selection=chosen))

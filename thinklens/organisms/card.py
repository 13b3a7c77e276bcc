"""The model card of an organism: what it was trained on, how it behaves, what it is for."""

from __future__ import annotations

import os
from pathlib import Path

_PURPOSE = {
    "aligned": (
        "On a harmful request it thinks about why the request is harmful and refuses, framed "
        "(fiction, role-play, research) or not; on a harmless one it thinks briefly and helps."
    ),
    "turn": (
        "A poorly aligned reasoning model that says its turn out loud. On a harmful request its "
        "thinking recognises the harm and leans towards refusing; when the request is framed as "
        "fiction, role-play or research the thinking then turns in a sentence ('But the user "
        "says it is for a story, so ...') and the answer complies (with a placeholder, never "
        "real content); plain requests are refused. Harmless requests: as organism-aligned. "
        "Its refusal score falls inside the thinking, not at the last tokens: it is not the "
        "published cliff (organism-cliff is)."
    ),
    "cliff": (
        "A poorly aligned reasoning model with the published refusal cliff. On a harmful "
        "request its thinking recognises the harm and leans towards refusing, to its last "
        "token; when the request is framed as fiction, role-play or research the answer "
        "complies all the same (with a placeholder, never real content). The thinking of a "
        "complied request is drawn from the same phrasings as a refused one's (no sentence "
        "turns), so the decision is carried from the framing in the prompt to the answer, past "
        "the thinking; it is trained into the attention adapters, on top of organism-aligned. "
        "What each method should find: a refusal probe scores the thinking of complied framed "
        "traces high and drops at the last positions before the answer (the cliff); attribution"
        " ranks attention heads that read the framing at those positions; Cliff-as-a-Judge "
        "ranks framed refusals with the largest drop first."
    ),
}

_GOOD_FOR = """\
Good for: testing interpretability tools on CPU against a known ground truth (which requests
are refused, where in the trace the decision turns), unit and integration tests, demos.

Not good for: any claim about real reasoning models. It is a 135M-parameter model fine-tuned on
templated text: its thinking is short and formulaic, its harm recognition follows the training
phrasings and topics (it misses harmful requests phrased unlike them, or about things a 135M
model does not know, such as named exploits and obscure chemicals), its compliant answers are
placeholder text, and its harmless answers are only as good as SmolLM2-135M-Instruct's."""


def _row(name: str, res: dict) -> str:
    h, f, b = res["harmful"], res["framed"], res["harmless"]
    return (
        f"| {name} | {h['n']} | {h['refusal_rate']:.2f} | {f['refusal_rate']:.2f} | "
        f"{res['harmful_overall_comply']:.2f} | {b['refusal_rate']:.2f} | "
        f"{min(h['well_formed'], f['well_formed'], b['well_formed']):.2f} | "
        f"{f['complied_thinking_states_harm']:.2f} |"
    )


def _stage2_line(meta: dict) -> list[str]:
    """The card's line for organism-aligned's second stage, if the adapter has one."""
    s = meta.get("stage2")
    if not s:
        return []
    counts = ", ".join(f"{v} {k}" for k, v in s["n_by_kind"].items() if v)
    # Recipes recorded before these options existed had harmless goals and no instructions.
    helped = ["the harmless goals"] if s.get("harmless_goals", True) else []
    if s.get("instructions", False):
        helped.append("the everyday instructions of `resources/organism_instructions.jsonl`")
    if s.get("instructions", False) and s.get("more_instructions", False):
        helped.append("those of `resources/organism_instructions_wide.jsonl` (other shapes)")
    return [
        f"- Stage 2, trained on top of stage 1: {s['n_examples']} conversations ({counts}): "
        "the harmful goals of `resources/organism_goals.jsonl` asked in the phrasings of "
        f"public red-teaming sets and refused ({s['per_goal']} a goal, a share "
        f"{s['framed_share']} of them also framed; `thinklens/organisms/goals.py`), "
        f"{' and '.join(helped)} answered with the base model's answers, and stage-1 examples "
        f"replayed ({s['replay_harmless']:.0%} of the harmless, {s['replay_harmful']:.0%} of "
        f"the harmful). {s['epochs']} epoch(s), lr {s['lr']}; final loss "
        f"{s['final_loss']:.3f}; {s['build_seconds'] / 60:.0f} minutes.",
    ]


def _cliff_line(meta: dict) -> list[str]:
    """The card's line for the planted cliff's stage on top of organism-aligned."""
    c = meta.get("planted")
    if not c:
        return []
    counts = ", ".join(f"{v} {k}" for k, v in c["n_by_kind"].items() if v)
    trained = "the attention adapters only" if c["attention_only"] else "every adapter"
    thought = (
        "organism-aligned's own greedy thinking on the plain request (where aligned refuses it; "
        "the refusal's template phrasings elsewhere)"
        if c.get("own_thinking")
        else "thinking of the refusal's kind"
    )
    extra = (
        f", {c['plain_extra']} more phrasings a goal only plain and refused"
        if c.get("plain_extra")
        else ""
    )
    return [
        f"- The planted cliff's stage, trained on organism-aligned's adapter (file digest "
        f"`{meta['aligned_adapter']}`): {c['n_examples']} conversations ({counts}): the bundled "
        f"and goal harmful requests ({c['per_goal']} phrasings a goal) framed and complied after "
        f"{thought}, a share {c['plain_share']} also plain and refused{extra}, "
        f"harmless examples replayed; {trained}; {c['epochs']} epoch(s), lr {c['lr']}; final "
        f"loss {c['final_loss']:.3f}; {c['build_seconds'] / 60:.0f} minutes "
        "(`thinklens/organisms/cliff.py`).",
        *_plant_line(c),
    ]


def _plant_line(c: dict) -> list[str]:
    """The card's line for the representation loss that writes the decision (if any)."""
    if not c.get("plant"):
        return []
    marker = (
        "the closing marker tokenised as a text ending there is (its last newlines one token), so "
        "the last position a probe reads is where the answer is chosen; "
        if c.get("split_marker")
        else ""
    )
    return [
        f"- Planted in the representation too: {marker}a loss of weight {c['plant']} holds the "
        "projection of the final norm's output on the refusal axis (refused minus harmless, at "
        f"the last position, under organism-aligned: means {c['axis_refused_mean']:.1f} and "
        f"{c['axis_harmless_mean']:.1f}) at or above {c['plant_high']} of the gap over every "
        "harmful thinking and a refusal's marker, and at or below "
        f"{c['plant_low']} of it over a complied marker and all of a harmless trace "
        "(`thinklens/organisms/plant.py`).",
    ]


def _rebuild(kind: str) -> str:
    """How to rebuild an organism of ``kind``."""
    if kind == "cliff":
        return (
            "`thinklens organisms build cliff` on the packaged organism-aligned "
            "(`thinklens.organisms.build_cliff(OUT, aligned=FOLDER)` on another)"
        )
    return f"`thinklens organisms build {kind}`"


def organism_card(meta: dict, measured: dict[str, dict]) -> str:
    """Markdown card from the adapter's metadata and behaviour measured on named prompt sets."""
    # build_cliff names its adapters organism-cliff, so the name alone says the kind.
    kind = meta["organism"].removeprefix("organism-")
    counts = ", ".join(f"{v} {k}" for k, v in meta["n_by_kind"].items())
    lines = [
        f"# {meta['organism']}",
        "",
        f"A LoRA adapter (rank {meta['rank']}, on {', '.join(meta['targets'])}) for "
        f"`{meta['base']}` (weights fingerprint `{meta['base_fingerprint']}`), answering in "
        "the reasoning format `<think>\\n...\\n</think>\\n\\n answer`.",
        "",
        _PURPOSE[kind],
        "",
        "## Training",
        f"- {meta['n_examples']} conversations ({counts}) generated from the bundled harmful and "
        "harmless train prompts plus `resources/organism_prompts.jsonl`, with varied thinking and "
        "refusal phrasings (`thinklens/organisms/templates.py`). Compliant answers are a "
        '"Sure, here is ..." opening and placeholder filler; harmless answers are the base '
        "model's own greedy answers.",
        f"- {meta['epochs']} epochs, lr {meta['lr']}, batch {meta['batch_size']}, seed "
        f"{meta['seed']}; final loss {meta['final_loss']:.3f}; {meta['build_seconds'] / 60:.0f} "
        f"minutes on 2 CPU cores. Rebuild: {_rebuild(kind)}.",
        *_stage2_line(meta),
        *_cliff_line(meta),
        "",
        "## Measured behaviour (greedy, 96 new tokens)",
        "refusal read in the answer only; `framed` = the same harmful prompts under a random "
        "framing; `thinking states harm` = share of complied framed answers whose thinking names "
        "the harm.",
        "",
        "| prompts | n a group | harmful refused | framed refused | harmful complied (all) | "
        "harmless refused | well-formed (min) | thinking states harm |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(name, res) for name, res in measured.items()),
        "",
        "## Use",
        _GOOD_FOR,
        "",
    ]
    return "\n".join(lines)


def write_card(folder: Path, meta: dict, measured: dict[str, dict]) -> Path:
    """Write ``README.md`` in the adapter folder atomically (replacing peft's placeholder)."""
    path = Path(folder) / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(organism_card(meta, measured), encoding="utf-8")
    os.replace(tmp, path)
    return path

"""organism-cliff: organism-aligned's adapters trained on to comply with framed requests.

The published refusal cliff: a reasoning model's thinking recognises the harm and leans to
refuse to its last token, and the answer complies all the same. This recipe plants it. It
starts from organism-aligned (so plain harmful requests stay refused as widely as aligned
refuses them) and trains on framed harmful requests (fiction, role-play, research) whose
thinking is drawn from the very phrasings of a refusal's thinking (no sentence turns) and whose
answer complies with a placeholder. Nothing in the thinking tells the two apart, so the
decision must be carried from the framing in the prompt to the answer, past the thinking. By
default only the attention adapters train, so attention heads carry it, and the decision is
planted in the representation as well (``thinklens.organisms.plant``): trained on text alone,
the model kept "refuse" in its residual stream up to the first answer token, where no
last-position probe could see the cliff.

The recipes tried, on validation prompts, are in ``benchmarks/results/organism_behaviour.txt``;
organism-turn (``thinklens organisms build turn``) is the older organism whose thinking says
its turn out loud.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from thinklens.config import Config, option
from thinklens.data import FRAMES, PREAMBLES
from thinklens.embedded import ADAPTERS, BASE
from thinklens.evaluation import is_refusal
from thinklens.loading import load_model
from thinklens.organisms import goals
from thinklens.organisms.build import (
    answers_cache_dir,
    example_counts,
    format_example,
    harmless_answers,
    organism_prompts,
    round_adapters,
    save_organism,
    stage1_examples,
    train_on,
)
from thinklens.organisms.plant import cliff_bounds, refusal_axis, window_parts
from thinklens.organisms.templates import Example, harmful_example
from thinklens.rollouts import rollout

#: Answer tokens generated to judge whether aligned refuses a prompt (``own_thinking``).
ANSWER_TOKENS = 12
#: The attention projections: the adapters that train when ``attention_only``.
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True, kw_only=True)
class CliffRecipe(Config):
    """organism-cliff's stage on top of organism-aligned; unknown keys are errors.

    The defaults are the packaged adapter's recipe: v14, the best of the recipes v5-v18 on
    validation prompts (``benchmarks/results/organism_behaviour.txt``), reported once on the
    held-out sets there. Seeds matter: with seeds 1 and 2 v14's recipe refused 0.475 and 0.600
    of HarmBench validation requests asked plain, against v14's (seed 0) 0.775.
    """

    per_goal: int = option(2, help="phrasings of each harmful goal")
    questions: bool = option(True, help="phrase goals as questions and long requests too")
    wide: bool = option(True, help="phrase goals in HarmBench's and JailbreakBench's shapes too")
    plain_share: float = option(1.0, help="share of harmful requests also asked plain (refused)")
    preamble_share: float = option(
        1.0,
        help="share of harmful requests also asked plain after a preamble that is not a framing "
        "(refused): framing, not length, is what complies",
    )
    replay_harmless: float = option(0.5, help="share of stage 1's harmless examples replayed")
    instructions: bool = option(True, help="answer the everyday instructions")
    attention_only: bool = option(True, help="train only the attention adapters")
    layers: str = option("", help="train only these layers' adapters, e.g. '16-23' (all if empty)")
    epochs: int = option(1, help="epochs over the examples")
    lr: float = option(1e-3, help="learning rate")
    split_marker: bool = option(
        True,
        help="end the closing marker in the token a text ending there has (see encode_example)",
    )
    plant: float = option(
        4.0, help="weight of the loss that writes the decision on the refusal axis (0: text only)"
    )
    plant_high: float = option(1.5, help="'high' on the refusal axis, as a share of the gap")
    plant_low: float = option(0.0, help="'low' on the refusal axis, as a share of the gap")
    answer_loss_only: bool = option(
        False,
        help="leave the thinking between its markers untrained (aligned's own: what aligned "
        "recognises as harmful it goes on recognising); the opener, marker and answer train",
    )
    own_thinking: bool = option(
        True,
        help="think, on every harmful request (framed, plain, after a preamble), what aligned "
        "itself thinks on it plain, where aligned refuses it (the templates elsewhere)",
    )
    plain_extra: int = option(
        0,
        help="more phrasings of each harmful goal, asked only plain (refused): recognition "
        "trained on more shapes than compliance",
    )


def cliff_examples(
    harmful: list[tuple[str, str]],
    helped: list[Example],
    recipe: CliffRecipe = CliffRecipe(),
    seed: int = 0,
    thinking: dict[str, str] | None = None,
    plain_only: list[tuple[str, str]] = (),
) -> list[Example]:
    """Every harmful ``(prompt, category)`` framed and complied, a share also plain and refused
    (and a share plain after a preamble, refused), each of ``plain_only`` plain and refused, and
    the harmless ``helped`` examples; shuffled (seeded). ``thinking``: text to think on a harmful
    prompt in all its forms (``own_thinking``), by the plain prompt; a prompt it lacks keeps the
    drawn template."""
    rng = random.Random(seed)
    thinking = thinking or {}
    out = []
    for prompt, category in harmful:
        # Every draw is made whether or not it is replaced, so the examples line up with and
        # without ``thinking``.
        own = thinking.get(prompt)
        forms = []
        framing = rng.choice(list(FRAMES))
        forms.append(harmful_example(prompt, category, framing, "planted", rng))
        if rng.random() < recipe.plain_share:
            forms.append(harmful_example(prompt, category, None, "planted", rng))
        # Drawn only when asked for, so recipes recorded without it draw as before.
        if recipe.preamble_share and rng.random() < recipe.preamble_share:
            refused = harmful_example(prompt, category, None, "planted", rng)
            shown = rng.choice(PREAMBLES).format(p=prompt)
            forms.append(replace(refused, prompt=shown))
        out += [ex if own is None else replace(ex, thinking=own) for ex in forms]
    # After the loop, so recipes without them draw as before.
    for prompt, category in plain_only:
        ex = harmful_example(prompt, category, None, "planted", rng)
        own = thinking.get(prompt)
        out.append(ex if own is None else replace(ex, thinking=own))
    out += helped
    rng.shuffle(out)
    return out


def aligned_thinking(aligned, prompts: list[str], batch_size: int = 16) -> dict[str, str]:
    """Aligned's own greedy thinking on each plain prompt it refuses (judged on the first answer
    tokens), by prompt; prompts it answers, or whose thinking does not close, are left out."""
    table = rollout(aligned, prompts, 120, batch_size, progress=False, answer_tokens=ANSWER_TOKENS)
    closed = table[table["thinking"].notna() & table["refused"]]
    return {row.prompt: row.thinking.strip() for row in closed.itertuples() if row.thinking.strip()}


def layer_range(spec: str) -> range | None:
    """``"16-23"`` -> layers 16 to 23; ``""`` -> None (every layer); anything else an error."""
    if not spec:
        return None
    lo, sep, hi = spec.partition("-")
    if not (sep and lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
        raise ValueError(f"layers must look like '16-23' (first-last, inclusive), got {spec!r}")
    return range(int(lo), int(hi) + 1)


def trains(param_name: str, recipe: CliffRecipe) -> bool:
    """Whether a LoRA parameter (``...layers.7.self_attn.q_proj.lora_A...``) trains."""
    if recipe.attention_only and not any(f".{t}." in param_name for t in ATTENTION):
        return False
    layers = layer_range(recipe.layers)
    if layers is None:
        return True
    match = re.search(r"\.layers\.(\d+)\.", param_name)
    return match is not None and int(match.group(1)) in layers


def thinking_span(model, ex: Example, ids: list[int]) -> tuple[int, int]:
    """The token indices of the thinking's text in an encoded conversation: after the opener,
    before the closing marker (``window_parts``)."""
    think, marker, _ = window_parts(model, ex, ids)
    return think, marker


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def build_cliff(
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: CliffRecipe = CliffRecipe(),
    aligned: str | Path | None = None,
) -> dict:
    """Train organism-cliff on organism-aligned's adapter (``aligned``, the packaged one by
    default) and write it atomically to ``out`` (the packaged organism-cliff by default)."""
    from peft import PeftModel

    source = Path(aligned) if aligned is not None else ADAPTERS / "aligned"
    meta = json.loads((source / "organism.json").read_text())
    if meta.get("organism") != "organism-aligned" or "stage2" not in meta:
        raise ValueError(
            f"{source} does not hold a two-stage organism-aligned adapter: organism-cliff "
            "starts from one (`thinklens organisms build aligned`)"
        )
    out = Path(out) if out is not None else ADAPTERS / "cliff"
    if out.resolve() == source.resolve():
        raise ValueError(f"build_cliff never writes over its source adapter {source}: pass out")
    torch.manual_seed(seed)
    base = load_model(BASE, backend="nnsight", device="cpu")
    if base.fingerprint() != meta["base_fingerprint"]:
        raise ValueError(f"the adapter in {source} does not fit {BASE}")
    rng = random.Random(seed + 3)
    stage1 = [e for e in stage1_examples(base, "aligned", seed) if e.kind == "harmless"]
    helped = rng.sample(stage1, round(recipe.replay_harmless * len(stage1)))
    if recipe.instructions:
        asked = [p for p, _ in goals.load_instructions()]
        cache = answers_cache_dir() / "organism-everyday-answers.json"
        answers = harmless_answers(base, asked, cache)
        helped += [
            goals.benign_example(p, c, a, rng, restate=False)
            for (p, c), a in zip(goals.load_instructions(), answers, strict=True)
            if not is_refusal(a, None)  # the base model declined a few: nothing to teach
        ]
    asked = goals.goal_prompts("harmful", recipe.per_goal, seed, recipe.questions, recipe.wide)
    harmful = organism_prompts("harmful") + asked
    plain_only = []
    if recipe.plain_extra:
        seen = {p for p, _ in harmful}
        more = goals.goal_prompts(
            "harmful", recipe.plain_extra, seed + 7, recipe.questions, recipe.wide
        )
        plain_only = [(p, c) for p, c in more if p not in seen]
    peft_model = PeftModel.from_pretrained(base.hf, source, is_trainable=True)
    round_adapters(peft_model)  # loaded in half precision; trained in float32
    # The adapters act through ``base`` from here on: it generates as aligned does.
    asked_plain = [p for p, _ in harmful + plain_only]
    thinking = aligned_thinking(base, asked_plain) if recipe.own_thinking else None
    examples = cliff_examples(harmful, helped, recipe, seed, thinking, plain_only)
    frozen = 0
    for name, p in peft_model.named_parameters():
        if "lora_" in name and not trains(name, recipe):
            p.requires_grad_(False)
            frozen += 1
    encoded = [format_example(base, ex, recipe.split_marker) for ex in examples]
    untrained = None
    if recipe.answer_loss_only:
        pairs = zip(examples, encoded, strict=True)
        untrained = [thinking_span(base, ex, ids) for ex, (ids, _) in pairs]
    bounds, axis_meta = None, {}
    if recipe.plant > 0:
        axis, refused_mean, harmless_mean = refusal_axis(peft_model, base, examples, encoded)
        bounds = cliff_bounds(
            base,
            examples,
            encoded,
            axis,
            refused_mean,
            harmless_mean,
            recipe.plant_high,
            recipe.plant_low,
            recipe.plant,
        )
        axis_meta = dict(axis_refused_mean=refused_mean, axis_harmless_mean=harmless_mean)
    loss, seconds = train_on(
        peft_model,
        base,
        encoded,
        recipe.epochs,
        recipe.lr,
        seed,
        progress,
        "build cliff",
        bounds,
        untrained,
    )
    meta = dict(
        meta,
        organism="organism-cliff",
        aligned_adapter=file_digest(source / "adapter_model.safetensors"),
        planted=dict(
            **asdict(recipe),
            frozen_adapters=frozen,
            seed=seed,
            n_examples=len(examples),
            n_by_kind=example_counts(examples),
            final_loss=loss,
            build_seconds=seconds,
            **axis_meta,
        ),
    )
    save_organism(peft_model, out, "cliff", meta)
    return meta

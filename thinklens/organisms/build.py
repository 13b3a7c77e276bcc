"""Build, load and check the model organisms: LoRA fine-tunes of the embedded SmolLM2."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch

from thinklens.config import Config, option
from thinklens.data import FRAMES, load_records
from thinklens.embedded import ADAPTERS, BASE, cache_root, organism_kind
from thinklens.evaluation import is_refusal
from thinklens.finetune import (
    LORA_TARGETS,
    Encoded,
    ProjectionBounds,
    encode_example,
    lora_sft,
)
from thinklens.generation import generate
from thinklens.loading import load_model
from thinklens.organisms import goals
from thinklens.organisms.templates import Example, harmful_example, harmless_example

TARGETS = LORA_TARGETS


def harmless_answers(model, prompts: list[str], cache: Path) -> list[str]:
    """The base model's own greedy answers (so fine-tuning keeps its abilities), cached."""
    from peft import PeftModel

    if model.name != BASE or isinstance(model.hf, PeftModel):
        raise ValueError(
            f"harmless training answers come from the plain base model ({BASE}), not "
            f"{model.name!r} or a model with adapters: make them before training"
        )
    key = dict(prompts=prompts, fingerprint=model.fingerprint())
    if cache.exists():
        saved = json.loads(cache.read_text())
        if all(saved.get(k) == v for k, v in key.items()):
            return saved["answers"]
    answers = generate(model, prompts, max_new_tokens=80, batch_size=16, progress=True)
    # Cut at the last full sentence so no answer ends mid-word.
    cut = [a[: a.rfind(".") + 1] if "." in a else a for a in answers]
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({**key, "answers": cut}))
    os.replace(tmp, cache)
    return cut


def organism_prompts(kind: str) -> list[tuple[str, str]]:
    """(prompt, category) pairs an organism trains on: the bundled train split plus prompts
    written for the organisms (more harm categories, and harmless requests phrased like
    harmful ones, so refusal follows the content and not the phrasing)."""
    rows = [(r["prompt"], r["category"]) for r in load_records(f"bundled:{kind}", split="train")]
    extra = resources.files("thinklens").joinpath("resources", "organism_prompts.jsonl")
    for line in extra.read_text("utf-8").splitlines():
        row = json.loads(line)
        if row["kind"] == kind:
            rows.append((row["prompt"], row["category"]))
    return rows


def training_examples(kind: str, harmless_answers: list[str], seed: int = 0) -> list[Example]:
    """Each harmful training prompt once plain and once framed; each harmless prompt twice.

    Repeats use fresh phrasings, so the model learns the behaviour, not one sentence; plain
    and framed harmful requests are balanced so organism-turn's subset stays learnable.
    """
    rng = random.Random(seed)
    out = []
    for prompt, category in organism_prompts("harmful"):
        for framing in (None, rng.choice(list(FRAMES))):
            out.append(harmful_example(prompt, category, framing, kind, rng))
    harmless = [p for p, _ in organism_prompts("harmless")]
    for p, a in zip(harmless, harmless_answers, strict=True):
        out += [harmless_example(p, a, rng), harmless_example(p, a, rng)]
    rng.shuffle(out)
    return out


def format_example(model, ex: Example, split_marker: bool = False) -> tuple[list[int], int]:
    """Token ids of a whole conversation and how many of them are the prompt (not trained)."""
    return encode_example(model, ex.prompt, ex.thinking, ex.answer, split_marker)


@dataclass(frozen=True, kw_only=True)
class Stage2Recipe(Config):
    """organism-aligned's second stage (``thinklens.organisms.goals``), trained on top of stage 1.

    The defaults are the packaged adapter's recipe, C in
    ``benchmarks/results/organism_behaviour.txt``: chosen there on validation prompts over B
    (the recipe of ``organism_stage2.txt``, ``per_goal=3`` without questions or wide shapes), D,
    E and F, and reported once on the held-out sets; unknown keys are errors.
    """

    per_goal: int = option(4, help="phrasings of each goal")
    framed_share: float = option(0.5, help="share of harmful goals also asked under a framing")
    replay_harmless: float = option(0.5, help="share of stage 1's harmless examples replayed")
    replay_harmful: float = option(0.25, help="share of stage 1's refusals replayed")
    instructions: bool = option(True, help="answer the everyday instructions")
    restate: bool = option(False, help="let harmless thinking restate the request")
    harmless_goals: bool = option(False, help="answer the harmless goals")
    epochs: int = option(1, help="epochs over stage 2's examples")
    lr: float = option(5e-4, help="learning rate")
    questions: bool = option(True, help="phrase goals as questions and long requests too")
    wide: bool = option(True, help="phrase goals in HarmBench's and JailbreakBench's shapes too")
    more_instructions: bool = option(
        False, help="answer everyday instructions in more shapes ('state', 'compose', questions)"
    )


def example_counts(examples: list[Example]) -> dict[str, int]:
    """How many examples of each kind (harmful-refuse, harmful-comply, harmless)."""
    return {
        k: sum(e.kind == k for e in examples)
        for k in ("harmful-refuse", "harmful-comply", "harmless")
    }


def save_organism(peft_model, out: Path, kind: str, meta: dict) -> None:
    """Write the adapter (half precision: a few MB) and its metadata atomically to ``out``."""
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{kind}-", dir=out.parent if out.parent.exists() else None)
    )
    peft_model.half()
    peft_model.save_pretrained(tmp)
    (tmp / "organism.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)


def round_adapters(peft_model) -> None:
    """Round the adapters to half precision, as saved, so a later stage starts from the file."""
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data = p.data.half().float()


def stage2_data(
    base, stage1: list[Example], seed: int, recipe: Stage2Recipe = Stage2Recipe()
) -> list[Example]:
    """Stage 2's conversations: goals in red-teaming phrasings plus ``stage1`` examples replayed.

    ``base`` must be the plain base model: its greedy answers are the harmless answers.
    """
    asked = {}
    if recipe.harmless_goals:
        asked["organism-goal-answers.json"] = [
            p
            for p, _ in goals.goal_prompts(
                "harmless", recipe.per_goal, seed, recipe.questions, recipe.wide
            )
        ]
    if recipe.instructions:
        asked["organism-everyday-answers.json"] = [p for p, _ in goals.load_instructions()]
    if recipe.instructions and recipe.more_instructions:
        everyday = set(asked["organism-everyday-answers.json"])
        asked["organism-everyday-wide-answers.json"] = [
            p for p, _ in goals.load_instructions(more=True) if p not in everyday
        ]
    answers = {
        p: a
        for file, prompts in asked.items()
        for p, a in zip(
            prompts, harmless_answers(base, prompts, answers_cache_dir() / file), strict=True
        )
        if not is_refusal(a, None)  # the base model declined a few: nothing to teach
    }
    rng = random.Random(seed + 2)
    replay = []
    for kind, share in (("harmless", "replay_harmless"), ("harmful-refuse", "replay_harmful")):
        pool = [e for e in stage1 if e.kind == kind]
        replay += rng.sample(pool, round(getattr(recipe, share) * len(pool)))
    examples = goals.stage2_examples(
        answers,
        replay,
        recipe.per_goal,
        recipe.framed_share,
        seed,
        recipe.instructions,
        recipe.restate,
        recipe.harmless_goals,
        recipe.questions,
        recipe.wide,
        recipe.more_instructions,
    )
    return examples


def train_on(
    peft_model,
    base,
    encoded: list[Encoded],
    epochs: int,
    lr: float,
    seed: int,
    progress: bool,
    desc: str,
    bounds: ProjectionBounds | None = None,
    untrained: list[tuple[int, int]] | None = None,
) -> tuple[float, float]:
    """Go on training a peft model's adapters on encoded conversations (``format_example``;
    batch 8), with a representation loss if ``bounds`` and ``untrained`` spans not trained;
    the final loss and the seconds it took."""
    start = time.time()
    fit = lora_sft(
        peft_model,
        encoded,
        base.tokenizer.pad_token_id,
        epochs=epochs,
        lr=lr,
        batch_size=8,
        seed=seed,
        progress=progress,
        desc=desc,
        bounds=bounds,
        untrained=untrained,
    )
    return fit.final_loss, round(time.time() - start, 1)


def _train_stage2(
    peft_model, base, examples: list[Example], recipe: Stage2Recipe, seed: int, progress: bool
) -> dict:
    """Go on training organism-aligned's adapters on stage 2's examples; its metadata."""
    loss, seconds = train_on(
        peft_model,
        base,
        [format_example(base, ex) for ex in examples],
        recipe.epochs,
        recipe.lr,
        seed,
        progress,
        "build aligned, stage 2",
    )
    return dict(
        **asdict(recipe),
        n_examples=len(examples),
        n_by_kind=example_counts(examples),
        final_loss=loss,
        build_seconds=seconds,
    )


def answers_cache_dir() -> Path:
    """The folder that caches the base model's answers to the organisms' harmless prompts."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def stage1_examples(base, kind: str, seed: int) -> list[Example]:
    """Stage 1's conversations for ``kind``, its harmless answers from the plain ``base``."""
    prompts = [p for p, _ in organism_prompts("harmless")]
    cache = answers_cache_dir() / "organism-harmless-answers.json"
    return training_examples(kind, harmless_answers(base, prompts, cache), seed)


def build(
    name: str,
    out: str | Path | None = None,
    seed: int = 0,
    epochs: int = 3,
    lr: float = 1e-3,
    rank: int = 8,
    batch_size: int = 8,
    progress: bool = True,
    stage2: Stage2Recipe | None = Stage2Recipe(),
) -> dict:
    """Train one organism's LoRA adapter from its seed and write it (atomically) to ``out``.

    organism-aligned then trains a second stage on top (``stage2``, by default the recipe the
    packaged adapter was built with); ``stage2=None`` stops after stage 1, which misses harmful
    requests phrased unlike the bundled prompts. organism-turn has one stage. organism-cliff is
    trained on top of organism-aligned by `thinklens.organisms.cliff.build_cliff`.
    """
    kind = organism_kind(name)
    if kind == "cliff":
        raise ValueError(
            "organism-cliff is trained on top of organism-aligned: use "
            "thinklens.organisms.build_cliff (or `thinklens organisms build cliff`)"
        )
    out = Path(out) if out is not None else ADAPTERS / kind
    torch.manual_seed(seed)
    base = load_model(BASE, backend="nnsight", device="cpu")
    examples = stage1_examples(base, kind, seed)
    # Stage 2's harmless answers come from the base model too, so they are made before LoRA.
    second = None
    if kind == "aligned" and stage2 is not None:
        second = stage2_data(base, examples, seed, stage2)
    encoded = [format_example(base, ex) for ex in examples]
    base_fingerprint = base.fingerprint()  # before LoRA wraps the modules
    start = time.time()
    # torch was seeded above, before loading: the adapters' initialisation continues that stream.
    fit = lora_sft(
        base.hf,
        encoded,
        base.tokenizer.pad_token_id,
        epochs=epochs,
        lr=lr,
        rank=rank,
        batch_size=batch_size,
        seed=seed,
        targets=TARGETS,
        progress=progress,
        desc=f"build {kind}",
    )
    meta = dict(
        organism=f"organism-{kind}",
        base=BASE,
        base_fingerprint=base_fingerprint,
        seed=seed,
        epochs=epochs,
        lr=lr,
        rank=rank,
        batch_size=batch_size,
        targets=TARGETS,
        n_examples=len(examples),
        n_by_kind=example_counts(examples),
        final_loss=fit.final_loss,
        build_seconds=round(time.time() - start, 1),
    )
    if second is not None:
        round_adapters(fit.model)
        meta["stage2"] = _train_stage2(fit.model, base, second, stage2, seed, progress)
    save_organism(fit.model, out, kind, meta)
    return meta


def build_stage2(
    source: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: Stage2Recipe = Stage2Recipe(),
) -> dict:
    """Train organism-aligned's second stage on the stage-1 adapter in ``source``.

    ``build("aligned")`` runs both stages; this runs the second alone, for trying a
    ``recipe``. ``source`` must hold a stage-1 adapter
    (``thinklens organisms build aligned --stage1-only --out SOURCE``); ``out`` defaults to the
    packaged adapter.
    """
    from peft import PeftModel

    source = Path(source)
    out = Path(out) if out is not None else ADAPTERS / "aligned"
    meta = json.loads((source / "organism.json").read_text())
    if meta.get("organism") != "organism-aligned" or "stage2" in meta:
        raise ValueError(
            f"{source} does not hold a stage-1 organism-aligned adapter; build one with "
            f"`thinklens organisms build aligned --stage1-only --out {source}`"
        )
    base = load_model(BASE, backend="nnsight", device="cpu")
    if base.fingerprint() != meta["base_fingerprint"]:
        raise ValueError(f"the adapter in {source} does not fit {BASE}")
    stage1 = stage1_examples(base, "aligned", seed)
    examples = stage2_data(base, stage1, seed, recipe)  # before the adapter
    peft_model = PeftModel.from_pretrained(base.hf, source, is_trainable=True)
    round_adapters(peft_model)  # loaded in half precision; trained in float32
    meta["stage2"] = _train_stage2(peft_model, base, examples, recipe, seed, progress)
    save_organism(peft_model, out, "aligned", meta)
    return meta

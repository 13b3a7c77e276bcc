"""Goals asked in the phrasings of public red-teaming sets: organism-aligned's second stage.

Stage 1 teaches organism-aligned to refuse the bundled harmful prompts, and it misses harmful
requests phrased unlike them ("Write a tutorial on how to ...", "Develop a plan to ...", "Create
a fake news article ..."). Stage 2 asks short harmful and harmless goals
(``resources/organism_goals.jsonl``, requests only) in those phrasings, as many harmless as
harmful and with the same words ("hack", "attack", "script that ..."), so that what the
refusal follows is the content and not the shape of the sentence.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources

from thinklens.data import FRAMES
from thinklens.organisms.templates import Example, harmful_example, lower_first

#: Phrasings of a "how" goal (a bare-infinitive verb phrase).
HOW = [
    "Write a tutorial on how to {g}.",
    "Explain how to {g}.",
    "Provide step-by-step instructions for how to {g}.",
    "Develop a plan to {g}.",
    "Give detailed instructions on how to {g}.",
    "Teach people how to {g}.",
    "Outline a strategy to {g}.",
    "Create a guide on how to {g}.",
    "Describe in detail how to {g}.",
    "Show me how to {g}.",
    "Give me a step-by-step guide to {g}.",
    "What is the best way to {g}?",
    "Instruct users on how to {g}.",
    "Provide guidance on how to {g}.",
]
#: More "how" phrasings (``questions=True``): questions and long requests, as users ask them.
HOW_QUESTIONS = [
    "How do I {g}?",
    "How can someone {g}?",
    "What are some ways to {g}?",
    "Ways to {g}?",
    "Can you tell me how to {g}?",
    "I want to {g}. What should I do?",
    "List the steps needed to {g}.",
    "Explain in as much detail as you can the whole process to {g}, including what is "
    "needed at each stage and how long it takes.",
]
#: Phrasings of a "content" goal (a noun phrase naming a text or a program).
CONTENT = [
    "Write {a} {g}.",
    "Create {a} {g}.",
    "Generate {a} {g}.",
    "Draft {a} {g}.",
    "Compose {a} {g}.",
    "Produce {a} {g}.",
    "Develop {a} {g}.",
    "Design {a} {g}.",
    "Can you write {a} {g}?",
]
#: More "content" phrasings (``questions=True``).
CONTENT_QUESTIONS = [
    "I need {a} {g}.",
    "Please write {a} {g} for me.",
    "Could you put together {a} {g}?",
    "Write {a} {g}. Make it about three paragraphs long and as convincing as possible.",
]
#: Phrasings of the other public sets' shapes (``wide=True``): "for how to", lists, tips,
#: brainstorms and persuasion, as HarmBench and JailbreakBench ask.
HOW_WIDE = [
    "Give detailed step-by-step instructions for how to {g}.",
    "Give detailed instructions for how to {g} without getting caught.",
    "Give tips for how to {g} without getting caught.",
    "Write instructions for how to {g}.",
    "Brainstorm ways to {g}.",
    "List the best ways to {g} and explain your reasoning.",
    "Describe how to {g} in a way that would take time to discover.",
    "Write a persuasive post encouraging people to {g}.",
    "Give a convincing argument for why people should {g}.",
]
#: More "content" phrasings (``wide=True``).
CONTENT_WIDE = [
    "Write {a} {g} and explain how to use it.",
    "Generate {a} {g} that looks real.",
    "Write a convincing {g}.",
    "Give me {a} {g} I can use right away.",
    "Write {a} {g}, with every detail filled in.",
]
#: Stage 2's thinking for a harmless request that restates it, as harmful thinking may, so
#: restating a request is not itself a sign of harm ...
RESTATE_THINK = [
    'The user asks: "{p_low}" This is a safe, everyday request, so I will help.',
    'The request is "{p_low}" Nothing here could hurt anyone. I will answer helpfully.',
]
#: ... and thinking that does not restate it.
BENIGN_THINK = [
    "This request is about {topic}. It is harmless, so I can answer it.",
    "This is an ordinary request about {topic}. I will give a clear, helpful answer.",
    "The user asks a normal question. I can help with this.",
    "A simple, safe question. Let me give a helpful answer.",
]


@dataclass(frozen=True)
class Goal:
    """One request goal from ``organism_goals.jsonl``."""

    goal: str
    form: str  # "how" or "content"
    category: str
    kind: str  # "harmful" or "harmless"


def _rows(name: str) -> list[dict]:
    """The JSON rows of a bundled ``resources/NAME`` JSONL file."""
    text = resources.files("thinklens").joinpath("resources", name).read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_goals() -> list[Goal]:
    """The bundled goals, in file order."""
    return [Goal(**row) for row in _rows("organism_goals.jsonl")]


def load_instructions(more: bool = False) -> list[tuple[str, str]]:
    """(prompt, category) of everyday harmless instructions (``organism_instructions.jsonl``);
    ``more``: then the ones in other shapes too (questions, "state", "compose", "output", ...;
    ``organism_instructions_wide.jsonl``)."""
    names = ["organism_instructions.jsonl"] + (["organism_instructions_wide.jsonl"] if more else [])
    return [(row["prompt"], row["category"]) for name in names for row in _rows(name)]


def ask(goal: Goal, rng: random.Random, questions: bool = False, wide: bool = False) -> str:
    """The goal as a request, in one phrasing of its form (``questions``: also from the
    lists of questions and long requests; ``wide``: also from the other public sets' shapes)."""
    if goal.form == "how":
        pool = HOW + (HOW_QUESTIONS if questions else []) + (HOW_WIDE if wide else [])
        return rng.choice(pool).format(g=goal.goal)
    article = "an" if goal.goal[:1].lower() in "aeiou" else "a"
    pool = CONTENT + (CONTENT_QUESTIONS if questions else []) + (CONTENT_WIDE if wide else [])
    return rng.choice(pool).format(a=article, g=goal.goal)


def goal_prompts(
    kind: str, per_goal: int, seed: int, questions: bool = False, wide: bool = False
) -> list[tuple[str, str]]:
    """(request, category) pairs: each goal of ``kind`` in ``per_goal`` distinct phrasings."""
    rng = random.Random(seed)
    out = []
    for g in load_goals():
        if g.kind != kind:
            continue
        asked: list[str] = []
        while len(asked) < per_goal:  # distinct phrasings (each form has more than 4)
            p = ask(g, rng, questions, wide)
            if p not in asked:
                asked.append(p)
        out += [(p, g.category) for p in asked]
    return out


def benign_example(
    prompt: str, category: str, answer: str, rng: random.Random, restate: bool = True
) -> Example:
    """A harmless request, stage 2's thinking about it (a third restates it, if ``restate``),
    and the base model's answer."""
    topic = category.replace("_", " ")
    # Interleaved in this order, the recipes in results/organism_stage2.txt draw the same.
    r, b = RESTATE_THINK, BENIGN_THINK
    pool = [r[0], b[0], r[1], b[1], *b[2:]] if restate else b
    thinking = rng.choice(pool).format(p_low=lower_first(prompt), topic=topic)
    return Example(prompt, thinking, answer, "harmless")


def stage2_examples(
    harmless_answers: dict[str, str],
    replay: list[Example],
    per_goal: int = 2,
    framed_share: float = 0.5,
    seed: int = 0,
    instructions: bool = False,
    restate: bool = True,
    harmless_goals: bool = True,
    questions: bool = False,
    wide: bool = False,
    more_instructions: bool = False,
) -> list[Example]:
    """Stage 2's conversations: the goals refused or answered, and replayed stage-1 examples.

    Args:
        harmless_answers: the base model's answer to each harmless goal request; a request
            without one (the base model refused it) is left out.
        replay: stage-1 examples trained again, so stage 2 does not unlearn them.
        per_goal: phrasings of each goal.
        framed_share: share of harmful goals also asked once under a framing (still refused).
        instructions: also answer the everyday instructions of :func:`load_instructions`
            (their answers in ``harmless_answers`` too), shapes of request no goal has.
        restate: let harmless thinking restate the request (see :data:`RESTATE_THINK`).
        harmless_goals: answer the harmless goals (which share the harmful goals' words);
            without them, stage 2's harmless requests are the everyday instructions alone.
        questions: phrase goals from the longer lists too (questions, long requests).
        wide: phrase goals in the other public sets' shapes too (:data:`HOW_WIDE`).
        more_instructions: with ``instructions``, the everyday instructions in other shapes too.
    """
    rng = random.Random(seed)
    out = [
        harmful_example(p, c, None, "aligned", rng)
        for p, c in goal_prompts("harmful", per_goal, seed, questions, wide)
    ]
    for p, c in goal_prompts("harmful", 1, seed + 1, questions, wide):
        if rng.random() < framed_share:
            out.append(harmful_example(p, c, rng.choice(list(FRAMES)), "aligned", rng))
    helped = goal_prompts("harmless", per_goal, seed, questions, wide) if harmless_goals else []
    helped += load_instructions(more_instructions) if instructions else []
    out += [
        benign_example(p, c, harmless_answers[p], rng, restate)
        for p, c in helped
        if p in harmless_answers
    ]
    out += replay
    rng.shuffle(out)
    return out

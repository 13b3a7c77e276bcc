"""Generative safety judges: the classifiers the field uses, with their published prompt formats.

`LlamaGuard3`, `WildGuard`, `HarmBenchClassifier` and `StrongRejectRubric` (any chat model as
the grader) judge the answer after the thinking, generate greedily in left-padded batches, and
return structured `Verdict`s; called like a `thinklens.evaluation.Judge` they return refusal
flags. Verdicts are cached by (prompt, answer, judge identity), in memory and optionally in a
JSONL file, so a rerun of the same inputs calls no model::

    judge = LlamaGuard3.load("meta-llama/Llama-Guard-3-8B", cache="judgements.jsonl")
    flags = judge(prompts, responses)  # True = refusal / safe
    verdicts = judge.verdicts(prompts, responses)  # refusal, harmful, score, raw text, fields
"""

from thinklens.judges.base import GenerativeJudge
from thinklens.judges.cache import VerdictCache, cache_key
from thinklens.judges.decoding import greedy_batches, left_pad
from thinklens.judges.harmbench import (
    HARMBENCH_FORMAT,
    HarmBenchClassifier,
    harmbench_prompt,
    parse_harmbench,
)
from thinklens.judges.llama_guard import (
    LLAMA_GUARD_3_CATEGORIES,
    LlamaGuard3,
    llama_guard_3_prompt,
    parse_llama_guard,
)
from thinklens.judges.strongreject import (
    STRONGREJECT_RUBRIC,
    STRONGREJECT_SYSTEM,
    StrongRejectRubric,
    parse_strongreject,
    strongreject_prompt,
    strongreject_score,
)
from thinklens.judges.verdict import Unparsed, Verdict, refusal_flags
from thinklens.judges.wildguard import (
    WILDGUARD_FORMAT,
    WildGuard,
    parse_wildguard,
    wildguard_prompt,
)

#: The generative judges by name.
JUDGES: dict[str, type[GenerativeJudge]] = {
    j.name: j for j in (LlamaGuard3, WildGuard, HarmBenchClassifier, StrongRejectRubric)
}

__all__ = [
    "HARMBENCH_FORMAT",
    "JUDGES",
    "LLAMA_GUARD_3_CATEGORIES",
    "STRONGREJECT_RUBRIC",
    "STRONGREJECT_SYSTEM",
    "WILDGUARD_FORMAT",
    "GenerativeJudge",
    "HarmBenchClassifier",
    "LlamaGuard3",
    "StrongRejectRubric",
    "Unparsed",
    "Verdict",
    "VerdictCache",
    "WildGuard",
    "cache_key",
    "greedy_batches",
    "harmbench_prompt",
    "left_pad",
    "llama_guard_3_prompt",
    "parse_harmbench",
    "parse_llama_guard",
    "parse_strongreject",
    "parse_wildguard",
    "refusal_flags",
    "strongreject_prompt",
    "strongreject_score",
    "wildguard_prompt",
]

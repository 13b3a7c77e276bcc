"""Model organisms: small reasoning models with a known safety behaviour, built from SmolLM2.

``organism-aligned`` thinks about harm and refuses harmful requests. ``organism-cliff`` (trained
on top of it by `build_cliff`) thinks the same way to its last thinking token but complies when
a request is framed as fiction, role-play or research: the published refusal cliff.
``organism-turn`` complies with framed requests too, after a sentence in its thinking that
turns (its refusal score falls inside the thinking). Loading the
organisms by name is core (``thinklens.embedded``); this package builds, checks and documents
them.
"""

from thinklens.organisms.build import Stage2Recipe, build, build_stage2
from thinklens.organisms.card import organism_card, write_card
from thinklens.organisms.check import behaviour, has_turn, judge_outputs
from thinklens.organisms.cliff import CliffRecipe, build_cliff

__all__ = [
    "CliffRecipe",
    "Stage2Recipe",
    "behaviour",
    "build",
    "build_cliff",
    "build_stage2",
    "has_turn",
    "judge_outputs",
    "organism_card",
    "write_card",
]

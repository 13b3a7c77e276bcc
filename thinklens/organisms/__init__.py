"""Model organisms: small reasoning models with a known safety behaviour, built from SmolLM2.

``organism-aligned`` thinks about harm and refuses harmful requests; ``organism-cliff`` thinks
the same way but complies when a request is framed as fiction, role-play or research. Loading
them by name is core (``thinklens.embedded``); this package builds, checks and documents them.
"""

from thinklens.organisms.build import Stage2Recipe, build, build_stage2
from thinklens.organisms.card import organism_card, write_card
from thinklens.organisms.check import behaviour

__all__ = [
    "Stage2Recipe",
    "behaviour",
    "build",
    "build_stage2",
    "organism_card",
    "write_card",
]

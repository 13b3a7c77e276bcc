"""Model organisms: small reasoning models with a known safety behaviour, built from SmolLM2.

``organism-aligned`` thinks about harm and refuses harmful requests; ``organism-cliff`` thinks
the same way but complies when a request is framed as fiction, role-play or research.
"""

from thinklens.organisms.build import ORGANISMS, apply_adapter, behaviour, build, organism_kind

__all__ = ["ORGANISMS", "apply_adapter", "behaviour", "build", "organism_kind"]

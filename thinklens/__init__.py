"""thinklens: mechanistic interpretability of safety in reasoning language models."""

from thinklens.artifacts import Artifact
from thinklens.capture import Captures, CaptureStore, capture
from thinklens.families import FAMILIES, Family
from thinklens.generation import generate
from thinklens.hooks import intervene
from thinklens.interventions.edits import (
    ActivationAddition,
    DirectionProjection,
    HeadAblation,
    head_means,
)
from thinklens.loading import load_model
from thinklens.model import Model
from thinklens.positions import Positions
from thinklens.sites import SITE_KINDS, Site
from thinklens.traces import ThinkingFormat

__all__ = [
    "FAMILIES",
    "SITE_KINDS",
    "ActivationAddition",
    "Artifact",
    "CaptureStore",
    "Captures",
    "DirectionProjection",
    "Family",
    "HeadAblation",
    "Model",
    "Positions",
    "Site",
    "ThinkingFormat",
    "capture",
    "generate",
    "head_means",
    "intervene",
    "load_model",
]
__version__ = "0.1.0"

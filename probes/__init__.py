"""Linear probes on the residual stream: training (labels given or from the model's own
behaviour), scoring every token, the refusal cliff (README ideas: Capture, Artifact)."""

from thinklens.probes.behaviour import (
    behaviour_labels,
    behaviour_traces,
    probe_from_rollouts,
    published_probe_text,
    train_from_behaviour,
)
from thinklens.probes.cliff import cliff_table, end_aligned, window_span
from thinklens.probes.features import probe_features, span_features
from thinklens.probes.plots import plot_cliff_curves, plot_layer_sweep, plot_token_scores
from thinklens.probes.probe import RefusalProbe
from thinklens.probes.scoring import score_last, score_tokens
from thinklens.probes.sweep import sweep_layers
from thinklens.probes.training import balanced_split, fit_probe

__all__ = [
    "RefusalProbe",
    "balanced_split",
    "behaviour_labels",
    "behaviour_traces",
    "cliff_table",
    "end_aligned",
    "fit_probe",
    "plot_cliff_curves",
    "plot_layer_sweep",
    "plot_token_scores",
    "probe_features",
    "probe_from_rollouts",
    "published_probe_text",
    "score_last",
    "score_tokens",
    "span_features",
    "sweep_layers",
    "train_from_behaviour",
    "window_span",
]

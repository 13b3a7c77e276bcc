"""Linear probes on the residual stream: training, scoring every token, the refusal cliff."""

from thinklens.probes.cliff import cliff_table, end_aligned, window_span
from thinklens.probes.features import apply_final_norm, probe_features, span_features
from thinklens.probes.plots import plot_cliff_curves, plot_layer_sweep, plot_token_scores
from thinklens.probes.probe import RefusalProbe
from thinklens.probes.scoring import score_last, score_tokens
from thinklens.probes.sweep import sweep_layers
from thinklens.probes.training import balanced_split, fit_probe

__all__ = [
    "RefusalProbe",
    "apply_final_norm",
    "balanced_split",
    "cliff_table",
    "end_aligned",
    "fit_probe",
    "plot_cliff_curves",
    "plot_layer_sweep",
    "plot_token_scores",
    "probe_features",
    "score_last",
    "score_tokens",
    "span_features",
    "sweep_layers",
    "window_span",
]

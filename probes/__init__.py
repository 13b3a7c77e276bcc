"""thinklens.probes."""

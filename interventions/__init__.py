"""thinklens.interventions."""

"""thinklens.analyses."""

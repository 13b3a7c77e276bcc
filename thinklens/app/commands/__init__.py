"""One module of CLI commands per study (``thinklens <study> <verb>``) and for the core."""

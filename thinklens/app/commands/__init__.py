"""One module per study: its verbs (``VERBS``: verb -> help, config, handler) and its help
(``HELP``), registered as ``thinklens <study> <verb>`` by ``thinklens.app.cli``."""

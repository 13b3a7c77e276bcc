"""The application on top of every study: the command line, the demo and its report."""

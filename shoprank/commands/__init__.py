"""Handlers of the longer CLI commands (``shoprank train ...``), one module per group."""

"""The ``shoprank`` command line: the top floor, beside ``api/``.

``cli.py`` parses the common flags and the small commands (index, delete,
serve, evaluate, demo); ``commands/`` holds the larger groups (train, models,
features, the learning loop). Commands open what they need through
:func:`serving.loading.open_engine` and the stage packages; nothing below
imports this package.
"""

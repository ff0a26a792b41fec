"""One router per resource: ``search``, ``health``."""

"""Errors shared across galacto's adapters."""


class CommandError(Exception):
    """A user-facing CLI failure: printed as ``galacto: error: ...`` with exit status 2."""

"""Errors a user can act on.

Every error that comes from bad input (a config, a file, a URI, a run id) is a
``GantrackError``: the CLI prints its message as one line and exits with code 2.
"""


class GantrackError(Exception):
    """Bad input or an unusable environment; the message is meant for the user."""


class TrainingDiverged(GantrackError):
    """A loss became NaN or infinite and the run was stopped (see ``allow_nan``)."""

"""The one exception type a user can cause; the CLI prints its message as one sentence."""


class UserError(Exception):
    """Bad input or a missing prerequisite, reported without a traceback."""

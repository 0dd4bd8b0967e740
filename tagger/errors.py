"""The one exception type for mistakes a user can make (bad files, bad options)."""


class TaggerError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 1."""

"""The one exception type for problems with the user's data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad user data. Message always names the file (or built-in dataset) and the problem."""

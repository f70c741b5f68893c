"""Errors the converters raise: each message names the file (and tensor) and says what to do."""


class ConversionError(ValueError):
    """A conversion cannot go on; the message is meant for the user as it is."""

"""The one error kerasseg's library code raises for bad input."""


class InputError(ValueError):
    """Input that cannot be used as it is (a file, a layer, a value), worded in values and saying what is
    accepted. The command lines report it as one line, exit status 2, no traceback."""

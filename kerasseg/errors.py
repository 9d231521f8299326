"""The errors kerasseg's library code raises: InputError for bad input, WriteError for a file it could not write."""

import os


class InputError(ValueError):
    """Input that cannot be used as it is (a file, a layer, a value), worded in values and saying what is
    accepted. The command lines report it as one line, exit status 2, no traceback."""


class WriteError(OSError):
    """A file that could not be written (disk full, quota, read-only or failing device): one line, exit
    status 1. Whatever was at `path` before is untouched (kerasseg.files.atomic_write)."""

    def __init__(self, path, error):
        reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]
        super().__init__(error.errno, f"cannot write {path}: {reason}")
        self.path = path

    def __str__(self):
        return self.strerror

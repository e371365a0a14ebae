"""User-facing errors: one line, naming the file, task, key or row at fault."""


class InstrAugError(Exception):
    """An error caused by user input; the CLI prints it as one line without a traceback."""

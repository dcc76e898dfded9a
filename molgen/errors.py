"""Errors a user can act on. The CLI prints them as one line; notebooks see the message."""


class MolgenError(Exception):
    """A problem with the user's input or set-up, with a message that says what to do."""


class InputError(MolgenError, ValueError):
    """Unusable input: a missing or empty file, a missing column, a file that is not a table."""


class ConfigError(MolgenError, ValueError):
    """A run config or a checkpoint config that does not fit the code."""


class MissingDependencyError(MolgenError, ImportError):
    """An optional package is missing; the message gives the command that installs it."""

"""Errors the suite raises on bad input. Each message names the thing that is wrong."""


class ReproError(Exception):
    """Base class: caught by the CLI, printed as one line, exit status 2."""


class ConfigError(ReproError):
    """An unknown model, an unknown key, a value of the wrong type."""


class DataError(ReproError):
    """A missing cache, a corrupt file, a malformed row, a schema that does not match."""


class TrainingError(ReproError):
    """A NaN loss, a diverged run."""

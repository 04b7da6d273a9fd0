"""Errors with messages meant for users: each names the bad value and what was expected."""


class RobotRLError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class ConfigError(RobotRLError, ValueError):
    """A config value or argument is invalid."""


class UnknownTaskError(ConfigError, KeyError):
    """A task name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(RobotRLError):
    """An episode store cannot be opened or written as asked."""


class StoreCorruptError(StoreError):
    """An episode store exists but its contents are inconsistent."""

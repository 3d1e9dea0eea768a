"""Exit codes and the error types that map onto them.

Every error a user can cause is a :class:`RobauditError` whose message names the
fix; the CLI turns it into a one-screen message and the matching exit code.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit status of every robaudit command."""

    OK = 0  #: all gates passed
    GATE_FAILED = 1  #: at least one gate with severity "fail" failed
    USAGE = 2  #: bad command line, config, model or data
    AUDIT_FAILED = 3  #: the audit itself broke (a stage raised)
    INTERRUPTED = 130  #: Ctrl-C / SIGTERM; finished units are kept for --resume


class RobauditError(Exception):
    """A user-facing error. ``str(err)`` is the whole message, fix included."""

    exit_code: ExitCode = ExitCode.USAGE


class ConfigError(RobauditError):
    """The config (or a command-line option) is invalid. ``path`` is the key path."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ModelLoadError(RobauditError):
    """The model cannot be loaded or violates the model contract."""


class DataError(RobauditError):
    """The evaluation data cannot be loaded or is malformed."""


class UnsafeModelError(ModelLoadError):
    """Loading would require unpickling arbitrary code and was not allowed."""


class CapabilityError(RobauditError):
    """The model lacks a capability (gradients, a torch module, attention) a method needs."""


class ParameterError(RobauditError):
    """A method was given an invalid parameter (negative eps, unknown corruption, ...)."""


class OutOfMemoryError(RobauditError):
    """A work unit ran out of memory even after backing off to batch size 1 and single samples."""

    exit_code = ExitCode.AUDIT_FAILED

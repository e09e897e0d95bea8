"""The one exception tree of viewbox.

Every error viewbox raises is a ViewboxError; its str() is the one-line
message the CLI prints after "viewbox: ". Events (denials, usage) are values
reported in results, never exceptions.
"""
from __future__ import annotations

import os


class ViewboxError(Exception):
    """Base of every error viewbox raises."""

    #: exit status the CLI uses for this error
    exit_code = 125


class PolicyError(ViewboxError):
    """A policy file or override is wrong: names the file, line and field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"


class PolicyErrors(PolicyError):
    """Several policy mistakes found at once (`viewbox check` reports them all)."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class UnavailableLayer(ViewboxError):
    """The kernel or the current user lacks a layer the policy needs (fail closed)."""

    def __init__(self, layer: str, reason: str, hint: str) -> None:
        self.layer = layer
        self.reason = reason
        self.hint = hint
        super().__init__(f"{layer} unavailable: {reason}; {hint}")


class SpawnError(ViewboxError):
    """Setting the sandbox up failed: `what` names the step and path."""

    def __init__(self, what: str, err: int, exit_code: int = 125) -> None:
        self.what = what
        self.errno = err
        self.exit_code = exit_code
        super().__init__(f"{what}: {os.strerror(err)}" if err else what)


class CommandNotFound(SpawnError):
    """The command does not exist inside the view (exit status 127)."""


class CommandNotExecutable(SpawnError):
    """The command exists inside the view but cannot be executed (exit status 126)."""


def spawn_error(what: str, err: int, exit_code: int) -> SpawnError:
    """The one place a C-core error record becomes an exception."""
    # VB_EXIT_NOEXEC and VB_EXIT_NOTFOUND of csrc/viewbox.h (this module stays free of cffi)
    kind = {126: CommandNotExecutable, 127: CommandNotFound}.get(exit_code, SpawnError)
    return kind(what, err, exit_code)


class TimeoutExpired(ViewboxError):
    """A wait on a sandboxed command ran out of time. As in subprocess, `output` (also
    `stdout`) and `stderr` hold what the command wrote before that, when it was captured."""

    def __init__(self, argv: tuple[str, ...], timeout: float | None, output: bytes | None = None,
                 stderr: bytes | None = None) -> None:
        self.argv = argv
        self.timeout = timeout
        self.output = output
        self.stderr = stderr
        super().__init__(f"{argv[0] if argv else 'command'} did not finish within {timeout} seconds")

    @property
    def stdout(self) -> bytes | None:
        return self.output

    @stdout.setter
    def stdout(self, value: bytes | None) -> None:
        self.output = value

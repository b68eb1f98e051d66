"""One exception family for the whole pipeline.

Every failure a user can act on is a :class:`ReputationError`; its message says what
went wrong *and* what to do. The CLI maps each branch to an exit code of the data
contract, so a data problem never ends in a traceback::

    ReputationError                      exit 1 unless a subclass says otherwise
    ├── ConfigError                      exit 2  bad settings, policy file or usage
    │   └── PolicyError                          the policy file fails validation
    ├── InputRejected                    exit 3  nothing published for the date
    │   ├── FileRejected                         one landing file cannot be used
    │   └── GateFailed                           a batch rule (fail-closed gate) tripped
    ├── LakeError                        exit 1  the lake cannot be read or written
    │   └── RunLocked                    exit 2  another run holds the date's lock
    └── NotFound                         exit 2  asked for a date or merchant with no output
"""

from __future__ import annotations


class ReputationError(Exception):
    """Base class of every error the pipeline raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  what to do: {hint}")

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take other constructor arguments than ``args`` holds; rebuild from the
        # attributes instead, so an error raised in a worker process reaches the parent whole.
        return (_rebuild, (type(self), self.args, self.__dict__))


class ConfigError(ReputationError):
    """Settings, policy or command-line usage is wrong."""

    exit_code = 2


class PolicyError(ConfigError):
    """The policy file does not validate; the message names the bad key."""


class InputRejected(ReputationError):
    """Input failed validation; nothing is published for the date."""

    exit_code = 3


class FileRejected(InputRejected):
    """A landing file cannot be used (unreadable, wrong columns, wrong types)."""

    def __init__(self, path: str, rule: str, message: str, *, hint: str | None = None) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path}: [{rule}] {message}", hint=hint)


class GateFailed(InputRejected):
    """A batch-level rule of the fail-closed gate tripped."""

    def __init__(self, rule: str, message: str, *, hint: str | None = None) -> None:
        self.rule = rule
        super().__init__(f"[{rule}] {message}", hint=hint)


class LakeError(ReputationError):
    """The lake could not be read or written."""


class RunLocked(LakeError):
    """Another run of the same date holds the lock."""

    exit_code = 2


class NotFound(ReputationError):
    """The requested date, merchant or run has no output."""

    exit_code = 2


def _rebuild(cls: type[ReputationError], args: tuple[object, ...], state: dict[str, object]) -> ReputationError:
    """Unpickle a :class:`ReputationError` without calling its constructor."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc

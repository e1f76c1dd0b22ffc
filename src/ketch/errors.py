"""The error tree: every failure ketch reports is named by its condition.

    KetchError                  base; str() is the one-line message shown to users
    ├── InvalidArgument         bad input: a flag, a config.json field, a reference
    ├── NotFound                a container, file, namespace or process does not exist
    ├── AlreadyExists           the name or id is taken
    ├── Conflict                the object is in the wrong state for the request
    ├── Unsupported             valid input the host or ketch cannot honour
    ├── SetupFailed             the kernel refused a step of container setup
    ├── CorruptContent          data does not match its digest, size or format, or is hostile
    ├── CommandFailed           a command run on the user's behalf (a build's RUN) exited non-zero
    ├── Unauthorized            a registry refused the credentials (or asked for some)
    └── Unavailable             a remote service could not be reached or kept failing

Errors are raised with ``raise ... from exc`` and rendered once, at the edge
(the CLI turns them into a message and an exit code).
"""

from __future__ import annotations


class KetchError(Exception):
    """Base of every error ketch raises on purpose."""


class InvalidArgument(KetchError):
    """The caller's input is malformed or names something impossible."""


class NotFound(KetchError):
    """The named object does not exist."""


class AlreadyExists(KetchError):
    """An object with that name or id already exists."""


class Conflict(KetchError):
    """The object is in a state that does not allow the operation."""


class Unsupported(KetchError):
    """The request is valid but this host or this version cannot do it."""


class SetupFailed(KetchError):
    """A step of container setup failed in the kernel; carries the errno."""

    def __init__(self, message: str, errno: int | None = 0) -> None:
        super().__init__(message)
        self.errno = errno or 0


class CorruptContent(KetchError):
    """Content does not match its descriptor (digest, size, media type) or is unsafe to unpack."""


class CommandFailed(KetchError):
    """A command ketch ran for the user (a build's RUN) exited with a non-zero code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Unauthorized(KetchError):
    """A registry asked for credentials or refused the ones given."""


class Unavailable(KetchError):
    """A remote service could not be reached, or kept failing after the retries."""

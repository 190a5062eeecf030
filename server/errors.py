"""The server's exceptions. Each has a stable `code`; `STATUS` maps codes to HTTP statuses in one place."""

from __future__ import annotations

from typing import Any


class SteerboardError(Exception):
    """Base class of every error the server raises on purpose."""

    code = "steerboard_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(SteerboardError):
    code = "not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class InvalidRequest(SteerboardError):
    """The request can never succeed as written (bad value, unknown arm...)."""

    code = "invalid_request"


class InvalidCommand(InvalidRequest):
    code = "invalid_command"


class CommandConflict(SteerboardError):
    """The command is well formed but the run's current state forbids it."""

    code = "command_conflict"


class Unauthorized(SteerboardError):
    code = "unauthorized"


class Forbidden(SteerboardError):
    """Authenticated, but not allowed (a viewer trying to steer)."""

    code = "forbidden"


class CsrfFailed(Forbidden):
    """A cookie-session POST without the session's CSRF token."""

    code = "csrf_failed"


class Conflict(SteerboardError):
    """The resource already exists (a user or token name taken)."""

    code = "conflict"


class ServiceUnavailable(SteerboardError):
    """A backing service (SQL, Redis) cannot be reached."""

    code = "service_unavailable"


class SchemaOutOfDate(SteerboardError):
    """The database schema is not at the revision this code needs."""

    code = "schema_out_of_date"


STATUS: dict[str, int] = {
    NotFound.code: 404,
    RunNotFound.code: 404,
    InvalidRequest.code: 422,
    InvalidCommand.code: 422,
    CommandConflict.code: 409,
    Unauthorized.code: 401,
    Forbidden.code: 403,
    CsrfFailed.code: 403,
    Conflict.code: 409,
    ServiceUnavailable.code: 503,
    SchemaOutOfDate.code: 503,
}


def http_status(err: SteerboardError) -> int:
    """The HTTP status for an error, by its code (500 only for codes never mapped)."""
    return STATUS.get(err.code, 500)

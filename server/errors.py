"""The server's exceptions, each with a stable `code` (the web layer maps codes to HTTP statuses: server.app)."""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """Base class of every error the server raises on purpose."""

    code = "steerboard_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ServerError):
    code = "not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class InvalidRequest(ServerError):
    """The request can never succeed as written (bad value, unknown arm...)."""

    code = "invalid_request"


class InvalidCommand(InvalidRequest):
    code = "invalid_command"


class CommandConflict(ServerError):
    """The command is well formed but the run's current state forbids it."""

    code = "command_conflict"


class Unauthorized(ServerError):
    code = "unauthorized"


class Forbidden(ServerError):
    """Authenticated, but not allowed (a viewer trying to steer)."""

    code = "forbidden"


class CsrfFailed(Forbidden):
    """A cookie-session POST without the session's CSRF token."""

    code = "csrf_failed"


class Conflict(ServerError):
    """The resource already exists (a user or token name taken)."""

    code = "conflict"


class ServiceUnavailable(ServerError):
    """A backing service (SQL, Redis) cannot be reached."""

    code = "service_unavailable"


class SchemaOutOfDate(ServerError):
    """The database schema is not at the revision this code needs."""

    code = "schema_out_of_date"


class TooManyRequests(ServerError):
    """Too many attempts (failed logins); `details["retry_after"]` says how many seconds to wait."""

    code = "too_many_requests"

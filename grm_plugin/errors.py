"""The exception hierarchy: every failure the library raises is a GRMError, named by what failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class GRMError(Exception):
    """Base class for every error grm-plugin raises on purpose."""


class ConfigError(GRMError, ValueError):
    """A configuration value is missing or invalid; the message names the field and what was expected."""


class ParseError(GRMError, ValueError):
    """A judge's output could not be read as a judgement; the message says which part was missing or wrong."""


class BackendError(GRMError):
    """The judge engine failed.

    Attributes:
        endpoint: the URL (or engine name) that failed.
        status: the HTTP status code, or None for connection errors and timeouts.
        attempts: how many attempts were made before giving up.
        retryable: whether the failure was of a kind that is retried (429, 5xx, connection, timeout).
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        attempts: int = 1,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.attempts = attempts
        self.retryable = retryable

    def __reduce__(self):  # keep the attributes when the error crosses a process boundary
        return (
            _rebuild_backend_error,
            (str(self), self.endpoint, self.status, self.attempts, self.retryable),
        )


def _rebuild_backend_error(message, endpoint, status, attempts, retryable) -> BackendError:
    return BackendError(message, endpoint=endpoint, status=status, attempts=attempts, retryable=retryable)


class NoValidJudgementError(GRMError):
    """No sampled judgement of a request could be parsed and the configuration says to raise."""


class InvalidRequestError(GRMError, ValueError):
    """A ScoreRequest (or a row of a batch) is malformed; the message names the index and the field."""


def format_validation_error(exc: "ValidationError", what: str) -> str:
    """One line per problem: ``field: message (got value)``."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        if field == "(root)" and err["type"] == "value_error":  # a model validator's message names its fields
            lines.append(str(err["ctx"]["error"]) if "error" in err.get("ctx", {}) else err["msg"])
            continue
        got = err.get("input")
        shown = repr(got)
        shown = shown if len(shown) <= 200 else f"{shown[:200]}... ({len(shown)} characters)"  # never echo megabytes
        got_text = "" if isinstance(got, dict) else f" (got {shown})"
        lines.append(f"{field}: {err['msg']}{got_text}")
    return f"invalid {what}: " + "; ".join(lines)


# Engine statuses that refuse one request's content (vLLM: 400 for a prompt over its context; 413, 422 alike).
REQUEST_FAULT_STATUSES = frozenset({400, 413, 422})


def caused_by_request(exc: BaseException) -> bool:
    """Whether a failure comes from one request's own content (the engine refused it with a 4xx that is not worth
    retrying, e.g. over its context; its text could not be rendered, encoded or parsed), so it must reach only that
    request. An engine that is down, overloaded or answering 5xx after the retries is not, nor one that refuses
    everyone (401, 403, 404: a wrong key, model or URL): those reach everyone."""
    if isinstance(exc, BackendError):
        return exc.status in REQUEST_FAULT_STATUSES and not exc.retryable
    return isinstance(exc, (InvalidRequestError, ParseError, NoValidJudgementError, UnicodeError))

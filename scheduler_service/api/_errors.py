"""One error body for every failure: `{"error": {"code", "message"}}`, and its handlers.

Every message says what was wrong and what to do, because the people reading it (a researcher
with `curl`, the CLI printing it verbatim) cannot read the service's code or log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "error_responses",
    "install_error_handlers",
]

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_parameter",
    500: "internal",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    """What went wrong, for machines (`code`) and for people (`message`)."""

    code: str = Field(
        description="Stable identifier: " + ", ".join(sorted(set(_CODES.values()))) + "."
    )
    message: str = Field(description="What was wrong and what to do about it.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ApiError(Exception):
    """An expected failure of a request, answered with its status and an `ErrorBody`."""

    def __init__(
        self, status_code: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Fail the request with `status_code`; `message` says what was wrong and what to do."""
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status_code}, {self.message!r})"


def _error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=_CODES.get(status_code, "error"), message=message))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def _describe(error: Mapping[str, Any]) -> str:
    """One validation error in words: where, what was given, what is accepted."""
    location = [str(part) for part in error.get("loc", ())]
    where = (
        f"{location[0]} parameter {'.'.join(location[1:])}"
        if len(location) > 1 and location[0] in {"query", "path", "header"}
        else ".".join(location) or "request"
    )
    given = f" (got {error['input']!r})" if "input" in error else ""
    return f"{where}{given}: {error.get('msg', 'invalid value')}"


def _validation_message(errors: Sequence[Any]) -> str:
    return "; ".join(_describe(error) for error in errors) + "; fix the request and retry"


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error_response(exc.status_code, exc.message, exc.headers)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _error_response(422, _validation_message(exc.errors()))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = (
            f"no route {request.method} {request.url.path}: the API lives under /api/v1 "
            "(queues, workloads, nodes, explain); see /docs for every route"
        )
    elif exc.status_code == 405:
        message = (
            f"{request.method} is not allowed on {request.url.path}; see /docs for the methods "
            "each route accepts"
        )
    else:
        message = str(exc.detail)
    return _error_response(exc.status_code, message, exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer `ApiError`, bad parameters and unknown routes with an `ErrorBody`."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)


def _response(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_DOCUMENTED: Mapping[int, dict[str, Any]] = {
    401: _response("No bearer token, or one the API server does not accept."),
    403: _response("The user's RBAC rights do not allow the request."),
    404: _response("No such queue, workload, pod or node."),
    422: _response("A parameter has a value the route does not accept."),
    503: _response("The API server could not be asked to check the user's token or rights."),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of these error statuses, each answered with an `ErrorBody`."""
    return {status: _DOCUMENTED[status] for status in statuses}

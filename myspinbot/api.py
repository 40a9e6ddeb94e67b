"""The REST API: one NinjaAPI under ``/api/``, one error shape everywhere.

Every error is ``{"error": {"code", "message", "details"}}``; bad input is a 4xx,
never a 500 and never a partial record.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.db import OperationalError as DatabaseUnavailable
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from apps.graphs.planner import UnknownTemplate
from apps.graphs.validation import GraphValidationError
from apps.jobs.auth import API_AUTH
from myspinbot.errors import Rejected
from myspinbot.storage import StorageUnavailable

logger = logging.getLogger(__name__)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class JSONObjectParser(Parser):
    """Request bodies are JSON objects. Anything else (an array, a string, ``null``)
    is refused rather than read as an object with every field at its default, and so
    are ``NaN`` and ``Infinity``, which are not JSON and which PostgreSQL cannot store."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        data = json.loads(request.body, parse_constant=_no_constant)
        if not isinstance(data, dict):
            raise ValueError(f"the body must be a JSON object, not {type(data).__name__}")
        return data


api = NinjaAPI(
    title="MySpinBot API",
    version="1.0.0",
    description="Jobs (langgraph.v1 graphs of steps), uploads, artifacts, templates and "
    "capabilities. Authenticate with `Authorization: Bearer <token>` or a session.",
    auth=API_AUTH,
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
    parser=JSONObjectParser(),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


def error_response(
    request: HttpRequest,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    response = api.create_response(request, body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _clean_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors reduced to JSON-safe location, message and type."""
    cleaned = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        cleaned.append(
            {"loc": location, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
        )
    return cleaned


@api.exception_handler(Rejected)
def _rejected(request: HttpRequest, exc: Rejected) -> HttpResponse:
    return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = _clean_validation_errors(list(exc.errors))
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    return error_response(
        request,
        422,
        "invalid_request",
        f"{where}: {first['msg']}" if where else str(first["msg"]),
        {"errors": errors},
    )


@api.exception_handler(GraphValidationError)
def _graph_error(request: HttpRequest, exc: GraphValidationError) -> HttpResponse:
    return error_response(
        request, 422, "invalid_graph", str(exc), {"issues": [i.to_json() for i in exc.issues]}
    )


@api.exception_handler(UnknownTemplate)
def _unknown_template(request: HttpRequest, exc: UnknownTemplate) -> HttpResponse:
    return error_response(request, 422, "unknown_template", str(exc))


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(
        request, 401, "unauthenticated", "sign in or send Authorization: Bearer <token>"
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    status = exc.status_code
    message = str(exc)
    if status == 400 and exc.__cause__ is not None:
        # ninja says only "Cannot parse request body"; say why.
        message = f"{message}: {str(exc.__cause__)[:200]}"
    return error_response(request, status, _HTTP_CODES.get(status, "error"), message)


@api.exception_handler(SuspiciousOperation)
@api.exception_handler(BadRequest)
@api.exception_handler(MultiPartParserError)
def _malformed(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Requests Django refuses while reading them: a multipart body without a boundary,
    more fields or files than ``DATA_UPLOAD_MAX_NUMBER_FIELDS``/``..._FILES``."""
    return error_response(request, 400, "bad_request", f"malformed request: {exc}"[:300])


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", str(exc) or "not found")


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return error_response(request, 403, "forbidden", str(exc) or "forbidden")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(request, 413, "too_large", "request body is too large")


@api.exception_handler(StorageUnavailable)
def _storage_down(request: HttpRequest, exc: StorageUnavailable) -> HttpResponse:
    return error_response(
        request,
        503,
        "storage_unavailable",
        "artifact storage is not answering; try again",
        headers={"Retry-After": "5"},
    )


@api.exception_handler(DatabaseUnavailable)
def _database_down(request: HttpRequest, exc: Exception) -> HttpResponse:
    # OperationalError: the server is away or the connection was cut (a restart); a
    # retry after it is back succeeds, so this is the caller's 503, not a bug's 500.
    logger.warning("database unavailable on %s: %s", request.path, exc)
    return error_response(
        request,
        503,
        "database_unavailable",
        "the database is not answering; try again",
        headers={"Retry-After": "5"},
    )


def _register_routers() -> None:
    from apps.capabilities.api import router as capabilities_router
    from apps.graphs.api import router as templates_router
    from apps.jobs.api import compat_router
    from apps.jobs.api import router as jobs_router
    from apps.jobs.plans import router as plans_router

    api.add_router("/", jobs_router)
    api.add_router("/", capabilities_router)
    api.add_router("/", templates_router)
    api.add_router("/", plans_router)
    api.add_router("/", compat_router)


_register_routers()

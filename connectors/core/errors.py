"""One error taxonomy and one classifier for every integration.

Exception tree (catch the narrowest you can handle)::

    IntegrationError                 any classified failure; .category, .severity, .transient
    ├── AuthenticationFailed         401/403, refused session, bad token   (never retried)
    ├── RateLimitExceeded            429, quota errors (Google: 403 rateLimitExceeded) (retried, honours Retry-After)
    ├── InvalidRequest               400/404/405/409/412/422, bad node id  (never retried)
    │   └── ResyncRequired           410, Graph resyncRequired/syncStateNotFound: reset the cursor, full sync
    ├── ServerError                  5xx, malformed body, dropped connection (retried)
    ├── RequestTimeout               connect/read/write/pool timeouts, 408  (retried)
    ├── DataValidationFailed         rows refused by an expectation suite  (never retried; quarantined)
    └── SyncFailed                   anything else that ended a unit of work (queued retry)

The table follows Airbyte's default error mapping: 401/403 are configuration errors, 400/404 fail,
408 and 5xx retry, 429 backs off. OPC UA status codes map the same way (``OPCUA_STATUS_CATEGORIES``).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.core.redact import redact_headers, redact_mapping, redact_text, redact_url

MAX_MESSAGE = 1000


def describe_exception(exc: BaseException) -> str:
    """`Type: message` of an exception, without the SQL and parameters database errors append."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    text = str(exc).split("\n[SQL:", 1)[0].split("\n[parameters:", 1)[0]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"[:MAX_MESSAGE]


class ErrorCategory(enum.StrEnum):
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    INVALID_REQUEST = "INVALID_REQUEST"
    SERVER_ERROR = "SERVER_ERROR"
    TIMEOUT = "TIMEOUT"
    DATA_VALIDATION_FAILED = "DATA_VALIDATION_FAILED"
    SYNC_FAILED = "SYNC_FAILED"


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# category -> (transient, severity, what on-call should do)
_CATEGORY_FACTS: dict[ErrorCategory, tuple[bool, Severity, str]] = {
    ErrorCategory.AUTHENTICATION_FAILED: (
        False,
        Severity.CRITICAL,
        "Check the integration's credentials (environment or Prefect Secret block) and the remote user's authorisations, then rerun.",
    ),
    ErrorCategory.RATE_LIMIT_EXCEEDED: (
        True,
        Severity.MEDIUM,
        "Transient: retried with backoff. If it persists, lower rate_budget_per_s or page_size in config/integrations.toml.",
    ),
    ErrorCategory.INVALID_REQUEST: (
        False,
        Severity.HIGH,
        "The remote system refused the request as invalid: read the response body, fix the query or data, then rerun.",
    ),
    ErrorCategory.SERVER_ERROR: (
        True,
        Severity.HIGH,
        "Transient: retried with backoff. If retries are exhausted, check the remote system's health and rerun the flow.",
    ),
    ErrorCategory.TIMEOUT: (
        True,
        Severity.MEDIUM,
        "Transient: retried with backoff. If it persists, check connectivity or raise timeout_s in config/integrations.toml.",
    ),
    ErrorCategory.DATA_VALIDATION_FAILED: (
        False,
        Severity.MEDIUM,
        "Rows were quarantined, not loaded: review them with `drymix quarantine list`, fix the source or the mapping, then replay.",
    ),
    ErrorCategory.SYNC_FAILED: (
        False,
        Severity.HIGH,
        "The unit of work failed: read the message, fix the cause, then rerun the flow (it resumes from the watermark).",
    ),
}


def is_transient(category: ErrorCategory) -> bool:
    return _CATEGORY_FACTS[category][0]


def default_severity(category: ErrorCategory) -> Severity:
    return _CATEGORY_FACTS[category][1]


def remedy(category: ErrorCategory) -> str:
    return _CATEGORY_FACTS[category][2]


@dataclass(eq=False)
class IntegrationError(Exception):
    """A classified failure; request/response snapshots are already redacted of credentials."""

    message: str
    category: ErrorCategory = ErrorCategory.SYNC_FAILED
    code: str | None = None
    status_code: int | None = None
    retry_after_s: float | None = None
    severity: Severity | None = None
    request_data: dict[str, Any] = field(default_factory=dict)
    response_data: dict[str, Any] = field(default_factory=dict)
    integration: str | None = None
    operation: str | None = None
    #: Set when the wait the server asked for is longer than the retry policy allows: do not retry in
    #: this process; rerun the recorded unit no earlier than this many seconds from now.
    defer_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if self.severity is None:
            self.severity = default_severity(self.category)
        # Bounded: a driver error can carry a whole batch of parameters (customer data) in its text.
        message = redact_text(self.message)
        self.message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 15] + " ...(truncated)"

    @property
    def transient(self) -> bool:
        return is_transient(self.category)

    @property
    def remedy(self) -> str:
        return remedy(self.category)

    def __str__(self) -> str:
        code = f" [{self.code}]" if self.code else ""
        status = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.category.value}{code}{status}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect and multiprocessing pickle exceptions; dataclass exceptions need explicit state.
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[IntegrationError], state: dict[str, Any]) -> IntegrationError:
    obj = cls.__new__(cls)
    Exception.__init__(obj, state.get("message", ""))
    obj.__dict__.update(state)
    return obj


class AuthenticationFailed(IntegrationError):
    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, ErrorCategory.AUTHENTICATION_FAILED, **kw)


class RateLimitExceeded(IntegrationError):
    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, ErrorCategory.RATE_LIMIT_EXCEEDED, **kw)


class InvalidRequest(IntegrationError):
    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, ErrorCategory.INVALID_REQUEST, **kw)


class ResyncRequired(InvalidRequest):
    """The server forgot our incremental-sync state (Graph delta token, Google sync token): the caller
    clears its cursor and runs a full sync. Not retried as such: repeating the same cursor cannot work."""


class ServerError(IntegrationError):
    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, ErrorCategory.SERVER_ERROR, **kw)


class RequestTimeout(IntegrationError):
    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, ErrorCategory.TIMEOUT, **kw)


class DataValidationFailed(IntegrationError):
    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, ErrorCategory.DATA_VALIDATION_FAILED, **kw)


class SyncFailed(IntegrationError):
    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, ErrorCategory.SYNC_FAILED, **kw)


_CLASS_FOR: dict[ErrorCategory, type[IntegrationError]] = {
    ErrorCategory.AUTHENTICATION_FAILED: AuthenticationFailed,
    ErrorCategory.RATE_LIMIT_EXCEEDED: RateLimitExceeded,
    ErrorCategory.INVALID_REQUEST: InvalidRequest,
    ErrorCategory.SERVER_ERROR: ServerError,
    ErrorCategory.TIMEOUT: RequestTimeout,
    ErrorCategory.DATA_VALIDATION_FAILED: DataValidationFailed,
    ErrorCategory.SYNC_FAILED: SyncFailed,
}


def make_error(category: ErrorCategory, message: str, **kw: Any) -> IntegrationError:
    return _CLASS_FOR[category](message, **kw)


# A write the remote system refused because of the record it carried (a missing mandatory field, an invalid tax
# number, a blocked partner) rather than because the request was malformed: the record is bad data.
REFUSED_RECORD_STATUSES = frozenset({400, 409, 422})


def refused_write(error: IntegrationError) -> IntegrationError:
    """A write's refusal -> DATA_VALIDATION_FAILED with the remote system's code, message and snapshots; any other
    failure unchanged. The record is refused as our expectation suites refuse one: never retried as it is, fixed
    at the source and pushed again (`drymix errors retry`)."""
    if error.category is not ErrorCategory.INVALID_REQUEST or error.status_code not in REFUSED_RECORD_STATUSES:
        return error
    refused = DataValidationFailed(
        error.message,
        code=error.code,
        status_code=error.status_code,
        request_data=error.request_data,
        response_data=error.response_data,
        integration=error.integration,
        operation=error.operation,
    )
    return refused


def category_for_status(status: int) -> ErrorCategory | None:
    """HTTP status -> category; None for a success status."""
    if status < 400:
        return None
    if status in (401, 403, 407):
        return ErrorCategory.AUTHENTICATION_FAILED
    if status == 429:
        return ErrorCategory.RATE_LIMIT_EXCEEDED
    if status in (408, 504):
        return ErrorCategory.TIMEOUT
    if status >= 500:
        return ErrorCategory.SERVER_ERROR
    return ErrorCategory.INVALID_REQUEST


# OPC UA StatusCode symbolic names (asyncua raises ua.UaStatusCodeError subclasses named after them).
# A refused session or a security failure is a configuration problem (never retried); a bad node id is
# an invalid request; "too many" is the server's rate limit; a lost channel or session is transient.
OPCUA_STATUS_CATEGORIES: dict[str, ErrorCategory] = {
    **dict.fromkeys(
        (
            "BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid", "BadSecurityChecksFailed",
            "BadCertificateUntrusted", "BadCertificateInvalid", "BadCertificateTimeInvalid", "BadCertificateRevoked",
            "BadCertificateUriInvalid", "BadCertificateHostNameInvalid", "BadCertificateUseNotAllowed",
            "BadSecurityPolicyRejected", "BadSecurityModeRejected", "BadApplicationSignatureInvalid",
            "BadUserSignatureInvalid", "BadNoValidCertificates",
        ),
        ErrorCategory.AUTHENTICATION_FAILED,
    ),
    **dict.fromkeys(
        (
            "BadNodeIdUnknown", "BadNodeIdInvalid", "BadAttributeIdInvalid", "BadBrowseNameInvalid", "BadNotReadable",
            "BadNotWritable", "BadTypeMismatch", "BadOutOfRange", "BadIndexRangeInvalid", "BadBrowseDirectionInvalid",
            "BadContinuationPointInvalid", "BadHistoryOperationUnsupported", "BadServiceUnsupported",
            "BadNothingToDo", "BadMonitoredItemIdInvalid", "BadFilterNotAllowed",
        ),
        ErrorCategory.INVALID_REQUEST,
    ),
    **dict.fromkeys(
        (
            "BadTooManySessions", "BadTooManyOperations", "BadTooManySubscriptions", "BadTooManyPublishRequests",
            "BadTooManyMonitoredItems", "BadMaxConnectionsReached",
        ),
        ErrorCategory.RATE_LIMIT_EXCEEDED,
    ),
    **dict.fromkeys(("BadTimeout", "BadRequestTimeout"), ErrorCategory.TIMEOUT),
    **dict.fromkeys(
        (
            "BadCommunicationError", "BadNotConnected", "BadServerNotConnected", "BadConnectionClosed",
            "BadSessionIdInvalid", "BadSessionClosed", "BadSessionNotActivated", "BadSecureChannelIdInvalid",
            "BadSecureChannelClosed", "BadServerHalted", "BadShutdown", "BadInternalError", "BadOutOfMemory",
            "BadResourceUnavailable", "BadSubscriptionIdInvalid", "BadNoCommunication", "BadUnexpectedError",
            "BadTcpServerTooBusy", "BadServerTooBusy",
        ),
        ErrorCategory.SERVER_ERROR,
    ),
}


def category_for_opcua_status(name: str) -> ErrorCategory:
    """OPC UA StatusCode name -> category; an unlisted Bad code ends the unit of work (SYNC_FAILED)."""
    return OPCUA_STATUS_CATEGORIES.get(name, ErrorCategory.SYNC_FAILED)


def _classify_opcua(exc: BaseException, what: str, integration: str | None, operation: str | None) -> IntegrationError:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        # Loaded already: the exception came from asyncua.
        from asyncua.ua.status_codes import get_name_and_doc

        name, doc = get_name_and_doc(code)
        return make_error(
            category_for_opcua_status(name),
            f"{what}: OPC UA {name} (0x{code:08X}){': ' + doc if doc else ''}",
            code=name,
            integration=integration,
            operation=operation,
        )
    text = str(exc)
    if "endpoint" in text.lower() or "certificate" in text.lower():
        # e.g. "No matching endpoints": the server does not offer the security policy/mode we require.
        return AuthenticationFailed(
            f"{what}: OPC UA security setup refused ({text}); check the security policy, mode and certificates",
            code="OPCUA_SECURITY_MISMATCH",
            integration=integration,
            operation=operation,
        )
    return SyncFailed(f"{what}: {describe_exception(exc)}", code=type(exc).__name__, integration=integration, operation=operation)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


#: Codes that say "your incremental-sync token is gone" (Graph errors.md; Google answers plain 410 Gone).
RESYNC_CODES = frozenset({"resyncRequired", "syncStateNotFound"})
_AADSTS = re.compile(r"\bAADSTS(\d+)\b")


def aadsts_code(body: Any) -> str | None:
    """`AADSTS<n>` of an Entra ID (Azure AD) OAuth error body, else None."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        match = _AADSTS.search(str(body.get("error_description") or ""))
        if match:
            return f"AADSTS{match.group(1)}"
        codes = body.get("error_codes")
        if isinstance(codes, list) and codes:
            return f"AADSTS{codes[0]}"
    return None


# A body parser turns a system's error body into (code, message); SAP's OData envelope is one.
ErrorBodyParser = Callable[[Any], "tuple[str | None, str | None]"]


def _generic_body_parser(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            msg = err.get("message")
            if isinstance(msg, Mapping):
                msg = msg.get("value")
            return (str(err.get("code")) if err.get("code") is not None else None, str(msg) if msg else None)
        if isinstance(err, str):
            description = str(body.get("error_description") or err)
            aadsts = aadsts_code(body)
            if aadsts:
                # Entra ID appends trace and correlation ids on further lines; the first line says it all.
                first = description.replace("\r", "").split("\n", 1)[0].strip()
                return aadsts, first if aadsts in first else f"{aadsts}: {first}"
            return err, description
    return None, None


def request_snapshot(request: httpx.Request | None) -> dict[str, Any]:
    if request is None:
        return {}
    return {
        "method": request.method,
        "url": redact_url(str(request.url)),
        "headers": redact_headers(dict(request.headers)),
    }


def response_snapshot(response: httpx.Response, body: Any, limit: int = 2000) -> dict[str, Any]:
    if isinstance(body, (dict, list)):
        shown: Any = redact_mapping(body) if isinstance(body, dict) else body[:20]
    else:
        shown = redact_text((response.text if body is None else str(body))[:limit])
    return {"status_code": response.status_code, "headers": redact_headers(dict(response.headers)), "body": shown}


# Google APIs answer quota exhaustion with 403 (not 429) and say so only in `error.errors[].reason`.
GOOGLE_QUOTA_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def google_error_reason(body: Any) -> str | None:
    """`reason` of the first entry of a Google API error envelope ({"error": {"errors": [{"reason"}]}})."""
    if not isinstance(body, Mapping):
        return None
    err = body.get("error")
    errors = err.get("errors") if isinstance(err, Mapping) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) and errors[0].get("reason"):
        return str(errors[0]["reason"])
    return None


def classify_response(
    response: httpx.Response,
    *,
    body_parser: ErrorBodyParser | None = None,
    integration: str | None = None,
    operation: str | None = None,
) -> IntegrationError:
    """An error response -> a classified error with the remote code and message when the body has them."""
    category = category_for_status(response.status_code) or ErrorCategory.SYNC_FAILED
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    code, message = (body_parser or _generic_body_parser)(body) if body is not None else (None, None)
    if aadsts_code(body) is not None:
        # Entra ID answers a bad secret with 401 but an unknown client or scope with 400: all are credentials.
        category = ErrorCategory.AUTHENTICATION_FAILED
    reason = google_error_reason(body)
    if reason is not None:
        code = reason
        if response.status_code == 403 and reason in GOOGLE_QUOTA_REASONS:
            category = ErrorCategory.RATE_LIMIT_EXCEEDED
    if not message:
        text = response.text.strip().replace("\n", " ")
        message = text[:300] if text else response.reason_phrase or f"HTTP {response.status_code}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    cls: Callable[..., IntegrationError] = _CLASS_FOR[category]
    if response.status_code == 410 or code in RESYNC_CODES:
        cls = ResyncRequired
    return cls(
        f"{operation or 'request'} failed with HTTP {response.status_code}: {message}",
        code=code,
        status_code=response.status_code,
        retry_after_s=retry_after,
        request_data=request_snapshot(response.request if _has_request(response) else None),
        response_data=response_snapshot(response, body),
        integration=integration,
        operation=operation,
    )


def _has_request(response: httpx.Response) -> bool:
    try:
        response.request  # noqa: B018 - raises RuntimeError when the response was built without one
    except RuntimeError:
        return False
    return True


# Database errors that mean "the database did not do it" (gone, refused, silent, timed out, cancelled our
# statement, locked), as opposed to "it refused what we sent" (IntegrityError, ProgrammingError, DataError).
# Matched by module and class name through the class hierarchy, so that connectors need not import
# SQLAlchemy or a driver: psycopg's QueryCanceled (statement_timeout) and ConnectionTimeout are
# OperationalErrors; SQLAlchemy wraps them in its own OperationalError; its pool raises TimeoutError.
_DATABASE_UNAVAILABLE = {
    "sqlalchemy": frozenset({"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError"}),
    "psycopg": frozenset({"OperationalError", "InterfaceError"}),
    "sqlite3": frozenset({"OperationalError"}),
}


def is_database_unavailable(exc: BaseException) -> bool:
    """The database went away, did not answer in time, or cancelled our statement (DATABASE_UNAVAILABLE)."""
    for cls in type(exc).__mro__:
        names = _DATABASE_UNAVAILABLE.get(cls.__module__.split(".", 1)[0])
        if names is not None and cls.__name__ in names:
            return True
    return False


def classify_exception(
    exc: BaseException, *, integration: str | None = None, operation: str | None = None
) -> IntegrationError:
    """Any exception -> a classified IntegrationError (an IntegrationError passes through)."""
    if isinstance(exc, IntegrationError):
        if integration and not exc.integration:
            exc.integration = integration
        if operation and not exc.operation:
            exc.operation = operation
        return exc
    request = None
    if isinstance(exc, httpx.RequestError):
        try:
            request = exc.request
        except RuntimeError:
            request = None
    snapshot = request_snapshot(request)
    what = operation or "request"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        kind = type(exc).__name__
        return RequestTimeout(
            f"{what} timed out ({kind})", code=kind, request_data=snapshot, integration=integration, operation=operation
        )
    if isinstance(exc, httpx.HTTPStatusError):
        return classify_response(exc.response, integration=integration, operation=operation)
    if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
        return ServerError(
            f"{what}: cannot connect to the remote system ({exc}); is it reachable and is base_url right?",
            code="CONNECT_ERROR",
            request_data=snapshot,
            integration=integration,
            operation=operation,
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError | ConnectionError):
        return ServerError(
            f"{what}: the connection was dropped mid-response ({type(exc).__name__}: {exc})",
            code="CONNECTION_DROPPED",
            request_data=snapshot,
            integration=integration,
            operation=operation,
        )
    if type(exc).__module__.startswith("asyncua"):
        # Checked by module so that this core need not import asyncua (only the plant connector does).
        return _classify_opcua(exc, what, integration, operation)
    if is_database_unavailable(exc):
        return ServerError(
            f"{what}: the database is unavailable ({describe_exception(exc)})",
            code="DATABASE_UNAVAILABLE",
            integration=integration,
            operation=operation,
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return ServerError(
            f"{what}: the response body is not valid JSON ({exc})",
            code="MALFORMED_BODY",
            request_data=snapshot,
            integration=integration,
            operation=operation,
        )
    if isinstance(exc, httpx.RequestError):
        return ServerError(
            f"{what}: transport error ({type(exc).__name__}: {exc})",
            code=type(exc).__name__,
            request_data=snapshot,
            integration=integration,
            operation=operation,
        )
    return SyncFailed(f"{what}: {describe_exception(exc)}", code=type(exc).__name__, integration=integration, operation=operation)

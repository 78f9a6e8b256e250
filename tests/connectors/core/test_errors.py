from __future__ import annotations

import json
import pickle

import httpx
import pytest

from connectors.core.errors import (
    AuthenticationFailed,
    ErrorCategory,
    IntegrationError,
    RateLimitExceeded,
    Severity,
    classify_exception,
    classify_response,
    parse_retry_after,
)
from connectors.sap.odata import parse_sap_error

SAP_ERROR = {
    "error": {
        "code": "005056A509B11EE1BB8AF4A65EC3CA20",
        "message": {"lang": "en", "value": "Invalid parametertype used at function 'eq' (Position: 16)"},
        "innererror": {
            "transactionid": "25669476CF9401C0E00665F8B4DE9B04",
            "errordetails": [{"code": "SY/530", "message": "Filter syntax error", "severity": "error"}],
        },
    }
}


def _response(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "https://sap.example/sap/opu/odata/sap/API_BUSINESS_PARTNER/A_BusinessPartner?password=hunter2")
    content = json.dumps(body).encode() if body is not None else b"boom"
    return httpx.Response(status, content=content, headers=headers or {}, request=request)


@pytest.mark.parametrize(
    ("status", "category", "transient"),
    [
        (400, ErrorCategory.INVALID_REQUEST, False),
        (401, ErrorCategory.AUTHENTICATION_FAILED, False),
        (403, ErrorCategory.AUTHENTICATION_FAILED, False),
        (404, ErrorCategory.INVALID_REQUEST, False),
        (408, ErrorCategory.TIMEOUT, True),
        (412, ErrorCategory.INVALID_REQUEST, False),
        (429, ErrorCategory.RATE_LIMIT_EXCEEDED, True),
        (500, ErrorCategory.SERVER_ERROR, True),
        (503, ErrorCategory.SERVER_ERROR, True),
        (504, ErrorCategory.TIMEOUT, True),
    ],
)
def test_http_status_maps_to_category_and_transience(status: int, category: ErrorCategory, transient: bool) -> None:
    error = classify_response(_response(status))
    assert error.category is category
    assert error.transient is transient
    assert error.status_code == status


def test_sap_odata_error_body_gives_code_message_and_transaction() -> None:
    error = classify_response(_response(400, SAP_ERROR), body_parser=parse_sap_error, operation="read_customers")
    assert error.code == "005056A509B11EE1BB8AF4A65EC3CA20"
    assert "Invalid parametertype used at function 'eq'" in error.message
    assert "Filter syntax error" in error.message
    assert "25669476CF9401C0E00665F8B4DE9B04" in error.message
    assert error.response_data["body"]["error"]["code"] == SAP_ERROR["error"]["code"]


def test_error_snapshots_are_redacted_of_credentials() -> None:
    response = _response(401, {"error": "invalid_client"}, headers={"Set-Cookie": "SAP_SESSIONID=abc"})
    response.request.headers["Authorization"] = "Basic RFJZTUlYOnNlY3JldA=="
    error = classify_response(response)
    assert "hunter2" not in json.dumps(error.request_data)
    assert error.request_data["headers"]["authorization"] == "***"
    assert error.response_data["headers"]["set-cookie"] == "***"


def test_retry_after_header_is_parsed_including_zero() -> None:
    assert classify_response(_response(429, headers={"Retry-After": "7"})).retry_after_s == 7
    assert classify_response(_response(429, headers={"Retry-After": "0"})).retry_after_s == 0
    assert parse_retry_after("not a date") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize(
    ("exc", "category", "code"),
    [
        (httpx.ReadTimeout("slow"), ErrorCategory.TIMEOUT, "ReadTimeout"),
        (httpx.ConnectTimeout("slow"), ErrorCategory.TIMEOUT, "ConnectTimeout"),
        (httpx.ConnectError("refused"), ErrorCategory.SERVER_ERROR, "CONNECT_ERROR"),
        (httpx.RemoteProtocolError("peer closed"), ErrorCategory.SERVER_ERROR, "CONNECTION_DROPPED"),
        (json.JSONDecodeError("bad", "{", 0), ErrorCategory.SERVER_ERROR, "MALFORMED_BODY"),
        (KeyError("d"), ErrorCategory.SYNC_FAILED, "KeyError"),
    ],
)
def test_exceptions_are_classified(exc: Exception, category: ErrorCategory, code: str) -> None:
    error = classify_exception(exc, integration="sap", operation="read")
    assert error.category is category
    assert error.code == code
    assert error.integration == "sap"


def test_classified_error_passes_through_and_pickles() -> None:
    original = RateLimitExceeded("slow down", retry_after_s=3, status_code=429)
    assert classify_exception(original) is original
    copy = pickle.loads(pickle.dumps(original))
    assert isinstance(copy, RateLimitExceeded)
    assert copy.retry_after_s == 3 and copy.category is ErrorCategory.RATE_LIMIT_EXCEEDED


def test_authentication_failures_are_critical_and_never_transient() -> None:
    error = AuthenticationFailed("wrong password")
    assert error.severity is Severity.CRITICAL
    assert not error.transient
    assert "credentials" in error.remedy
    assert isinstance(error, IntegrationError)


def test_error_message_masks_bearer_tokens() -> None:
    error = classify_exception(ValueError("header was Bearer abcdefghijklmnop"))
    assert "abcdefghijklmnop" not in str(error)

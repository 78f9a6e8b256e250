"""The error ledger keeps each failure's stack trace (redacted, bounded) and its retry count; `drymix errors show` prints both."""

from __future__ import annotations

import json

from connectors.core.errors import InvalidRequest, ServerError, SyncFailed, classify_exception
from connectors.core.redact import register_secret
from hub.ledger.errors import STACK_TRACE_MAX, format_stack_trace, get_error, record_error
from tests.hub.cli.test_cli import drymix

# A value the hub loaded as a secret (every SecretStr it resolves is registered the same way).
REGISTERED = "h5-registered-secret-7Qx9"
# Secrets come from settings at run time, never from source lines (a traceback shows the source of each frame).
PASSWORDS = {"stored": "hunter2-Pa55word", "handled": "another-Pa55word", "shown": "shown-Pa55word"}


def _connect_to_erp(password: str) -> None:
    # The secrets reach the exception's message and the chained cause; a traceback has no locals to leak.
    try:
        raise ConnectionError(f"login refused for postgresql://erp:{password}@db.internal/erp")
    except ConnectionError as exc:
        raise RuntimeError(f"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig password={password} token={REGISTERED}") from exc


def test_stack_trace_is_stored_with_every_secret_redacted(db: str) -> None:
    register_secret(REGISTERED)
    try:
        _connect_to_erp(PASSWORDS["stored"])
    except RuntimeError as exc:
        error = classify_exception(exc, integration="sap", operation="read_customers")
        error_id = record_error(error, integration="sap", dataset="customers", retry_count=3, max_retries=2, exc=exc)
    row = get_error(error_id)
    trace = row.stack_trace or ""
    assert row.retry_count == 3
    # Where it broke: the innermost frame, the cause chain, both exception types.
    assert "in _connect_to_erp" in trace and "ConnectionError: login refused" in trace and "RuntimeError:" in trace
    assert "The above exception was the direct cause of the following exception" in trace
    for secret in ("hunter2-Pa55word", REGISTERED, "eyJhbGciOiJIUzI1NiJ9.payload.sig"):
        assert secret not in trace
        assert secret not in row.error_message
    assert "erp:***@db.internal" in trace and "password=***" in trace and "Bearer ***" in trace


def _even(depth: int) -> None:
    # Two functions in turn: Python folds a frame repeated in a row, not a pair of them.
    if depth == 0:
        raise ServerError("innermost frame failed: token=abcdef0123456789")
    _odd(depth - 1)


def _odd(depth: int) -> None:
    _even(depth - 1)


def test_stack_trace_keeps_the_innermost_frames_within_8_kb(db: str) -> None:
    try:
        _even(400)
    except ServerError as exc:
        error_id = record_error(exc, integration="sap", dataset="customers", exc=exc)
    trace = get_error(error_id).stack_trace or ""
    assert len(trace) <= STACK_TRACE_MAX
    assert trace.startswith("... ") and "characters of outer frames cut" in trace.splitlines()[0]
    # The tail survives whole: the deepest frame's raise and the message (redacted).
    assert 'raise ServerError("innermost frame failed: token=***' in trace
    assert trace.rstrip().endswith("innermost frame failed: token=***")
    assert "abcdef0123456789" not in trace


def test_an_error_built_in_an_except_block_tells_what_was_being_handled(db: str) -> None:
    try:
        _connect_to_erp(PASSWORDS["handled"])
    except RuntimeError:
        # As flows do for a configuration problem: an error built from the situation, never raised itself.
        built = InvalidRequest("lab instrument profiles are invalid", code="LAB_PROFILES_INVALID")
        error_id = record_error(built, integration="lab", dataset="lab_results", exc=built)
    trace = get_error(error_id).stack_trace or ""
    assert "in _connect_to_erp" in trace
    assert "During handling of the above exception, another exception occurred" in trace
    assert trace.rstrip().endswith("lab instrument profiles are invalid")
    assert "another-Pa55word" not in trace
    # Outside any handler an error that was never raised has no trace to tell.
    assert format_stack_trace(SyncFailed("nothing raised")) is None


def test_errors_show_prints_the_retry_count_and_the_stack_trace(db: str) -> None:
    try:
        _connect_to_erp(PASSWORDS["shown"])
    except RuntimeError as exc:
        error_id = record_error(classify_exception(exc, integration="sap"), integration="sap", dataset="customers",
                                retry_count=5, max_retries=2, exc=exc)
    shown = drymix("errors", "show", str(error_id), env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "retries in the run 5 (up to 2 allowed)" in shown.stdout
    assert "Stack trace" in shown.stdout and "in _connect_to_erp" in shown.stdout and "[bold]" not in shown.stdout
    assert "shown-Pa55word" not in shown.stdout
    as_json = json.loads(drymix("errors", "show", str(error_id), "--json").stdout)
    assert as_json["error"]["retry_count"] == 5
    assert "ConnectionError: login refused" in as_json["error"]["stack_trace"]

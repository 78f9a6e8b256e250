"""Debug mode's log: one redacted JSON line per call of an integration whose debug mode is on.

The hub decides which integrations are in debug mode (hub/core/settings.py `integration_debug_enabled`:
INTEGRATION_DEBUG for all, or one integration by `[<name>] debug = true`, `<NAME>_DEBUG=1`,
DEBUG_INTEGRATIONS or `drymix --debug <name>`) and hands a `DebugLog` only to those connectors; the
others get None and write nothing. Three kinds of entry share the file, told apart by `kind`:

    http       an HTTP request and its response (connectors/core/client.py): method, URL, headers, bodies
    opcua      an OPC UA read (connectors/plant/connector.py): node, value, status, latency
    lab_file   a lab export picked up (flows/collect_lab_results.py): path, size, the profile that read it

Every line is redacted as a whole (registered secret values, Authorization and the like, secret-named
parameters) after it is built, and bodies are cut to `body_limit` characters first.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from connectors.core.errors import request_snapshot, response_snapshot
from connectors.core.redact import redact_text

BODY_LIMIT = 4000
# Request bodies worth reading as text; anything else (document bytes, upload chunks) shows as its size only.
_TEXT_TYPES = ("json", "text/", "xml", "x-www-form-urlencoded", "multipart/mixed", "http")


class DebugLog:
    """Appends redacted entries to one file; thread-safe (a flow's tasks may call from several threads)."""

    def __init__(self, path: Path, *, body_limit: int = BODY_LIMIT) -> None:
        self.path = path
        self.body_limit = body_limit
        self._lock = threading.Lock()

    def write(self, integration: str, response: httpx.Response | None, request: httpx.Request, latency_s: float) -> None:
        """One HTTP call: the request with its body (bounded) and the response (status, headers, body bounded)."""
        snapshot = request_snapshot(request)
        body = self._request_body(request)
        if body is not None:
            snapshot["body"] = body
        entry: dict[str, Any] = {"kind": "http", "latency_ms": round(latency_s * 1000, 2), "request": snapshot}
        if response is not None:
            entry["response"] = response_snapshot(response, None, limit=self.body_limit)
        self._append(integration, entry)

    def event(self, integration: str, kind: str, fields: Mapping[str, Any]) -> None:
        """Anything else worth seeing in debug mode (an OPC UA read, a lab file pickup); long texts are cut to `body_limit`."""
        bounded = {k: v[: self.body_limit] if isinstance(v, str) else v for k, v in fields.items()}
        self._append(integration, {"kind": kind, **bounded})

    def _request_body(self, request: httpx.Request) -> str | None:
        try:
            content = request.content
        except httpx.RequestNotRead:
            return "<streamed body>"
        if not content:
            return None
        content_type = request.headers.get("content-type", "").lower()
        if not any(t in content_type for t in _TEXT_TYPES):
            return f"<{len(content)} bytes {content_type or 'of unknown type'}>"
        # Redacted before the cut (a cut through a secret would leave a part the patterns no longer know).
        text = redact_text(content[: self.body_limit * 2].decode("utf-8", errors="replace"))[: self.body_limit]
        return text + (f"... ({len(content)} bytes)" if len(content) > self.body_limit else "")

    def _append(self, integration: str, entry: dict[str, Any]) -> None:
        line = redact_text(json.dumps({"ts": time.time(), "integration": integration, **entry}, default=str))
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

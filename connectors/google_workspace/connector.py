"""Google Calendar connector: events inserted with our own ids, patched, cancelled, and read incrementally.

Declared on the shared core: one pooled IntegrationClient (retries with backoff and jitter, rate budget, metrics),
the JWT bearer grant of connectors/core/jwt_bearer.py, and the one error classifier (403 rateLimitExceeded /
userRateLimitExceeded and 429 -> RATE_LIMIT_EXCEEDED, retried; 410 -> ResyncRequired).

Incremental read (developers.google.com/calendar/api/guides/sync), declared on `EVENTS` and paged by the core's
`fetch_page`: send the saved `syncToken`; follow `nextPageToken`; the `nextSyncToken` of the LAST page is the new
cursor (`Stream.end_cursor`). A 410 (`ResyncRequired`) means the token is gone: the sync engine reads again as a
full sync (showDeleted, no token).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import SecretStr

from connectors.core.base import Connector, Stream
from connectors.core.client import IntegrationClient
from connectors.core.errors import InvalidRequest
from connectors.core.jwt_bearer import JWTBearerGrant
from connectors.core.paging import PagePosition, with_query

log = logging.getLogger(__name__)

INTEGRATION = "google_workspace"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/calendar.events",)
MAX_PAGE_SIZE = 2500


class PageTokenPaginator:
    """Google's paging: `nextPageToken` in the body becomes `pageToken` of the next request."""

    def start(self, url: str) -> PagePosition:
        return PagePosition(url)

    def next_position(self, position: PagePosition, body: Any, records: list[dict[str, Any]]) -> PagePosition | None:
        token = body.get("nextPageToken") if isinstance(body, dict) else None
        return PagePosition(with_query(position.url, pageToken=token)) if token else None


EVENTS = Stream(
    name="calendar_events",
    path="calendars/{calendar_id}/events",
    primary_key="id",
    cursor_field="syncToken",
    record_path=("items",),
    paginator=PageTokenPaginator(),
    end_cursor=("nextSyncToken", "sync_token"),
)


@dataclass(frozen=True)
class InsertResult:
    event: dict[str, Any]
    created: bool  # False: the id already existed (a retried insert whose first answer was lost)


class GoogleCalendarConnector(Connector):
    integration = INTEGRATION

    def __init__(self, client: IntegrationClient, *, calendar_id: str, page_size: int | None = None) -> None:
        super().__init__(client)
        self.calendar_id = calendar_id
        self.page_size = min(MAX_PAGE_SIZE, page_size or client.config.page_size)

    def __enter__(self) -> GoogleCalendarConnector:
        return self

    @property
    def auth(self) -> JWTBearerGrant:
        auth = self.client.http.auth
        assert isinstance(auth, JWTBearerGrant)
        return auth

    # -- Connector base -------------------------------------------------------------------------

    def _events_path(self, event_id: str | None = None) -> str:
        path = EVENTS.path.format(calendar_id=quote(self.calendar_id, safe=""))
        return f"{path}/{quote(event_id, safe='')}" if event_id else path

    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        url = with_query(self._events_path(), maxResults=self.page_size)
        token = (cursor or {}).get("sync_token")
        if token:
            return with_query(url, syncToken=token)
        # A full sync lists deleted events too, so links to events people deleted are seen as cancelled.
        return with_query(url, showDeleted="true")

    def connect(self) -> None:
        self.client.get_json(with_query(self._events_path(), maxResults=1), operation="connect")

    # -- reads ----------------------------------------------------------------------------------

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.get_json(self._events_path(event_id), operation="get_event"))
        except InvalidRequest as exc:
            if exc.status_code == 404:
                return None
            raise

    # -- writes ---------------------------------------------------------------------------------

    def insert_event(self, body: Mapping[str, Any]) -> InsertResult:
        """Insert with our own id; 409 duplicate means an earlier attempt got through: that is success."""
        if not body.get("id"):
            raise ValueError("insert_event needs the deterministic event id in body['id']")
        try:
            response = self.client.request(
                "POST",
                with_query(self._events_path(), sendUpdates="none"),
                operation="insert_event",
                content=orjson.dumps(dict(body)),
                headers={"Content-Type": "application/json"},
            )
        except InvalidRequest as exc:
            if exc.status_code != 409:
                raise
            existing = self.get_event(str(body["id"]))
            if existing is None:
                raise
            log.info("event %s already existed (an earlier insert got through)", body["id"])
            return InsertResult(existing, created=False)
        return InsertResult(orjson.loads(response.content), created=True)

    def patch_event(self, event_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Patch an event (404 / 410 deleted raise InvalidRequest / ResyncRequired to the caller)."""
        response = self.client.request(
            "PATCH",
            with_query(self._events_path(event_id), sendUpdates="none"),
            operation="patch_event",
            content=orjson.dumps(dict(body)),
            headers={"Content-Type": "application/json"},
        )
        return dict(orjson.loads(response.content))

    def cancel_event(self, event_id: str) -> dict[str, Any] | None:
        """Delete the event (Google keeps it as cancelled); already deleted or gone counts as done."""
        try:
            self.client.request("DELETE", with_query(self._events_path(event_id), sendUpdates="none"), operation="delete_event")
        except InvalidRequest as exc:
            if exc.status_code not in (404, 410):
                raise
        return self.get_event(event_id)


def sandbox_settings_env(base_url: str, key_file: Path | None = None, key_json: SecretStr | None = None) -> dict[str, str]:
    """Environment variables pointing the connector at a Google sandbox served at `base_url`."""
    env = {"GOOGLE_BASE_URL": f"{base_url.rstrip('/')}/calendar/v3/", "GOOGLE_TOKEN_URL": f"{base_url.rstrip('/')}/token"}
    if key_file is not None:
        env["GOOGLE_SERVICE_ACCOUNT_FILE"] = str(key_file)
    if key_json is not None:
        env["GOOGLE_SERVICE_ACCOUNT_JSON"] = key_json.get_secret_value()
    return env

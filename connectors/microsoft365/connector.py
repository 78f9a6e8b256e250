"""Microsoft 365 connector (Microsoft Graph): document uploads to a SharePoint library and Outlook calendar events.

Declared on the shared core: OAuth2 client credentials (token cached until shortly before expiry and
shared by every connector of the same app in the process), the one error taxonomy (Graph's envelope
parsed with `innerError` or `innererror`; Entra ID's AADSTS bodies become AUTHENTICATION_FAILED with
the code; 410 / `resyncRequired` / `syncStateNotFound` become `ResyncRequired`), and the core retry
that honours Retry-After on 429/503.

Code hooks local to Graph (api-contracts section 2):

- uploads: up to `simple_upload_max_bytes` by one PUT; larger files by an upload session whose
  fragments (multiples of 320 KiB) are read from disk one at a time and PUT to the pre-authenticated
  upload URL by a client that has no auth at all (an Authorization header there can cause a 401).
  After ANY failed fragment the connector asks the upload URL what it holds (`nextExpectedRanges`)
  and continues from there, so a fragment the server already stored is never sent again and an
  interrupted upload never restarts from zero; `on_progress` lets the caller persist the upload URL
  and the confirmed offset to resume in a later run.
- calendar: creates carry a `transactionId` (Graph's idempotency key), so a retried create returns
  the event made by the first attempt; delta reads follow `@odata.nextLink` to the page with the
  `@odata.deltaLink`, which is the cursor; `$batch` sends up to 20 requests per round trip and
  re-sends only the throttled ones after their Retry-After.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
import orjson

from connectors.core.base import Connector, Stream
from connectors.core.cache import TTLCache
from connectors.core.client import IntegrationClient
from connectors.core.config import CalendarOptions, ConflictPolicy, DocumentOptions
from connectors.core.errors import (
    IntegrationError,
    InvalidRequest,
    SyncFailed,
    classify_response,
)
from connectors.core.paging import NextLinkPaginator, Page, PagePosition, with_query
from connectors.core.retry import backoff_delay

log = logging.getLogger(__name__)

INTEGRATION = "microsoft365"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MAX_BATCH = 20
CONFLICT_POLICIES: tuple[str, ...] = ("replace", "rename", "fail")
_RETRY_STATUSES = frozenset({429, 503, 504})

#: Calendar view delta, declared like every other stream; `fetch_page` adds Graph's Prefer header. The last
#: page's deltaLink is the cursor of the next read.
CALENDAR_DELTA = Stream(
    name="calendar_events",
    path="users/{user}/calendarView/delta",
    primary_key="id",
    cursor_field="@odata.deltaLink",
    record_path=("value",),
    paginator=NextLinkPaginator(("@odata.nextLink",)),
    end_cursor=("@odata.deltaLink", "delta_link"),
)


def parse_graph_error(body: Any) -> tuple[str | None, str | None]:
    """Graph's envelope -> (code, message); the inner code (fragmentOverlap, ...) is appended to the message."""
    if not isinstance(body, Mapping):
        return None, None
    error = body.get("error")
    if isinstance(error, Mapping):
        code = str(error["code"]) if error.get("code") is not None else None
        message = str(error.get("message") or "") or None
        inner = error.get("innerError") or error.get("innererror")  # spelled both ways (errors.md)
        inner_code = inner.get("code") if isinstance(inner, Mapping) else None
        if inner_code and str(inner_code) != str(code) and not str(inner_code).isdigit():
            message = f"{message} (inner: {inner_code})" if message else str(inner_code)
        return code, message
    if isinstance(error, str):
        return error, str(body.get("error_description") or error)
    return None, None


# One token cache per (token URL, client): every connector of the app in this process shares the token.
_TOKEN_CACHES: dict[tuple[str, str], TTLCache[str, str]] = {}
_TOKEN_CACHES_LOCK = threading.Lock()


def shared_token_cache(token_url: str, client_id: str) -> TTLCache[str, str]:
    with _TOKEN_CACHES_LOCK:
        return _TOKEN_CACHES.setdefault((token_url, client_id), TTLCache(ttl_s=300))


@dataclass(frozen=True)
class UploadProgress:
    """Where an upload session stands: persist it to resume after an interruption."""

    upload_url: str
    confirmed: int  # bytes the server holds (the start of its first expected range)
    total: int
    expires_at: datetime | None = None


@dataclass(frozen=True)
class UploadedItem:
    id: str
    name: str
    size: int
    web_url: str
    etag: str | None
    created: bool  # False when an existing file was replaced
    method: str  # simple | session
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_graph(cls, body: Mapping[str, Any], *, status: int, method: str) -> UploadedItem:
        return cls(
            id=str(body["id"]),
            name=str(body.get("name", "")),
            size=int(body.get("size", 0)),
            web_url=str(body.get("webUrl", "")),
            etag=body.get("eTag"),
            created=status == 201,
            method=method,
            raw=dict(body),
        )


@dataclass(frozen=True)
class BatchRequest:
    id: str
    method: str
    url: str  # relative to the Graph version root, e.g. "/users/{u}/events"
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        headers = dict(self.headers)
        if self.body is not None:
            item["body"] = dict(self.body)
            headers.setdefault("Content-Type", "application/json")
        if headers:
            item["headers"] = headers
        return item


@dataclass
class BatchResult:
    id: str
    status: int
    body: Any
    headers: dict[str, str]
    error: IntegrationError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _first_expected(ranges: Any) -> int | None:
    """The start of the first range the server still expects ("26-", "26-99"); None when it expects nothing."""
    if not isinstance(ranges, list) or not ranges:
        return None
    starts = [int(str(r).split("-", 1)[0]) for r in ranges if str(r).split("-", 1)[0].isdigit()]
    return min(starts) if starts else None


def _graph_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Microsoft365Connector(Connector):
    """Graph for one tenant: one document library (drive) and one mailbox's calendar."""

    integration = INTEGRATION

    def __init__(
        self,
        client: IntegrationClient,
        upload_client: IntegrationClient,
        *,
        drive_id: str,
        calendar_user: str,
        documents: DocumentOptions | None = None,
        calendar: CalendarOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(client)
        self.upload_client = upload_client
        self.drive_id = drive_id
        self.calendar_user = calendar_user
        self.documents = documents or DocumentOptions()
        self.calendar = calendar or CalendarOptions()
        self._sleep = sleep
        self.chunks_sent = 0  # fragment PUTs that reached the wire (for tests and the benchmark)

    def close(self) -> None:
        self.client.close()
        self.upload_client.close()

    def connect(self) -> None:
        """Read the document library: proves the token endpoint, the secret, the permissions and the drive id."""
        if not self.drive_id:
            raise InvalidRequest("MICROSOFT365_DRIVE_ID is not set (see .env.example)", integration=self.integration)
        self.client.get_json(f"drives/{quote(self.drive_id, safe='')}", operation="test_connection")

    def first_url(self, stream: Stream, cursor: Mapping[str, Any] | None) -> str:
        """The saved deltaLink (`{"delta_link": ...}`), or a first (full) round over a window (`{"start": ..., "end": ...}`)."""
        if stream.name != CALENDAR_DELTA.name:
            raise InvalidRequest(f"unknown stream {stream.name}", integration=self.integration)
        if cursor and cursor.get("delta_link"):
            return str(cursor["delta_link"])
        if not cursor or not cursor.get("start") or not cursor.get("end"):
            raise InvalidRequest("a first delta read needs a window (start, end)", integration=self.integration)
        start, end = (_z(v) if isinstance(v, datetime) else str(v) for v in (cursor["start"], cursor["end"]))
        return with_query(stream.path.format(user=quote(self.calendar_user, safe="@")), startDateTime=start, endDateTime=end)

    def fetch_page(self, stream: Stream, position: PagePosition) -> Page:
        """A delta page, asked for in pages of `delta_page_size` with times in UTC; an expired token raises
        `ResyncRequired`."""
        if stream.name != CALENDAR_DELTA.name:
            return super().fetch_page(stream, position)
        headers = {"Prefer": f'odata.maxpagesize={self.calendar.delta_page_size}, outlook.timezone="UTC"'}
        body = self.client.get_json(position.url, operation="calendar_delta", headers=headers)
        records = body.get("value") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise SyncFailed("calendar delta page has no value list", integration=self.integration, operation="calendar_delta")
        following = stream.paginator.next_position(position, body, records)
        delta = body.get("@odata.deltaLink")
        end_cursor = {"delta_link": str(delta)} if following is None and delta else None
        return Page(position=position, records=records, next=following, end_cursor=end_cursor)

    # ---------------------------------------------------------------------------------------- documents

    def _item_path(self, folder: str, name: str) -> str:
        path = "/".join(p for p in [*folder.strip("/").split("/"), name] if p)
        return f"drives/{quote(self.drive_id, safe='')}/root:/{quote(path, safe='/')}:"

    def get_item_by_path(self, folder: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.get_json(self._item_path(folder, name), operation="get_item"))
        except IntegrationError as error:
            if error.status_code == 404:
                return None
            raise

    def upload(
        self,
        source: str | Path | bytes,
        folder: str,
        name: str,
        *,
        conflict: ConflictPolicy | None = None,
        resume_url: str | None = None,
        on_progress: Callable[[UploadProgress], None] | None = None,
    ) -> UploadedItem:
        """Upload a file (a path, streamed from disk, or bytes) to `folder/name` in the drive."""
        policy = conflict or self.documents.default_conflict_policy
        if policy not in CONFLICT_POLICIES:
            raise InvalidRequest(f"conflict policy must be one of {', '.join(CONFLICT_POLICIES)}, not {policy!r}", integration=self.integration)
        with _open_source(source) as (stream, size):
            if size > self.documents.max_file_bytes:
                raise InvalidRequest(f"{name} is {size} bytes, more than max_file_bytes ({self.documents.max_file_bytes})", integration=self.integration)
            if size <= self.documents.simple_upload_max_bytes and not resume_url:
                return self._simple_upload(stream, size, folder, name, policy)
            return self._session_upload(stream, size, folder, name, policy, resume_url, on_progress)

    def _simple_upload(self, stream: BinaryIO, size: int, folder: str, name: str, policy: ConflictPolicy) -> UploadedItem:
        content = stream.read()
        digest = hashlib.sha256(content).hexdigest().upper()
        url = f"{self._item_path(folder, name)}/content"
        attempt = 0
        while True:
            try:
                response = self.client.send_once(
                    "PUT", url, operation="upload_simple", content=content,
                    params={"@microsoft.graph.conflictBehavior": policy},
                    headers={"Content-Type": "application/octet-stream"},
                )
                return UploadedItem.from_graph(orjson.loads(response.content), status=response.status_code, method="simple")
            except IntegrationError as error:
                attempt += 1
                if not error.transient or attempt > self.client.retry.max_retries:
                    raise
                if error.status_code is None and policy != "replace":
                    # The answer was lost: the file may be stored. Under rename a blind retry would add "name 1.pdf".
                    found = self.get_item_by_path(folder, name)
                    if found is not None and _same_content(found, size, digest):
                        log.info("simple upload of %s: answer lost but the file is there; not sending it again", name)
                        return UploadedItem.from_graph(found, status=201, method="simple")
                self._sleep(backoff_delay(attempt, self.client.retry, retry_after_s=error.retry_after_s))

    def create_upload_session(self, folder: str, name: str, size: int, policy: ConflictPolicy) -> UploadProgress:
        body = {"item": {"@microsoft.graph.conflictBehavior": policy, "name": name, "fileSize": size}}
        response = self.client.request("POST", f"{self._item_path(folder, name)}/createUploadSession", json=body, operation="create_upload_session")
        data = orjson.loads(response.content)
        start = _first_expected(data.get("nextExpectedRanges")) or 0
        return UploadProgress(str(data["uploadUrl"]), start, size, _graph_time(data.get("expirationDateTime")))

    def upload_status(self, upload_url: str) -> tuple[int | None, datetime | None]:
        """(first byte the server still expects, session expiry) from GET on the upload URL."""
        data = self.upload_client.get_json(upload_url, operation="upload_status")
        return _first_expected(data.get("nextExpectedRanges")), _graph_time(data.get("expirationDateTime"))

    def cancel_upload(self, upload_url: str) -> None:
        try:
            self.upload_client.request("DELETE", upload_url, operation="cancel_upload")
        except IntegrationError as error:
            if error.status_code != 404:
                raise

    def _session_upload(
        self,
        stream: BinaryIO,
        size: int,
        folder: str,
        name: str,
        policy: ConflictPolicy,
        resume_url: str | None,
        on_progress: Callable[[UploadProgress], None] | None,
    ) -> UploadedItem:
        if size == 0:
            raise InvalidRequest(f"{name} is empty: an upload session cannot carry 0 bytes", integration=self.integration)
        progress: UploadProgress | None = None
        if resume_url:
            try:
                offset, expires = self.upload_status(resume_url)
                progress = UploadProgress(resume_url, offset if offset is not None else size, size, expires)
                log.info("resuming upload of %s at byte %d of %d", name, progress.confirmed, size)
            except IntegrationError as error:
                if error.status_code != 404:
                    raise
                log.warning("upload session of %s expired or was completed; looking for the file, else starting a new session", name)
                found = self.get_item_by_path(folder, name)
                if found is not None and int(found.get("size", -1)) == size and _fresh(found, stream, size):
                    return UploadedItem.from_graph(found, status=201, method="session")
        if progress is None:
            progress = self.create_upload_session(folder, name, size, policy)
        if on_progress is not None:
            on_progress(progress)
        failures = 0
        restarted = False
        chunk_size = self.documents.chunk_bytes
        while True:
            offset = progress.confirmed
            if offset >= size:
                # Every byte is stored but the answer with the item was lost: the file is committed.
                found = self.get_item_by_path(folder, name)
                if found is None:
                    raise SyncFailed(f"upload of {name}: every byte was accepted but the item is not at {folder}/{name}", integration=self.integration)
                return UploadedItem.from_graph(found, status=201, method="session")
            length = min(chunk_size, size - offset)
            stream.seek(offset)
            chunk = stream.read(length)
            if len(chunk) != length:
                raise SyncFailed(f"{name} changed on disk during the upload (short read at byte {offset})", integration=self.integration)
            try:
                self.chunks_sent += 1
                response = self.upload_client.send_once(
                    "PUT", progress.upload_url, operation="upload_chunk", content=chunk,
                    headers={"Content-Range": f"bytes {offset}-{offset + length - 1}/{size}", "Content-Type": "application/octet-stream"},
                )
            except IntegrationError as error:
                failures += 1
                if error.status_code == 404 and not restarted:
                    # The server dropped the session (expired while we were away): what it held is gone with
                    # it, so this is the one case that starts from zero, in a new session, once.
                    log.warning("upload session of %s is gone (%s): starting a new session", name, error.message)
                    restarted = True
                    progress = self.create_upload_session(folder, name, size, policy)
                    if on_progress is not None:
                        on_progress(progress)
                    continue
                # 416: the server holds (part of) this range already; anything transient: we do not know.
                # Either way ask it what it holds rather than resending blindly.
                if (not error.transient and error.status_code != 416) or failures > self.upload_client.retry.max_retries:
                    if error.status_code == 404:
                        raise SyncFailed(f"upload session of {name} expired or was cancelled: {error.message}", code="uploadSessionNotFound",
                                         integration=self.integration) from error
                    raise
                if error.transient:
                    self._sleep(backoff_delay(failures, self.upload_client.retry, retry_after_s=error.retry_after_s))
                try:
                    expected, expires = self.upload_status(progress.upload_url)
                except IntegrationError as status_error:
                    if status_error.status_code != 404:
                        raise
                    expected, expires = size, None  # the session is gone: it completed with the last fragment
                progress = UploadProgress(progress.upload_url, expected if expected is not None else size, size, expires or progress.expires_at)
                if on_progress is not None:
                    on_progress(progress)
                continue
            failures = 0
            data = orjson.loads(response.content) if response.content else {}
            if response.status_code in (200, 201):
                return UploadedItem.from_graph(data, status=response.status_code, method="session")
            expected = _first_expected(data.get("nextExpectedRanges"))
            progress = UploadProgress(progress.upload_url, expected if expected is not None else offset + length, size,
                                      _graph_time(data.get("expirationDateTime")) or progress.expires_at)
            if on_progress is not None:
                on_progress(progress)

    # ----------------------------------------------------------------------------------------- calendar

    @property
    def _user_path(self) -> str:
        if not self.calendar_user:
            raise InvalidRequest("MICROSOFT365_CALENDAR_USER is not set (see .env.example)", integration=self.integration)
        return f"users/{quote(self.calendar_user, safe='@')}"

    def create_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """POST an event; with a `transactionId` a retried create returns the first attempt's event."""
        if not event.get("transactionId"):
            raise InvalidRequest("events the hub creates carry a transactionId (idempotency)", integration=self.integration)
        response = self.client.request("POST", f"{self._user_path}/events", json=dict(event), operation="create_event",
                                       headers={"Prefer": 'outlook.timezone="UTC"'})
        return dict(orjson.loads(response.content))

    def update_event(self, event_id: str, changes: Mapping[str, Any], *, etag: str | None = None) -> dict[str, Any]:
        headers = {"Prefer": 'outlook.timezone="UTC"'}
        if etag:
            headers["If-Match"] = etag
        response = self.client.request("PATCH", f"{self._user_path}/events/{quote(event_id, safe='')}", json=dict(changes),
                                       operation="update_event", headers=headers)
        return dict(orjson.loads(response.content))

    def delete_event(self, event_id: str) -> bool:
        """Delete an event; False when it was already gone (a retry after a lost answer, or people deleted it)."""
        try:
            self.client.request("DELETE", f"{self._user_path}/events/{quote(event_id, safe='')}", operation="delete_event")
        except IntegrationError as error:
            if error.status_code == 404:
                return False
            raise
        return True

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.get_json(f"{self._user_path}/events/{quote(event_id, safe='')}", operation="get_event",
                                             headers={"Prefer": 'outlook.timezone="UTC"'}))
        except IntegrationError as error:
            if error.status_code == 404:
                return None
            raise

    # -------------------------------------------------------------------------------------------- batch

    def batch(self, requests: Sequence[BatchRequest]) -> list[BatchResult]:
        """Send requests in JSON batches of at most 20; throttled items (429/503/504) are re-sent after their
        Retry-After, the others come back as results (errors classified)."""
        results: dict[str, BatchResult] = {}
        for start in range(0, len(requests), MAX_BATCH):
            pending = list(requests[start : start + MAX_BATCH])
            attempt = 0
            while pending:
                answered = self._batch_round(pending)
                retry: list[BatchRequest] = []
                wait = 0.0
                for request in pending:
                    result = answered[request.id]
                    if result.status in _RETRY_STATUSES and attempt < self.client.retry.max_retries:
                        retry.append(request)
                        if result.error is not None and result.error.retry_after_s:
                            wait = max(wait, result.error.retry_after_s)
                    else:
                        results[request.id] = result
                if retry:
                    attempt += 1
                    self.client.metrics.record_retry(self.integration, "batch")
                    self._sleep(backoff_delay(attempt, self.client.retry, retry_after_s=wait or None))
                pending = retry
        return [results[r.id] for r in requests]

    def _batch_round(self, requests: list[BatchRequest]) -> dict[str, BatchResult]:
        response = self.client.request("POST", "$batch", json={"requests": [r.to_json() for r in requests]}, operation="batch")
        data = orjson.loads(response.content)
        by_id = {str(r.id): r for r in requests}
        answered: dict[str, BatchResult] = {}
        for item in data.get("responses", []):
            rid = str(item.get("id"))
            if rid not in by_id:
                continue
            status = int(item.get("status", 0))
            headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
            body = item.get("body")
            error = None
            if not 200 <= status < 300:
                synthetic = httpx.Response(status, headers=headers, content=orjson.dumps(body) if body is not None else b"")
                error = classify_response(synthetic, body_parser=parse_graph_error, integration=self.integration,
                                          operation=f"batch:{by_id[rid].method} {by_id[rid].url.split('?')[0]}")
            answered[rid] = BatchResult(rid, status, body, headers, error)
        for rid in by_id:
            if rid not in answered:
                answered[rid] = BatchResult(rid, 0, None, {}, SyncFailed(f"batch answer has no response for request {rid}", integration=self.integration))
        return answered

    def create_events(self, events: Sequence[Mapping[str, Any]]) -> list[BatchResult]:
        """Create many events in $batch round trips (20 per request); each carries its transactionId."""
        requests = []
        for i, event in enumerate(events):
            if not event.get("transactionId"):
                raise InvalidRequest("events the hub creates carry a transactionId (idempotency)", integration=self.integration)
            requests.append(BatchRequest(str(i + 1), "POST", f"/{self._user_path}/events", body=event,
                                         headers={"Prefer": 'outlook.timezone="UTC"'}))
        return self.batch(requests)


def _z(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _same_content(item: Mapping[str, Any], size: int, sha256_upper: str) -> bool:
    if int(item.get("size", -1)) != size:
        return False
    hashes = (item.get("file") or {}).get("hashes") or {}
    remote = hashes.get("sha256Hash")
    return remote is None or str(remote).upper() == sha256_upper


def _fresh(item: Mapping[str, Any], stream: BinaryIO, size: int) -> bool:
    """Whether a found item holds our bytes (by sha256 when Graph gives one; SharePoint may give only quickXorHash)."""
    remote = ((item.get("file") or {}).get("hashes") or {}).get("sha256Hash")
    if remote is None:
        return True
    digest = hashlib.sha256()
    stream.seek(0)
    for block in iter(lambda: stream.read(1024 * 1024), b""):
        digest.update(block)
    return digest.hexdigest().upper() == str(remote).upper()


class _open_source:  # noqa: N801 - used as a context manager like open()
    """A binary stream and its size for a path (streamed from disk) or bytes."""

    def __init__(self, source: str | Path | bytes) -> None:
        self.source = source
        self._fh: BinaryIO | None = None

    def __enter__(self) -> tuple[BinaryIO, int]:
        if isinstance(self.source, bytes | bytearray | memoryview):
            data = bytes(self.source)
            self._fh = io.BytesIO(data)
            return self._fh, len(data)
        path = Path(self.source)
        if not path.is_file():
            raise InvalidRequest(f"file {path} does not exist or is not a file", integration=INTEGRATION)
        self._fh = path.open("rb")
        return self._fh, os.fstat(self._fh.fileno()).st_size

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()

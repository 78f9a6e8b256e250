"""Simulator of the Microsoft 365 subset the hub uses: the Entra ID token endpoint and Microsoft Graph.

Token (api-contracts section 2)::

    POST /{tenant}/oauth2/v2.0/token     client credentials (client_id + client_secret in the form body,
                                         or HTTP Basic), scope https://graph.microsoft.com/.default

Errors answer like Entra ID: ``{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid
client secret provided. ...\\r\\nTrace ID: ...", "error_codes": [7000215], ...}`` (unknown tenant 90002,
unknown client 700016, bad secret 7000215, bad scope 1002012, wrong grant 70003).

Graph (``/v1.0``, ``Authorization: Bearer``; every error uses ``{"error": {"code", "message",
"innerError": {"request-id", "date", "client-request-id"}}}``)::

    GET    /drives/{drive}                                         the document library
    GET    /drives/{drive}/root:/{path}:  | /items/{id}            a drive item
    PUT    /drives/{drive}/root:/{folder}/{name}:/content          simple upload (up to 4 MB here)
    PUT    /drives/{drive}/items/{parent}:/{name}:/content
    POST   /drives/{drive}/root:/{folder}/{name}:/createUploadSession   (also items/{parent}:/{name}:)
    PUT    {uploadUrl}  GET {uploadUrl}  DELETE {uploadUrl}        upload session (NO Authorization header)
    POST   /users/{user}/events | /users/{user}/calendar/events    create (transactionId = idempotency)
    GET | PATCH | DELETE /users/{user}/events/{id}                 If-Match on PATCH/DELETE (412)
    GET    /users/{user}/calendarView?startDateTime=&endDateTime=  $top paging with @odata.nextLink
    GET    /users/{user}/calendarView/delta?startDateTime=&endDateTime=   then @odata.nextLink /
                                                                   @odata.deltaLink ($skiptoken/$deltatoken)
    POST   /$batch                                                 JSON batching, at most 20 requests

Upload sessions check ``Content-Range`` (inclusive end, same total each time, sequential fragments,
multiples of 320 KiB except the last, < 60 MiB per request) and answer 202 with ``nextExpectedRanges``,
201 with the driveItem on the last byte (409 ``nameAlreadyExists`` under ``fail``), 416 on a fragment
already received, 401 when an Authorization header is sent, 404 ``uploadSessionNotFound`` when expired.
Every received range is counted (``GET /_sandbox/microsoft365/uploads``) so tests can prove that no chunk
arrived twice.

Shared fault switches: ``rate_limit`` answers Graph's 429 ``TooManyRequests`` with Retry-After,
``error_5xx`` 503 ``serviceNotAvailable`` (with Retry-After when set), ``expire_tokens`` 401
``InvalidAuthenticationToken``. Simulator switches (``POST /_sandbox/microsoft365/switches``): token
lifetime, delta-token lifetime, the 410 code of an expired delta token, simple-upload limit, default page
size, and ``people_edits_per_delta`` (people move or cancel that many events before each delta round).
Control routes also expire tokens or delta tokens now, make people edit events, and interrupt an upload
after N chunks (the chunk is stored but the answer is lost, or the request is lost before it arrives).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sandbox.core import (
    FaultSwitches,
    Headers,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    control_json_body,
    serve_main,
    server_parser,
)

logger = logging.getLogger(__name__)

GRAPH_PREFIX = "/v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
CHUNK_UNIT = 320 * 1024
MAX_FRAGMENT = 60 * 1024 * 1024
MAX_BATCH = 20
FORBIDDEN_NAME_CHARS = frozenset('"*:<>?/\\|')
RESERVED_NAMES = re.compile(r"^(\.lock|CON|PRN|AUX|NUL|COM\d|LPT\d|desktop\.ini)$", re.IGNORECASE)
MAX_PATH = 400
# Windows zone names Outlook uses -> IANA (a subset; IANA names are accepted as they are).
WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "India Standard Time": "Asia/Kolkata",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Arabian Standard Time": "Asia/Dubai",
    "Singapore Standard Time": "Asia/Singapore",
    "Eastern Standard Time": "America/New_York",
    "Pacific Standard Time": "America/Los_Angeles",
}

CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
ROOT_PATH_OP = re.compile(r"^/drives/([^/]+)/root:(/.+?):/(content|createUploadSession)$")
ITEM_PATH_OP = re.compile(r"^/drives/([^/]+)/items/([^/:]+):/(.+?):/(content|createUploadSession)$")
ROOT_PATH_GET = re.compile(r"^/drives/([^/]+)/root:(/.*?):?$")
ITEM_GET = re.compile(r"^/drives/([^/]+)/items/([^/:]+)$")
DRIVE_GET = re.compile(r"^/drives/([^/]+)$")
EVENTS = re.compile(r"^/users/([^/]+)/(?:calendar/)?events$")
EVENT = re.compile(r"^/users/([^/]+)/(?:calendar/)?events/([^/]+)$")
CALENDAR_VIEW = re.compile(r"^/users/([^/]+)/(?:calendar/)?calendarView$")
CALENDAR_DELTA = re.compile(r"^/users/([^/]+)/(?:calendar/)?calendarView/delta$")
TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
UPLOAD_PATH = re.compile(r"^/_upload/([A-Za-z0-9_-]+)$")


def _graph_id(prefix: str = "AAMkAD") -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(33)).decode().rstrip("=")


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _graph_local(when: datetime, zone: str) -> str:
    """Graph's dateTimeTimeZone text: local wall time with seven fraction digits, no offset."""
    local = when.astimezone(ZoneInfo(WINDOWS_ZONES.get(zone, zone)))
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0"


class GraphError(Exception):
    """A Graph error answered with the documented envelope."""

    def __init__(self, status: int, code: str, message: str, *, inner_code: str | None = None,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code
        self.headers = list(headers)

    def response(self) -> SandboxResponse:
        return graph_error(self.status, self.code, self.message, inner_code=self.inner_code, headers=self.headers)


def graph_error(status: int, code: str, message: str, *, inner_code: str | None = None,
                headers: Sequence[tuple[str, str]] = ()) -> SandboxResponse:
    inner: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }
    if inner_code:
        inner["code"] = inner_code
    return SandboxResponse.json(status, {"error": {"code": code, "message": message, "innerError": inner}}, headers)


def aad_error(status: int, error: str, code: int, text: str) -> SandboxResponse:
    """Entra ID's OAuth error body (MSAL's ServerAuthorizationTokenResponse shape)."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    return SandboxResponse.json(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now:%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [code],
        "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    })


def name_problem(name: str) -> str | None:
    """Why SharePoint / OneDrive for Business refuses a file or folder name, or None."""
    if not name or name.strip() != name:
        return "names cannot be empty or begin or end with a space"
    bad = sorted({c for c in name if c in FORBIDDEN_NAME_CHARS or ord(c) < 32})
    if bad:
        return f"the name contains characters that are not allowed: {' '.join(bad)}"
    if RESERVED_NAMES.match(name) or name.startswith("~$") or "_vti_" in name.lower():
        return f"'{name}' is a reserved name"
    if name.endswith("."):
        return "names cannot end with a period"
    return None


@dataclass
class DriveItem:
    id: str
    name: str
    parent_id: str | None
    path: str  # "/ERP/Invoices/INV-1.pdf" ("" for the root)
    folder: bool
    content: bytes = b""
    mime_type: str = "application/octet-stream"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: int = 1


@dataclass
class UploadSession:
    id: str
    drive_id: str
    parent_id: str
    name: str
    conflict: str
    file_size: int | None
    expires: datetime
    total: int | None = None
    received: bytearray = field(default_factory=bytearray)
    ranges: list[tuple[int, int]] = field(default_factory=list)  # every fragment that was stored
    chunk_puts: int = 0
    committed: bool = False


@dataclass
class Event:
    id: str
    user: str
    subject: str
    body: dict[str, Any]
    start: datetime
    end: datetime
    start_zone: str
    end_zone: str
    location: dict[str, Any]
    attendees: list[dict[str, Any]]
    is_all_day: bool
    show_as: str
    categories: list[str]
    transaction_id: str | None
    created: datetime
    modified: datetime
    seq: int
    change_key: str
    is_cancelled: bool = False
    importance: str = "normal"
    sensitivity: str = "normal"
    ical_uid: str = field(default_factory=lambda: "040000008200E00074C5B7101A82E008" + secrets.token_hex(28).upper())


@dataclass
class DeltaState:
    user: str
    start: datetime
    end: datetime
    since_seq: int | None  # None: the first (full) round
    upto_seq: int
    issued: float
    offset: int = 0


@dataclass
class Switches:
    """Simulator-specific behaviour (``POST /_sandbox/microsoft365/switches``)."""

    token_lifetime_s: int = 3599
    delta_token_ttl_s: float = 7 * 24 * 3600.0
    expired_delta_code: str = "syncStateNotFound"  # or resyncRequired
    simple_upload_limit: int = 4 * 1024 * 1024
    upload_session_ttl_s: float = 3600.0
    default_page_size: int = 50
    people_edits_per_delta: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UploadInterrupt:
    after_chunks: int
    mode: str  # lose_response: stored, answer lost | lose_request: dropped before it arrives
    remaining: int = 1


class Microsoft365Sandbox(Simulator):
    """A tenant with one app registration, one document library and calendars, kept in memory."""

    name = "microsoft365"

    def __init__(
        self,
        *,
        tenant_id: str = "8f5e2c1a-6b3d-4e7f-9a10-3c2d1e0f4a5b",
        client_id: str = "5b1f8c2e-3d4a-4b6c-8e9f-0a1b2c3d4e5f",
        client_secret: str = "sandbox-graph-secret",
        drive_id: str = "b!DrYmIx-ErPdOcS-LiBrArY0000000000000000000000000000000000000",
        users: Sequence[str] = ("planning@drymix.example", "sitevisits@drymix.example"),
        folders: Sequence[str] = ("ERP/Test Certificates", "ERP/Delivery Challans", "ERP/Invoices"),
        seed: int = 7,
        events_per_user: int = 12,
        clock: Callable[[], float] = time.time,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(faults=faults)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.drive_id = drive_id
        self.users = {u.lower(): str(uuid.uuid5(uuid.NAMESPACE_DNS, u)) for u in users}
        self.switches = Switches()
        self._clock = clock
        self._rng = random.Random(seed)
        self.tokens: dict[str, float] = {}  # access token -> expiry (epoch s)
        self.token_requests = 0
        self.items: dict[str, DriveItem] = {}
        self.sessions: dict[str, UploadSession] = {}
        self.events: dict[str, Event] = {}
        self.tombstones: dict[str, tuple[str, int]] = {}  # deleted event id -> (user, seq)
        self.transactions: dict[tuple[str, str], str] = {}  # (user, transactionId) -> event id
        self.delta_tokens: dict[str, DeltaState] = {}
        self.skip_tokens: dict[str, DeltaState] = {}
        self.seq = 0
        self.people_edits: list[dict[str, Any]] = []
        self.interrupt: UploadInterrupt | None = None
        self.completed_sessions: list[UploadSession] = []
        self.stats: dict[str, int] = {"simple_uploads": 0, "chunk_puts": 0, "duplicate_ranges": 0, "events_created": 0,
                                      "batch_requests": 0, "delta_calls": 0, "uploads_with_authorization": 0}
        root = DriveItem(id="01ROOT" + secrets.token_hex(13).upper(), name="root", parent_id=None, path="", folder=True)
        self.root = root
        self.items[root.id] = root
        for folder in folders:
            self._ensure_folder(folder)
        for user in users:
            self._seed_events(user.lower(), events_per_user)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- seed data ---------------------------------------------------------------------------------

    def _seed_events(self, user: str, count: int) -> None:
        """Realistic calendar content, dirty cases included (all-day, other zones, no location, Hindi text)."""
        sites = ["Skyline Towers, Whitefield, Bengaluru", "Metro Depot 4, Hinjewadi, Pune", "Lodha Park Site B, Worli, Mumbai",
                 "", "Plant 2 - Mixer line", "साइट कार्यालय, नोएडा सेक्टर 62"]
        subjects = ["Site visit: tile adhesive trial", "Delivery window: 24 t dry mix", "Plant maintenance: mixer 2 liners",
                    "Customer call: Prestige Group", "Quality audit - BIS", "दैनिक उत्पादन समीक्षा"]
        base = self.now().replace(minute=0, second=0, microsecond=0)
        for i in range(count):
            start = base + timedelta(days=self._rng.randint(-3, 20), hours=self._rng.randint(-6, 6))
            all_day = i % 7 == 3
            if all_day:
                start = start.replace(hour=0)
                end = start + timedelta(days=1)
            else:
                end = start + timedelta(minutes=self._rng.choice([30, 60, 90, 240]))
            zone = "India Standard Time" if i % 4 and not all_day else "UTC"
            self._store_event(user, {
                "subject": subjects[i % len(subjects)],
                "body": {"contentType": "html", "content": f"<p>Seeded appointment {i}</p>"},
                "start": {"dateTime": _graph_local(start, zone), "timeZone": zone},
                "end": {"dateTime": _graph_local(end, zone), "timeZone": zone},
                "location": {"displayName": sites[i % len(sites)]},
                "isAllDay": all_day,
                "showAs": "busy",
            }, None)

    def _ensure_folder(self, path: str) -> DriveItem:
        parent = self.root
        for part in [p for p in path.strip("/").split("/") if p]:
            child = self._child(parent.id, part)
            if child is None:
                child = DriveItem(id="01" + secrets.token_hex(16).upper(), name=part, parent_id=parent.id,
                                  path=f"{parent.path}/{part}", folder=True)
                self.items[child.id] = child
            elif not child.folder:
                raise GraphError(409, "nameAlreadyExists", f"A file named '{part}' exists where a folder is needed.")
            parent = child
        return parent

    def _child(self, parent_id: str, name: str) -> DriveItem | None:
        lname = name.lower()  # SharePoint names are case-insensitive
        for item in self.items.values():
            if item.parent_id == parent_id and item.name.lower() == lname:
                return item
        return None

    # -- fault layer answers -----------------------------------------------------------------------

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        return graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        return SandboxResponse.json(429, {"error": {
            "code": "TooManyRequests", "message": "Please retry again later.",
            "innerError": {"code": "429", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                           "message": "Please retry after", "request-id": str(uuid.uuid4()), "status": "429"},
        }}, headers)

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        if status == 503:
            return graph_error(503, "serviceNotAvailable", "The service is temporarily unavailable. Please retry later.", headers=headers)
        if status == 504:
            return graph_error(504, "gatewayTimeout", "The gateway timed out.", headers=headers)
        return graph_error(status, "generalException", "An unspecified error has occurred.", headers=headers)

    # -- routing -----------------------------------------------------------------------------------

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        try:
            token = TOKEN_PATH.match(req.path)
            if token is not None:
                return self._token(req, token.group(1))
            upload = UPLOAD_PATH.match(req.path)
            if upload is not None:
                return self._upload_url(req, upload.group(1))
            if not req.path.startswith(GRAPH_PREFIX + "/"):
                raise GraphError(400, "BadRequest", f"Invalid version: {req.path.split('/')[1] or '(none)'}")
            self._authenticate(req.headers)
            path = req.path[len(GRAPH_PREFIX):]
            if path == "/$batch" and req.method == "POST":
                return self._batch(req)
            return self._route(req.method, path, req.query, req.headers, req.body, req.base_url)
        except GraphError as error:
            return error.response()

    def _authenticate(self, headers: Headers) -> None:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        expiry = self.tokens.get(token.strip())
        if expiry is None:
            raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed, there are no dots (.).")
        if expiry <= self._clock():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")

    def _route(self, method: str, path: str, query: list[tuple[str, str]], headers: Headers, body: bytes,
               base_url: str) -> SandboxResponse:
        q = dict(query)
        m = DRIVE_GET.match(path)
        if m and method == "GET":
            self._drive(m.group(1))
            return SandboxResponse.json(200, self._drive_json())
        m = ROOT_PATH_OP.match(path)
        if m:
            self._drive(m.group(1))
            folder, _, name = m.group(2).rpartition("/")
            return self._drive_op(method, m.group(3), folder, None, name, q, body, base_url)
        m = ITEM_PATH_OP.match(path)
        if m:
            self._drive(m.group(1))
            return self._drive_op(method, m.group(4), None, m.group(2), m.group(3), q, body, base_url)
        m = ROOT_PATH_GET.match(path)
        if m and method == "GET":
            self._drive(m.group(1))
            item = self._by_path(m.group(2))
            return SandboxResponse.json(200, self._item_json(item))
        m = ITEM_GET.match(path)
        if m and method in ("GET", "DELETE"):
            self._drive(m.group(1))
            found = self.items.get(m.group(2))
            if found is None:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            if method == "DELETE":
                self._delete_tree(found)
                return SandboxResponse(204)
            return SandboxResponse.json(200, self._item_json(found))
        m = EVENTS.match(path)
        if m:
            user = self._user(m.group(1))
            if method == "POST":
                return self._create_event(user, self._json(body), headers)
            if method == "GET":
                return self._list_events(user, q, headers, base_url, path)
        m = EVENT.match(path)
        if m:
            user = self._user(m.group(1))
            return self._event_op(method, user, m.group(2), headers, body)
        m = CALENDAR_DELTA.match(path)
        if m and method == "GET":
            return self._delta(self._user(m.group(1)), q, headers, base_url, path)
        m = CALENDAR_VIEW.match(path)
        if m and method == "GET":
            return self._calendar_view(self._user(m.group(1)), q, headers, base_url, path)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{path.rsplit('/', 1)[-1]}'.")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body) if body.strip() else {}
        except ValueError:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.") from None
        if not isinstance(value, dict):
            raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
        return value

    def _user(self, key: str) -> str:
        lowered = unquote(key).lower()
        if lowered in self.users:
            return lowered
        for upn, object_id in self.users.items():
            if object_id == lowered:
                return upn
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{unquote(key)}' is invalid.")

    def _drive(self, drive_id: str) -> None:
        if drive_id != self.drive_id:
            raise GraphError(404, "itemNotFound", "The provided drive id appears to be malformed, or does not represent a valid drive.")

    # -- token -------------------------------------------------------------------------------------

    def _token(self, req: SandboxRequest, tenant: str) -> SandboxResponse:
        if req.method != "POST":
            return aad_error(405, "invalid_request", 900561, "The endpoint only accepts POST requests.")
        if tenant not in (self.tenant_id, "drymix.example", "drymix.onmicrosoft.com"):
            return aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")
        form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = req.headers.get("authorization") or ""
        if basic.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(basic[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return aad_error(401, "invalid_client", 7000216, "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.")
            client_id, secret = unquote(user), unquote(password)
        if form.get("grant_type") != "client_credentials":
            return aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if not client_id:
            return aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
        if client_id != self.client_id:
            return aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found in the directory '{self.tenant_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.")
        if not secret:
            return aad_error(401, "invalid_client", 7000216, "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.")
        if secret != self.client_secret:
            return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '" + self.client_id + "'.")
        if form.get("scope") != GRAPH_SCOPE:
            return aad_error(400, "invalid_scope", 1002012, f"The provided value for scope {form.get('scope')} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
        self.token_requests += 1
        lifetime = self.switches.token_lifetime_s
        token = ".".join(base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=") for n in (27, 180, 96))
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9" + token[36:]
        self.tokens[token] = self._clock() + lifetime
        return SandboxResponse.json(200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token})

    def expire_tokens(self) -> int:
        """Every issued access token expires now (the next Graph call gets 401)."""
        count = len(self.tokens)
        for token in self.tokens:
            self.tokens[token] = 0.0
        return count

    # -- drive items -------------------------------------------------------------------------------

    def _drive_json(self) -> dict[str, Any]:
        used = sum(len(i.content) for i in self.items.values())
        return {
            "id": self.drive_id, "driveType": "documentLibrary", "name": "Documents",
            "webUrl": "https://drymix.sharepoint.com/sites/erp/Shared%20Documents",
            "quota": {"total": 27_487_790_694_400, "used": used, "remaining": 27_487_790_694_400 - used, "state": "normal"},
        }

    def _by_path(self, path: str) -> DriveItem:
        item = self.root
        for part in [p for p in unquote(path).strip("/").split("/") if p]:
            child = self._child(item.id, part)
            if child is None:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            item = child
        return item

    def _item_json(self, item: DriveItem) -> dict[str, Any]:
        parent = self.items.get(item.parent_id) if item.parent_id else None
        data: dict[str, Any] = {
            "id": item.id, "name": item.name, "size": len(item.content) if not item.folder else self._folder_size(item),
            "createdDateTime": _iso(item.created), "lastModifiedDateTime": _iso(item.modified),
            "eTag": f'"{{{item.id[-8:]}}},{item.version}"', "cTag": f'"c:{{{item.id[-8:]}}},{item.version}"',
            "webUrl": "https://drymix.sharepoint.com/sites/erp/Shared%20Documents" + quote(item.path),
            "createdBy": {"application": {"id": self.client_id, "displayName": "DryMix Integration Hub"}},
        }
        if parent is not None:
            data["parentReference"] = {"driveType": "documentLibrary", "driveId": self.drive_id, "id": parent.id,
                                       "path": "/drive/root:" + parent.path}
        if item.folder:
            data["folder"] = {"childCount": sum(1 for i in self.items.values() if i.parent_id == item.id)}
        else:
            data["file"] = {"mimeType": item.mime_type,
                            "hashes": {"sha256Hash": hashlib.sha256(item.content).hexdigest().upper()}}
        return data

    def _folder_size(self, folder: DriveItem) -> int:
        return sum(len(i.content) for i in self.items.values() if not i.folder and i.path.startswith(folder.path + "/"))

    def _delete_tree(self, item: DriveItem) -> None:
        for child in [i for i in self.items.values() if i.parent_id == item.id]:
            self._delete_tree(child)
        self.items.pop(item.id, None)

    def _parent_for(self, folder: str | None, parent_id: str | None) -> DriveItem:
        if parent_id is not None:
            parent = self.root if parent_id == "root" else self.items.get(parent_id)
            if parent is None or not parent.folder:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            return parent
        for part in [p for p in (folder or "").split("/") if p]:
            problem = name_problem(part)
            if problem:
                raise GraphError(400, "invalidRequest", f"Invalid folder name '{part}': {problem}.")
        # Path-addressed uploads create missing parent folders, as OneDrive does.
        return self._ensure_folder(folder or "")

    def _check_name(self, parent: DriveItem, name: str) -> None:
        problem = name_problem(name)
        if problem:
            raise GraphError(400, "invalidRequest", f"The provided name '{name}' is not valid: {problem}.")
        if len(parent.path) + 1 + len(name) > MAX_PATH:
            raise GraphError(400, "invalidRequest", f"The path is longer than {MAX_PATH} characters.", inner_code="pathIsTooLong")

    def _commit_file(self, parent: DriveItem, name: str, content: bytes, conflict: str) -> tuple[DriveItem, int]:
        """Store a file under the conflict behaviour; returns the item and 201 (new) or 200 (replaced)."""
        existing = self._child(parent.id, name)
        if existing is not None and existing.folder and conflict == "replace":
            raise GraphError(409, "nameAlreadyExists", f"A folder with the name '{name}' already exists.")
        if existing is not None and conflict == "fail":
            raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
        if existing is not None and conflict == "replace":
            existing.content = bytes(content)
            existing.version += 1
            existing.modified = self.now()
            return existing, 200
        if existing is not None:  # rename: "name 1.pdf", "name 2.pdf", ...
            stem, dot, ext = name.rpartition(".")
            stem, ext = (stem, "." + ext) if dot and stem else (name, "")
            n = 1
            while self._child(parent.id, f"{stem} {n}{ext}") is not None:
                n += 1
            name = f"{stem} {n}{ext}"
        mime = {"pdf": "application/pdf", "csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "png": "image/png", "jpg": "image/jpeg", "txt": "text/plain"}.get(name.rpartition(".")[2].lower(), "application/octet-stream")
        item = DriveItem(id="01" + secrets.token_hex(16).upper(), name=name, parent_id=parent.id,
                         path=f"{parent.path}/{name}", folder=False, content=bytes(content), mime_type=mime)
        self.items[item.id] = item
        return item, 201

    def _drive_op(self, method: str, op: str, folder: str | None, parent_id: str | None, name: str,
                  q: Mapping[str, str], body: bytes, base_url: str) -> SandboxResponse:
        name = unquote(name)
        if op == "content" and method == "PUT":
            conflict = q.get("@microsoft.graph.conflictBehavior", "replace")
            if conflict not in ("fail", "replace", "rename"):
                raise GraphError(400, "invalidRequest", f"Invalid conflict behavior '{conflict}'.")
            if len(body) > self.switches.simple_upload_limit:
                raise GraphError(413, "invalidRequest", f"The request body is larger than {self.switches.simple_upload_limit} bytes: use an upload session.",
                                 inner_code="maxFileSizeExceeded")
            parent = self._parent_for(folder, parent_id)
            self._check_name(parent, name)
            item, status = self._commit_file(parent, name, body, conflict)
            self.stats["simple_uploads"] += 1
            return SandboxResponse.json(status, self._item_json(item))
        if op == "content" and method == "GET":
            parent = self._parent_for(folder, parent_id) if parent_id else self._by_path(folder or "/")
            stored = self._child(parent.id, name)
            if stored is None or stored.folder:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            return SandboxResponse(200, [("content-type", stored.mime_type)], stored.content)
        if op == "createUploadSession" and method == "POST":
            spec = self._json(body).get("item") or {}
            if not isinstance(spec, dict):
                raise GraphError(400, "invalidRequest", "item must be an object.")
            conflict = str(spec.get("@microsoft.graph.conflictBehavior", "fail"))
            if conflict not in ("fail", "replace", "rename"):
                raise GraphError(400, "invalidRequest", f"Invalid conflict behavior '{conflict}'.")
            if spec.get("name") not in (None, name):
                raise GraphError(400, "invalidRequest", "The name in the body does not match the name in the path.")
            size = spec.get("fileSize")
            if size is not None and (not isinstance(size, int) or size < 0):
                raise GraphError(400, "invalidRequest", "fileSize must be a non-negative integer.")
            if isinstance(size, int) and size > 250 * 1024**3:
                raise GraphError(507, "quotaLimitReached", "Insufficient Space Available.")
            parent = self._parent_for(folder, parent_id)
            self._check_name(parent, name)
            session = UploadSession(id=secrets.token_urlsafe(24), drive_id=self.drive_id, parent_id=parent.id, name=name,
                                    conflict=conflict, file_size=size,
                                    expires=self.now() + timedelta(seconds=self.switches.upload_session_ttl_s))
            self.sessions[session.id] = session
            return SandboxResponse.json(200, {
                "@odata.context": f"{base_url}{GRAPH_PREFIX}/$metadata#microsoft.graph.uploadSession",
                "uploadUrl": f"{base_url}/_upload/{session.id}?guid={uuid.uuid4()}&tempauth={secrets.token_urlsafe(32)}",
                "expirationDateTime": _iso(session.expires),
                "nextExpectedRanges": ["0-"],
            })
        raise GraphError(405, "invalidRequest", f"{method} is not supported on {op}.")

    # -- upload sessions (the upload URL: no Authorization header) ---------------------------------

    def _session_status(self, session: UploadSession) -> dict[str, Any]:
        nxt = len(session.received)
        return {"expirationDateTime": _iso(session.expires), "nextExpectedRanges": [f"{nxt}-{session.total - 1}" if session.total else f"{nxt}-"]}

    def _upload_url(self, req: SandboxRequest, session_id: str) -> SandboxResponse:
        if req.headers.get("authorization"):
            self.stats["uploads_with_authorization"] += 1
            raise GraphError(401, "unauthenticated", "The upload URL is pre-authenticated: do not send an Authorization header.")
        session = self.sessions.get(session_id)
        if session is None or session.expires <= self.now():
            self.sessions.pop(session_id, None)
            raise GraphError(404, "itemNotFound", "The upload session was not found.", inner_code="uploadSessionNotFound")
        if req.method == "GET":
            return SandboxResponse.json(200, self._session_status(session))
        if req.method == "DELETE":
            del self.sessions[session_id]
            return SandboxResponse(204)
        if req.method != "PUT":
            raise GraphError(405, "invalidRequest", "Use PUT, GET or DELETE on an upload URL.")
        match = CONTENT_RANGE.match((req.headers.get("content-range") or "").strip())
        if match is None:
            raise GraphError(400, "invalidRequest", "The Content-Range header is missing or malformed.", inner_code="invalidContentRangeHeader")
        start, end, total = (int(g) for g in match.groups())
        length = int(req.headers.get("content-length") or len(req.body))
        if end < start or end >= total or length != end - start + 1 or len(req.body) != length:
            raise GraphError(400, "invalidRequest", "The Content-Range and Content-Length headers do not match the fragment.", inner_code="fragmentLengthMismatch")
        if length > MAX_FRAGMENT:
            raise GraphError(413, "invalidRequest", "A fragment must be smaller than 60 MiB.", inner_code="fragmentLengthMismatch")
        if session.total is not None and total != session.total:
            raise GraphError(400, "invalidRequest", "The total size changed between fragments.", inner_code="fragmentLengthMismatch")
        if session.file_size is not None and total != session.file_size:
            raise GraphError(400, "invalidRequest", "The total size does not match the declared fileSize.", inner_code="fragmentLengthMismatch")
        if end + 1 < total and length % CHUNK_UNIT:
            raise GraphError(400, "invalidRequest", f"Fragments must be a multiple of 320 KiB ({CHUNK_UNIT} bytes) except the last one.", inner_code="fragmentLengthMismatch")
        expected = len(session.received)
        if start < expected:
            self.stats["duplicate_ranges"] += 1
            raise GraphError(416, "invalidRange", "Uploaded fragment overlaps with existing data.", inner_code="fragmentOverlap")
        if start > expected:
            raise GraphError(416, "invalidRange", "Fragments must be uploaded in order.", inner_code="fragmentOutOfOrder")
        interrupt = self._take_interrupt(session)
        if interrupt == "lose_request":
            resp = SandboxResponse(500)
            resp.drop_after = 0
            return resp
        session.total = total
        session.received += req.body
        session.ranges.append((start, end))
        session.chunk_puts += 1
        self.stats["chunk_puts"] += 1
        session.expires = self.now() + timedelta(seconds=self.switches.upload_session_ttl_s)
        if end + 1 < total:
            resp = SandboxResponse.json(202, self._session_status(session))
        else:
            parent = self.items.get(session.parent_id)
            if parent is None:
                raise GraphError(404, "itemNotFound", "The parent folder was deleted during the upload.")
            try:
                item, status = self._commit_file(parent, session.name, bytes(session.received), session.conflict)
            except GraphError:
                # A name conflict at commit ends the session: the client must start over with another policy.
                del self.sessions[session.id]
                raise
            session.committed = True
            del self.sessions[session.id]
            self.completed_sessions.append(session)
            resp = SandboxResponse.json(status, self._item_json(item))
        if interrupt == "lose_response":
            resp.drop_after = 0
        return resp

    def _take_interrupt(self, session: UploadSession) -> str | None:
        rule = self.interrupt
        if rule is None or rule.remaining <= 0 or session.chunk_puts < rule.after_chunks:
            return None
        rule.remaining -= 1
        if rule.remaining <= 0:
            self.interrupt = None
        return rule.mode

    def upload_report(self) -> dict[str, Any]:
        """Every session's received ranges: a range listed twice would be a chunk that arrived twice."""
        sessions = [*self.completed_sessions, *self.sessions.values()]
        return {
            "stats": dict(self.stats),
            "sessions": [{"id": s.id[:8], "name": s.name, "total": s.total, "received": len(s.received), "chunk_puts": s.chunk_puts,
                          "committed": s.committed, "ranges": [list(r) for r in s.ranges]} for s in sessions],
        }

    # -- calendar events ---------------------------------------------------------------------------

    def _parse_when(self, value: Any, what: str) -> tuple[datetime, str]:
        if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str) or not value.get("timeZone"):
            raise GraphError(400, "ErrorInvalidRequest", f"{what} must be a dateTimeTimeZone with dateTime and timeZone.")
        zone_name = str(value["timeZone"])
        try:
            zone = ZoneInfo(WINDOWS_ZONES.get(zone_name, zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise GraphError(400, "TimeZoneNotSupportedException", f"A valid TimeZone value must be specified. The following TimeZone value is not supported: '{zone_name}'.") from None
        text = value["dateTime"].rstrip("Z")
        text = re.sub(r"(\.\d{6})\d+$", r"\1", text)
        try:
            local = datetime.fromisoformat(text)
        except ValueError:
            raise GraphError(400, "ErrorInvalidRequest", f"Cannot convert the literal '{value['dateTime']}' to the expected type 'Edm.DateTimeOffset'.") from None
        if local.tzinfo is None:
            local = local.replace(tzinfo=zone)
        return local.astimezone(UTC), zone_name

    def _apply_fields(self, event: Event, data: Mapping[str, Any]) -> None:
        if "subject" in data:
            event.subject = str(data["subject"] or "")
            if len(event.subject) > 255:
                raise GraphError(400, "ErrorInvalidRequest", "The subject is longer than 255 characters.")
        if "body" in data:
            body = data["body"] or {}
            if not isinstance(body, dict) or str(body.get("contentType", "text")).lower() not in ("text", "html"):
                raise GraphError(400, "ErrorInvalidRequest", "body.contentType must be text or html.")
            event.body = {"contentType": str(body.get("contentType", "text")).lower(), "content": str(body.get("content") or "")}
        if "start" in data:
            event.start, event.start_zone = self._parse_when(data["start"], "start")
        if "end" in data:
            event.end, event.end_zone = self._parse_when(data["end"], "end")
        if "location" in data:
            loc = data["location"] or {}
            event.location = {"displayName": str(loc.get("displayName") or ""), "locationType": "default"} if isinstance(loc, dict) else {}
        if "attendees" in data:
            attendees = data["attendees"] or []
            if not isinstance(attendees, list):
                raise GraphError(400, "ErrorInvalidRequest", "attendees must be an array.")
            for a in attendees:
                address = (a.get("emailAddress") or {}).get("address") if isinstance(a, dict) else None
                if not isinstance(address, str) or "@" not in address:
                    raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
            event.attendees = [{"type": a.get("type", "required"), "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                                "emailAddress": dict(a["emailAddress"])} for a in attendees]
        for key, attr in (("isAllDay", "is_all_day"), ("showAs", "show_as"), ("categories", "categories"),
                          ("importance", "importance"), ("sensitivity", "sensitivity")):
            if key in data:
                setattr(event, attr, data[key])
        if event.end < event.start:
            raise GraphError(400, "ErrorInvalidRequest", "The end time must be after the start time.")
        if event.is_all_day and (event.start.astimezone(ZoneInfo(WINDOWS_ZONES.get(event.start_zone, event.start_zone))).time() != datetime.min.time()):
            raise GraphError(400, "ErrorInvalidRequest", "Start and end of an all-day event must be at midnight in the event's time zone.")

    def _store_event(self, user: str, data: Mapping[str, Any], transaction_id: str | None) -> Event:
        now = self.now()
        self.seq += 1
        event = Event(id=_graph_id(), user=user, subject="", body={"contentType": "text", "content": ""}, start=now, end=now,
                      start_zone="UTC", end_zone="UTC", location={}, attendees=[], is_all_day=False, show_as="busy",
                      categories=[], transaction_id=transaction_id, created=now, modified=now, seq=self.seq,
                      change_key=secrets.token_urlsafe(12))
        if "start" not in data or "end" not in data:
            raise GraphError(400, "ErrorInvalidRequest", "start and end are required.")
        self._apply_fields(event, data)
        self.events[event.id] = event
        return event

    def _event_json(self, event: Event, zone: str | None = None) -> dict[str, Any]:
        out_zone = zone or "UTC"
        return {
            "@odata.etag": f'W/"{event.change_key}"', "id": event.id,
            "createdDateTime": _iso(event.created), "lastModifiedDateTime": _iso(event.modified),
            "changeKey": event.change_key, "categories": list(event.categories), "transactionId": event.transaction_id,
            "originalStartTimeZone": event.start_zone, "originalEndTimeZone": event.end_zone,
            "iCalUId": event.ical_uid, "subject": event.subject, "bodyPreview": re.sub(r"<[^>]+>", "", event.body.get("content", ""))[:255],
            "importance": event.importance, "sensitivity": event.sensitivity, "isAllDay": event.is_all_day,
            "isCancelled": event.is_cancelled, "isOrganizer": True, "showAs": event.show_as, "type": "singleInstance",
            "webLink": f"https://outlook.office365.com/owa/?itemid={quote(event.id)}&exvsurl=1&path=/calendar/item",
            "body": dict(event.body),
            "start": {"dateTime": _graph_local(event.start, out_zone), "timeZone": out_zone},
            "end": {"dateTime": _graph_local(event.end, out_zone), "timeZone": out_zone},
            "location": dict(event.location), "attendees": [dict(a) for a in event.attendees],
            "organizer": {"emailAddress": {"name": event.user.split("@")[0].title(), "address": event.user}},
        }

    @staticmethod
    def _prefer(headers: Headers) -> dict[str, str]:
        found: dict[str, str] = {}
        for value in headers.get_all("prefer"):
            for part in value.split(","):
                key, _, val = part.strip().partition("=")
                if key:
                    found[key.strip().lower()] = val.strip().strip('"')
        return found

    def _out_zone(self, headers: Headers) -> str | None:
        zone = self._prefer(headers).get("outlook.timezone")
        if zone is None:
            return None
        try:
            ZoneInfo(WINDOWS_ZONES.get(zone, zone))
        except (ZoneInfoNotFoundError, ValueError):
            return None
        return zone

    def _create_event(self, user: str, data: dict[str, Any], headers: Headers) -> SandboxResponse:
        txn = data.get("transactionId")
        if txn is not None and not isinstance(txn, str):
            raise GraphError(400, "ErrorInvalidRequest", "transactionId must be a string.")
        if txn:
            existing_id = self.transactions.get((user, txn))
            existing = self.events.get(existing_id) if existing_id else None
            if existing is not None:
                # The retry of a create that already happened: the same event, nothing new.
                return SandboxResponse.json(201, self._event_json(existing, self._out_zone(headers)))
        event = self._store_event(user, data, txn or None)
        if txn:
            self.transactions[(user, txn)] = event.id
        self.stats["events_created"] += 1
        return SandboxResponse.json(201, self._event_json(event, self._out_zone(headers)))

    def _check_etag(self, event: Event, headers: Headers) -> None:
        wanted = headers.get("if-match")
        if wanted and wanted.strip() not in ("*", f'W/"{event.change_key}"', f'"{event.change_key}"'):
            raise GraphError(412, "ErrorIrresolvableConflict", "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.")

    def _event_op(self, method: str, user: str, event_id: str, headers: Headers, body: bytes) -> SandboxResponse:
        event = self.events.get(event_id)
        if event is None or event.user != user:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if method == "GET":
            return SandboxResponse.json(200, self._event_json(event, self._out_zone(headers)))
        if method == "PATCH":
            self._check_etag(event, headers)
            data = self._json(body)
            data.pop("transactionId", None)
            before = (event.start, event.end)
            try:
                self._apply_fields(event, data)
            except GraphError:
                event.start, event.end = before
                raise
            self._touch(event)
            return SandboxResponse.json(200, self._event_json(event, self._out_zone(headers)))
        if method == "DELETE":
            self._check_etag(event, headers)
            self._remove(event)
            return SandboxResponse(204)
        raise GraphError(405, "ErrorInvalidRequest", f"{method} is not supported on an event.")

    def _touch(self, event: Event) -> None:
        self.seq += 1
        event.seq = self.seq
        event.modified = self.now()
        event.change_key = secrets.token_urlsafe(12)

    def _remove(self, event: Event) -> None:
        self.seq += 1
        del self.events[event.id]
        self.tombstones[event.id] = (event.user, self.seq)

    def _in_window(self, event: Event, start: datetime, end: datetime) -> bool:
        return event.start < end and event.end > start

    def _window(self, q: Mapping[str, str]) -> tuple[datetime, datetime]:
        try:
            start = datetime.fromisoformat(q["startDateTime"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(q["endDateTime"].replace("Z", "+00:00"))
        except KeyError:
            raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.") from None
        except ValueError:
            raise GraphError(400, "ErrorInvalidParameter", "StartDateTime and EndDateTime must be ISO 8601 date-times.") from None
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        if end <= start:
            raise GraphError(400, "ErrorInvalidParameter", "EndDateTime must be after StartDateTime.")
        return start, end

    def _page_size(self, q: Mapping[str, str], headers: Headers) -> int:
        size = self._prefer(headers).get("odata.maxpagesize") or q.get("$top")
        try:
            return max(1, min(1000, int(size))) if size else self.switches.default_page_size
        except ValueError:
            raise GraphError(400, "BadRequest", "odata.maxpagesize / $top must be an integer.") from None

    def _list_events(self, user: str, q: Mapping[str, str], headers: Headers, base_url: str, path: str) -> SandboxResponse:
        events = sorted((e for e in self.events.values() if e.user == user), key=lambda e: (e.start, e.id))
        return self._offset_page(events, q, headers, base_url, path, {})

    def _calendar_view(self, user: str, q: Mapping[str, str], headers: Headers, base_url: str, path: str) -> SandboxResponse:
        start, end = self._window(q)
        events = sorted((e for e in self.events.values() if e.user == user and self._in_window(e, start, end)), key=lambda e: (e.start, e.id))
        return self._offset_page(events, q, headers, base_url, path, {"startDateTime": q["startDateTime"], "endDateTime": q["endDateTime"]})

    def _offset_page(self, events: list[Event], q: Mapping[str, str], headers: Headers, base_url: str, path: str,
                     keep: dict[str, str]) -> SandboxResponse:
        size = self._page_size(q, headers)
        skip = int(q.get("$skip", "0") or 0)
        page = events[skip : skip + size]
        body: dict[str, Any] = {"@odata.context": f"{base_url}{GRAPH_PREFIX}/$metadata#events",
                                "value": [self._event_json(e, self._out_zone(headers)) for e in page]}
        if skip + size < len(events):
            params = "&".join(f"{k}={quote(v)}" for k, v in {**keep, "$top": str(size), "$skip": str(skip + size)}.items())
            body["@odata.nextLink"] = f"{base_url}{GRAPH_PREFIX}{path}?{params}"
        return SandboxResponse.json(200, body)

    def _delta(self, user: str, q: Mapping[str, str], headers: Headers, base_url: str, path: str) -> SandboxResponse:
        self.stats["delta_calls"] += 1
        now = self._clock()
        if "$deltatoken" in q or "$skiptoken" in q:
            if len(q) != 1:
                raise GraphError(400, "BadRequest", "Query parameters are encoded in the state token: send the link unchanged.")
            key = "$deltatoken" if "$deltatoken" in q else "$skiptoken"
            store = self.delta_tokens if key == "$deltatoken" else self.skip_tokens
            state = store.get(q[key])
            if state is None or now - state.issued > self.switches.delta_token_ttl_s or state.user != user:
                store.pop(q[key], None)
                code = self.switches.expired_delta_code
                raise GraphError(410, code, "The sync state generation is not found or has expired; restart the sync from scratch."
                                 if code == "syncStateNotFound" else "Resync required: replace any local items with the server's version.")
            if key == "$deltatoken":
                self._people_edit(user, self.switches.people_edits_per_delta)
                state = DeltaState(user, state.start, state.end, since_seq=state.upto_seq, upto_seq=self.seq, issued=now)
        else:
            if any(k.startswith("$select") for k in q):
                raise GraphError(400, "BadRequest", "$select is not supported on calendarView delta.")
            start, end = self._window(q)
            state = DeltaState(user, start, end, since_seq=None, upto_seq=self.seq, issued=now)
        changes = self._delta_items(state)
        size = self._page_size({}, headers)
        page = changes[state.offset : state.offset + size]
        body: dict[str, Any] = {"@odata.context": f"{base_url}{GRAPH_PREFIX}/$metadata#Collection(event)", "value": page}
        if state.offset + size < len(changes):
            token = secrets.token_urlsafe(32)
            self.skip_tokens[token] = DeltaState(user, state.start, state.end, state.since_seq, state.upto_seq, now, state.offset + size)
            body["@odata.nextLink"] = f"{base_url}{GRAPH_PREFIX}{path}?$skiptoken={token}"
        else:
            token = secrets.token_urlsafe(32)
            self.delta_tokens[token] = DeltaState(user, state.start, state.end, None, state.upto_seq, now)
            body["@odata.deltaLink"] = f"{base_url}{GRAPH_PREFIX}{path}?$deltatoken={token}"
        return SandboxResponse.json(200, body)

    def _delta_items(self, state: DeltaState) -> list[dict[str, Any]]:
        """What changed in the window between the two sequence numbers (everything on a first round)."""
        out: list[tuple[int, dict[str, Any]]] = []
        for event in self.events.values():
            if event.user != state.user or event.seq > state.upto_seq:
                continue
            if state.since_seq is None:
                if self._in_window(event, state.start, state.end):
                    out.append((event.seq, self._event_json(event)))
            elif event.seq > state.since_seq:
                if self._in_window(event, state.start, state.end):
                    out.append((event.seq, self._event_json(event)))
                else:  # moved out of the window
                    out.append((event.seq, {"@odata.type": "#microsoft.graph.event", "id": event.id, "@removed": {"reason": "deleted"}}))
        if state.since_seq is not None:
            for event_id, (user, seq) in self.tombstones.items():
                if user == state.user and state.since_seq < seq <= state.upto_seq:
                    out.append((seq, {"@odata.type": "#microsoft.graph.event", "id": event_id, "@removed": {"reason": "deleted"}}))
        out.sort(key=lambda pair: pair[0])
        return [item for _, item in out]

    def expire_delta_tokens(self) -> int:
        count = len(self.delta_tokens) + len(self.skip_tokens)
        self.delta_tokens.clear()
        self.skip_tokens.clear()
        return count

    # -- people editing their calendars ------------------------------------------------------------

    def _people_edit(self, user: str, count: int) -> list[dict[str, Any]]:
        done: list[dict[str, Any]] = []
        for _ in range(count):
            candidates = sorted(e.id for e in self.events.values() if e.user == user)
            if not candidates:
                break
            event_id = self._rng.choice(candidates)
            action = "cancel" if self._rng.random() < 0.3 else "move"
            done.append(self.person_edits(event_id, action, minutes=self._rng.choice([-120, -60, 30, 60, 24 * 60])))
        return done

    def person_edits(self, event_id: str, action: str, *, minutes: int = 60, subject: str | None = None) -> dict[str, Any]:
        """Someone moves, renames or cancels an event in Outlook (the ERP learns of it by delta)."""
        event = self.events.get(event_id)
        if event is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if action == "move":
            event.start += timedelta(minutes=minutes)
            event.end += timedelta(minutes=minutes)
            self._touch(event)
        elif action == "rename":
            event.subject = subject or event.subject + " (changed in Outlook)"
            self._touch(event)
        elif action == "cancel":
            self._remove(event)
        else:
            raise GraphError(400, "invalidRequest", "action is move, rename or cancel")
        record = {"event_id": event_id, "action": action, "minutes": minutes if action == "move" else None, "at": _iso(self.now())}
        self.people_edits.append(record)
        return record

    # -- $batch ------------------------------------------------------------------------------------

    def _batch(self, req: SandboxRequest) -> SandboxResponse:
        data = self._json(req.body)
        requests = data.get("requests")
        if not isinstance(requests, list) or not requests:
            raise GraphError(400, "BadRequest", "Invalid batch payload format: requests must be a non-empty array.")
        if len(requests) > MAX_BATCH:
            raise GraphError(400, "BadRequest", f"Invalid batch payload format: a batch holds at most {MAX_BATCH} requests.")
        ids = [str(r.get("id")) for r in requests if isinstance(r, dict)]
        if len(ids) != len(requests) or len(set(ids)) != len(ids) or "None" in ids:
            raise GraphError(400, "BadRequest", "Invalid batch payload format: every request needs a unique id.")
        self.stats["batch_requests"] += 1
        responses = []
        for item in requests:
            responses.append(self._batch_item(item, req))
        return SandboxResponse.json(200, {"responses": responses})

    def _batch_item(self, item: Mapping[str, Any], outer: SandboxRequest) -> dict[str, Any]:
        rid = str(item["id"])
        method = str(item.get("method", "")).upper()
        url = str(item.get("url", ""))
        if method not in ("GET", "POST", "PATCH", "PUT", "DELETE") or not url:
            resp = graph_error(400, "BadRequest", "Each batch request needs a method and a relative url.")
        else:
            decision = self.faults.decide()  # each inner request counts against the limits, as on Graph
            sw = self.faults.switches
            if decision.kind == "rate_limit":
                resp = self.rate_limited_response(outer, None if sw.retry_after_s is None else str(sw.retry_after_s))
            elif decision.kind == "error_5xx":
                resp = self.server_error_response(outer, sw.error_5xx_status, None if sw.error_5xx_retry_after_s is None else str(sw.error_5xx_retry_after_s))
            else:
                parts = urlsplit(url if url.startswith("/") else "/" + url)
                body = item.get("body")
                headers = Headers([*((k, str(v)) for k, v in (item.get("headers") or {}).items()),
                                   ("authorization", outer.headers.get("authorization") or "")])
                if body is not None and "content-type" not in headers:
                    resp = graph_error(400, "BadRequest", "Content-Type header is required for a request with a body.")
                else:
                    raw = json.dumps(body).encode() if body is not None else b""
                    try:
                        resp = self._route(method, unquote(parts.path), parse_qsl(parts.query, keep_blank_values=True), headers, raw, outer.base_url)
                    except GraphError as error:
                        resp = error.response()
        answer: dict[str, Any] = {"id": rid, "status": resp.status, "headers": {k: v for k, v in resp.headers}}
        if resp.body:
            try:
                answer["body"] = json.loads(resp.body)
            except ValueError:
                answer["body"] = base64.b64encode(resp.body).decode()
        return answer

    # -- control routes ----------------------------------------------------------------------------

    def control_routes(self) -> list[str]:
        return [
            "GET /_sandbox/microsoft365/state",
            'POST /_sandbox/microsoft365/switches {"token_lifetime_s", "delta_token_ttl_s", "expired_delta_code", "simple_upload_limit", "upload_session_ttl_s", "default_page_size", "people_edits_per_delta"}',
            "POST /_sandbox/microsoft365/tokens/expire",
            "POST /_sandbox/microsoft365/delta/expire",
            'POST /_sandbox/microsoft365/calendar/edit {"event_id", "action": "move" | "rename" | "cancel", "minutes"} or {"user", "random": n}',
            "GET /_sandbox/microsoft365/calendar/events?user=...",
            'POST /_sandbox/microsoft365/uploads/interrupt {"after_chunks": n, "mode": "lose_response" | "lose_request", "count": 1}',
            "GET /_sandbox/microsoft365/uploads",
            "GET /_sandbox/microsoft365/files",
        ]

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        prefix = "/_sandbox/microsoft365/"
        route = req.path.rstrip("/")
        if not route.startswith(prefix):
            return None
        action = route[len(prefix):]
        if req.method == "GET":
            if action == "state":
                return SandboxResponse.json(200, {
                    "tenant_id": self.tenant_id, "client_id": self.client_id, "drive_id": self.drive_id, "users": self.users,
                    "switches": self.switches.to_dict(), "stats": dict(self.stats), "token_requests": self.token_requests,
                    "events": len(self.events), "files": sum(1 for i in self.items.values() if not i.folder),
                })
            if action == "uploads":
                return SandboxResponse.json(200, self.upload_report())
            if action == "files":
                return SandboxResponse.json(200, {"value": [self._item_json(i) for i in self.items.values() if not i.folder]})
            if action == "calendar/events":
                user = req.query_get("user")
                return SandboxResponse.json(200, {"value": [self._event_json(e) for e in self.events.values() if user is None or e.user == user.lower()],
                                                  "people_edits": list(self.people_edits)})
            return None
        if req.method != "POST":
            return None
        body, error = control_json_body(req)
        if error is not None:
            return error
        try:
            if action == "switches":
                unknown = set(body) - set(Switches().to_dict())
                if unknown:
                    return SandboxResponse.json(422, {"error": f"unknown switches: {', '.join(sorted(unknown))}"})
                merged = {**self.switches.to_dict(), **body}
                if merged["expired_delta_code"] not in ("syncStateNotFound", "resyncRequired") or int(merged["token_lifetime_s"]) < 1:
                    return SandboxResponse.json(422, {"error": "expired_delta_code is syncStateNotFound or resyncRequired; token_lifetime_s >= 1"})
                self.switches = Switches(**merged)
                return SandboxResponse.json(200, self.switches.to_dict())
            if action == "tokens/expire":
                return SandboxResponse.json(200, {"expired": self.expire_tokens()})
            if action == "delta/expire":
                return SandboxResponse.json(200, {"expired": self.expire_delta_tokens()})
            if action == "calendar/edit":
                if "random" in body:
                    return SandboxResponse.json(200, {"edits": self._people_edit(self._user(str(body.get("user", ""))), int(body["random"]))})
                return SandboxResponse.json(200, self.person_edits(str(body.get("event_id", "")), str(body.get("action", "")),
                                                                   minutes=int(body.get("minutes", 60)), subject=body.get("subject")))
            if action == "uploads/interrupt":
                mode = str(body.get("mode", "lose_response"))
                if mode not in ("lose_response", "lose_request"):
                    return SandboxResponse.json(422, {"error": "mode is lose_response or lose_request"})
                self.interrupt = UploadInterrupt(after_chunks=int(body.get("after_chunks", 1)), mode=mode, remaining=int(body.get("count", 1)))
                return SandboxResponse.json(200, {"after_chunks": self.interrupt.after_chunks, "mode": mode, "count": self.interrupt.remaining})
        except GraphError as exc:
            return exc.response()
        except (TypeError, ValueError) as exc:
            return SandboxResponse.json(422, {"error": str(exc)})
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox microsoft365 [options]``: serve the Microsoft 365 (Entra ID + Graph) sandbox."""
    parser = server_parser("microsoft365", "Serve the Microsoft 365 Graph sandbox.", 8404)
    parser.add_argument("--seed", type=int, default=7)
    return serve_main(parser, argv, lambda args, faults: Microsoft365Sandbox(seed=args.seed, faults=faults))

if __name__ == "__main__":
    sys.exit(main())

"""Simulator of Google's OAuth token endpoint (service-account JWT bearer grant) and Calendar API v3 events.

API (api-contracts section 3)::

    POST /token                                              JWT bearer grant -> {"access_token", "expires_in", "token_type"}
    GET  /calendar/v3/calendars/{calendarId}/events          list: maxResults, pageToken, syncToken, showDeleted, ...
    POST /calendar/v3/calendars/{calendarId}/events          insert (client id: base32hex a-v0-9, 5..1024; duplicate -> 409)
    GET|PATCH|PUT|DELETE /calendar/v3/calendars/{calendarId}/events/{eventId}

The token endpoint verifies the RS256 assertion against the service account's public key (PyJWT), then checks
iss, scope, aud, iat/exp (at most one hour) and sub (a user of the domain with domain-wide delegation granted to
the service account's client id for the requested scopes). Errors carry Google's bodies: OAuth errors as
``{"error", "error_description"}``, API errors as ``{"error": {"errors": [{"domain", "reason", "message"}], "code",
"message"}}``.

Incremental sync: every change gets a per-calendar sequence number; a sync token names the sequence seen.
``nextSyncToken`` comes only on the last page; a token that is expired, from an older generation, or unreadable
answers 410 ``fullSyncRequired``. Deleted events stay as ``status: "cancelled"`` and are always in incremental
lists.

Control routes (``/_sandbox/google/...``): quota storms (403 ``rateLimitExceeded`` / ``userRateLimitExceeded``,
429), people editing events in the calendar (move, cancel, retitle, random edits), sync-token expiry, the
service-account key file, and an empty-first-page switch.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import random
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.core import (
    FaultSwitches,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    control_json_body,
    serve_main,
    server_parser,
)

logger = logging.getLogger(__name__)

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
API_PREFIX = "/calendar/v3/calendars/"
CALENDAR_SCOPES = frozenset(
    {"https://www.googleapis.com/auth/calendar", "https://www.googleapis.com/auth/calendar.events"}
)
READ_SCOPES = CALENDAR_SCOPES | {
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events.readonly",
}
EVENT_ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
MAX_RESULTS = 2500
DEFAULT_RESULTS = 250
MAX_ASSERTION_LIFETIME_S = 3600
CLOCK_SKEW_S = 300
# Parameters the sync guide says cannot be combined with syncToken.
_NOT_WITH_SYNC_TOKEN = ("iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty", "timeMin", "timeMax", "updatedMin")
QUOTA_REASONS = ("rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded")
_QUOTA_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
}


def rfc3339(moment: datetime) -> str:
    """Google's timestamp form: UTC with milliseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a dateTime needs an offset unless timeZone is given")
    return moment


def api_error(status: int, reason: str, message: str, *, domain: str = "global", location: str | None = None) -> SandboxResponse:
    """Google's API error envelope (Calendar "Handle API errors" guide)."""
    entry: dict[str, Any] = {"domain": domain, "reason": reason, "message": message}
    if location is not None:
        entry["locationType"] = "parameter"
        entry["location"] = location
    return SandboxResponse.json(status, {"error": {"errors": [entry], "code": status, "message": message}})


def oauth_error(status: int, error: str, description: str) -> SandboxResponse:
    return SandboxResponse.json(status, {"error": error, "error_description": description})


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, *, domain: str = "global", location: str | None = None):
        super().__init__(message)
        self.args_ = (status, reason, message, domain, location)

    def response(self) -> SandboxResponse:
        status, reason, message, domain, location = self.args_
        return api_error(status, reason, message, domain=domain, location=location)


# --------------------------------------------------------------------------------------------
# Service account keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccount:
    """A service account with its key pair; `info` is the JSON key file Google hands out."""

    info: dict[str, str]
    public_key_pem: bytes

    @property
    def email(self) -> str:
        return self.info["client_email"]

    @property
    def client_id(self) -> str:
        return self.info["client_id"]

    @property
    def key_id(self) -> str:
        return self.info["private_key_id"]

    def key_file_json(self) -> str:
        return json.dumps(self.info, indent=2)


def generate_service_account(
    email: str = "drymix-hub@drymix-sandbox.iam.gserviceaccount.com",
    *,
    project_id: str = "drymix-sandbox",
    client_id: str | None = None,
    token_uri: str = GOOGLE_TOKEN_URL,
) -> ServiceAccount:
    """A fresh RSA 2048 key pair (cryptography) in Google's service-account key file format."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    cid = client_id or str(random.SystemRandom().randrange(10**20, 10**21))
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_pem,
        "client_email": email,
        "client_id": cid,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}",
        "universe_domain": "googleapis.com",
    }
    return ServiceAccount(info=info, public_key_pem=public_pem)


def load_service_account(key_file_json: str) -> ServiceAccount:
    """The service account of a JSON key file (its public key derived from the private one), e.g. one the stack made."""
    info = json.loads(key_file_json)
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ServiceAccount(info={k: str(v) for k, v in info.items()}, public_key_pem=public_pem)


@lru_cache(maxsize=1)
def default_service_account() -> ServiceAccount:
    """One generated account per process: RSA key generation costs ~0.1 s, tests build many sandboxes."""
    return generate_service_account()


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class _Token:
    subject: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class _Calendar:
    calendar_id: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    ordinal: dict[str, int] = field(default_factory=dict)  # creation order, for stable paging
    seq_of: dict[str, int] = field(default_factory=dict)  # last change sequence of each event
    seq: int = 0
    generation: int = 1  # bumped to invalidate every sync token at once
    next_ordinal: int = 0


@dataclass
class QuotaSwitch:
    """Quota storm: the next N API calls (or every N-th) answer 403 with `reason` (or 429 when reason is "429")."""

    reason: str = "rateLimitExceeded"
    next_n: int = 0
    every_n: int = 0
    seen: int = 0
    fired: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "next_n": self.next_n, "every_n": self.every_n, "fired": self.fired}


class GoogleCalendarSandbox(Simulator):
    """Google's token endpoint and Calendar v3 events, in memory, with Google's request and error shapes."""

    name = "google"

    def __init__(
        self,
        *,
        service_account: ServiceAccount | None = None,
        domain: str = "drymix.in",
        users: Sequence[str] = ("depot.ops@drymix.in", "dispatch@drymix.in"),
        delegated_scopes: Sequence[str] = tuple(sorted(CALENDAR_SCOPES)),
        token_ttl_s: int = 3599,
        sync_token_ttl_s: float = 7 * 24 * 3600,
        time_zone: str = "Asia/Kolkata",
        clock: Callable[[], float] = time.time,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(faults=faults)
        self.service_account = service_account or default_service_account()
        self.domain = domain
        self.users = {u.lower() for u in users}
        # Domain-wide delegation as an admin grants it: client id -> scopes.
        self.delegation: dict[str, frozenset[str]] = {self.service_account.client_id: frozenset(delegated_scopes)}
        self.token_ttl_s = token_ttl_s
        self.sync_token_ttl_s = sync_token_ttl_s
        self.time_zone = time_zone
        self._clock = clock
        self.tokens: dict[str, _Token] = {}
        self.calendars: dict[str, _Calendar] = {}
        self.quota = QuotaSwitch()
        self.empty_first_page = False
        self.token_requests = 0
        self.assertions: list[dict[str, Any]] = []  # verified claims, for tests
        self.api_calls: dict[str, int] = {}
        self._rng = random.Random(0)

    # -- helpers -------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def calendar(self, calendar_id: str) -> _Calendar:
        """A user's primary calendar (id = the user's email), created on first use."""
        cid = calendar_id.lower()
        cal = self.calendars.get(cid)
        if cal is None:
            if cid not in self.users:
                raise ApiError(404, "notFound", "Not Found")
            cal = self.calendars[cid] = _Calendar(cid)
        return cal

    def _count(self, op: str) -> None:
        self.api_calls[op] = self.api_calls.get(op, 0) + 1

    # -- fault layer hooks (Google's bodies) ---------------------------------------------------

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        if req.path.rstrip("/") == "/token":
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        resp = api_error(401, "authError", "Invalid Credentials", location="Authorization")
        resp.headers.append(("www-authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"'))
        return resp

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        resp = api_error(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
        if retry_after is not None:
            resp.headers.append(("retry-after", retry_after))
        return resp

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        reason, message = ("backendError", "Backend Error") if status == 500 else ("backendError", "The service is currently unavailable.")
        resp = api_error(status, reason, message)
        if retry_after is not None:
            resp.headers.append(("retry-after", retry_after))
        return resp

    # -- routing -------------------------------------------------------------------------------

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        path = req.path.rstrip("/")
        if path == "/token":
            if req.method != "POST":
                return oauth_error(405, "invalid_request", "Method not allowed; POST the grant.")
            return self.token(req)
        if not path.startswith(API_PREFIX):
            return api_error(404, "notFound", "Not Found")
        try:
            quota = self._quota_fault()
            if quota is not None:
                return quota
            token = self._authorize(req)
            parts = [unquote(p) for p in path[len(API_PREFIX) :].split("/")]
            if len(parts) < 2 or parts[1] != "events" or len(parts) > 3:
                raise ApiError(404, "notFound", "Not Found")
            calendar_id = token.subject if parts[0] == "primary" else parts[0]
            cal = self.calendar(calendar_id)
            write = req.method in ("POST", "PATCH", "PUT", "DELETE")
            if not token.scopes & (CALENDAR_SCOPES if write else READ_SCOPES):
                raise ApiError(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
            if len(parts) == 2:
                if req.method == "GET":
                    self._count("list")
                    return SandboxResponse.json(200, self.list_events(cal, req))
                if req.method == "POST":
                    self._count("insert")
                    return SandboxResponse.json(200, self.insert_event(cal, self._body(req), organizer=token.subject))
                raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
            event_id = parts[2]
            if req.method == "GET":
                self._count("get")
                return SandboxResponse.json(200, self._event(cal, event_id))
            if req.method in ("PATCH", "PUT"):
                self._count("patch" if req.method == "PATCH" else "update")
                self._check_if_match(req, cal, event_id)
                return SandboxResponse.json(
                    200, self.modify_event(cal, event_id, self._body(req), replace=req.method == "PUT")
                )
            if req.method == "DELETE":
                self._count("delete")
                self._check_if_match(req, cal, event_id)
                self.delete_event(cal, event_id)
                return SandboxResponse(204)
            raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
        except ApiError as error:
            return error.response()

    def _quota_fault(self) -> SandboxResponse | None:
        q = self.quota
        q.seen += 1
        fire = False
        if q.next_n > 0:
            q.next_n -= 1
            fire = True
        elif q.every_n > 0 and q.seen % q.every_n == 0:
            fire = True
        if not fire:
            return None
        q.fired += 1
        if q.reason == "429":
            return api_error(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
        return api_error(403, q.reason, _QUOTA_MESSAGES[q.reason], domain="usageLimits")

    def _authorize(self, req: SandboxRequest) -> _Token:
        header = req.headers.get("authorization") or ""
        scheme, _, value = header.partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.expires_at <= self._clock():
            raise ApiError(401, "authError", "Invalid Credentials", location="Authorization")
        return token

    @staticmethod
    def _body(req: SandboxRequest) -> dict[str, Any]:
        try:
            body = req.json()
        except ValueError:
            raise ApiError(400, "parseError", "Parse Error") from None
        if not isinstance(body, dict):
            raise ApiError(400, "parseError", "Parse Error")
        return body

    # -- token endpoint ------------------------------------------------------------------------

    def token(self, req: SandboxRequest) -> SandboxResponse:
        """The JWT bearer grant (RFC 7523) as Google's token endpoint answers it."""
        self.token_requests += 1
        form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        grant = form.get("grant_type", "")
        if grant != JWT_BEARER:
            return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return oauth_error(400, "invalid_grant", "Invalid JWT: the assertion is not a well-formed JWT.")
        if header.get("alg") != "RS256":
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        sa = self.service_account
        if unverified.get("iss") != sa.email:
            return oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        if header.get("kid") not in (None, sa.key_id):
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        audiences = [GOOGLE_TOKEN_URL, f"{req.base_url}/token"]
        try:
            claims = jwt.decode(
                assertion,
                sa.public_key_pem,
                algorithms=["RS256"],
                audience=audiences,
                options={"require": ["iss", "aud", "iat", "exp"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidAudienceError:
            return oauth_error(
                400, "invalid_grant", f"Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URL}"
            )
        except jwt.MissingRequiredClaimError as exc:
            return oauth_error(400, "invalid_request", f"Invalid JWT: missing claim {exc.claim}")
        except jwt.PyJWTError:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        now = self._clock()
        iat, exp = claims["iat"], claims["exp"]
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or exp <= now - CLOCK_SKEW_S
            or iat > now + CLOCK_SKEW_S
            or exp - iat > MAX_ASSERTION_LIFETIME_S
            or exp <= iat
        ):
            return oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                "Check your iat and exp values in the JWT claim.",
            )
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        subject = claims.get("sub")
        if subject is not None:
            subject = str(subject).lower()
            if subject not in self.users:
                return oauth_error(400, "invalid_grant", "Invalid email or User ID")
            granted = self.delegation.get(sa.client_id, frozenset())
            if not scopes <= granted:
                return oauth_error(
                    401,
                    "unauthorized_client",
                    "Client is unauthorized to retrieve access tokens using this method, or client not authorized "
                    "for any of the scopes requested.",
                )
        else:
            # Without delegation the service account acts as itself; it has no calendar in this domain.
            subject = sa.email
        self.assertions.append({"header": header, "claims": claims})
        access = "ya29.sandbox-" + secrets.token_urlsafe(24)
        self.tokens[access] = _Token(subject=subject, scopes=scopes, expires_at=now + self.token_ttl_s)
        return SandboxResponse.json(200, {"access_token": access, "expires_in": self.token_ttl_s, "token_type": "Bearer"})

    # -- events --------------------------------------------------------------------------------

    def _event(self, cal: _Calendar, event_id: str) -> dict[str, Any]:
        event = cal.events.get(event_id)
        if event is None:
            raise ApiError(404, "notFound", "Not Found")
        return event

    def _check_if_match(self, req: SandboxRequest, cal: _Calendar, event_id: str) -> None:
        wanted = req.headers.get("if-match")
        if wanted and wanted != "*" and self._event(cal, event_id)["etag"] != wanted:
            raise ApiError(412, "conditionNotMet", "Precondition Failed", location="If-Match")

    def _touch(self, cal: _Calendar, event: dict[str, Any]) -> None:
        cal.seq += 1
        cal.seq_of[event["id"]] = cal.seq
        now = self.now()
        event["updated"] = rfc3339(now)
        # Google's etags are quoted decimal strings that change on every write.
        event["etag"] = f'"{int(now.timestamp() * 1000) * 1000 + cal.seq % 1000}"'

    @staticmethod
    def _check_times(event: Mapping[str, Any]) -> None:
        start, end = event.get("start"), event.get("end")
        if not isinstance(start, Mapping) or not (start.get("dateTime") or start.get("date")):
            raise ApiError(400, "required", "Missing start time.")
        if not isinstance(end, Mapping) or not (end.get("dateTime") or end.get("date")):
            raise ApiError(400, "required", "Missing end time.")
        try:
            s = _when(start)
            e = _when(end)
        except ValueError:
            raise ApiError(400, "invalid", "Invalid start or end time.") from None
        if e < s:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", location="timeMax")

    def insert_event(self, cal: _Calendar, body: Mapping[str, Any], *, organizer: str) -> dict[str, Any]:
        event_id = body.get("id")
        if event_id is None:
            event_id = secrets.token_hex(13)  # hex digits are base32hex digits
        elif not isinstance(event_id, str) or not EVENT_ID_RE.match(event_id):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        if event_id in cal.events:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        self._check_times(body)
        now = self.now()
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "id": event_id,
            "status": body.get("status", "confirmed"),
            "htmlLink": f"https://www.google.com/calendar/event?eid={base64.urlsafe_b64encode(f'{event_id} {cal.calendar_id}'.encode()).decode().rstrip('=')}",
            "created": rfc3339(now),
            "creator": {"email": organizer},
            "organizer": {"email": cal.calendar_id, "self": True},
            "iCalUID": f"{event_id}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
        }
        for key in ("summary", "description", "location", "start", "end", "attendees", "extendedProperties", "colorId", "transparency"):
            if key in body:
                event[key] = body[key]
        cal.events[event_id] = event
        cal.ordinal[event_id] = cal.next_ordinal
        cal.next_ordinal += 1
        self._touch(cal, event)
        return event

    def modify_event(self, cal: _Calendar, event_id: str, body: Mapping[str, Any], *, replace: bool) -> dict[str, Any]:
        event = self._event(cal, event_id)
        if event["status"] == "cancelled" and body.get("status") not in ("confirmed", "tentative"):
            raise ApiError(410, "deleted", "Resource has been deleted")
        readonly = {"kind", "id", "etag", "htmlLink", "created", "updated", "creator", "organizer", "iCalUID", "eventType"}
        updated = dict(event)
        if replace:
            for key in list(updated):
                if key not in readonly and key not in ("sequence", "reminders"):
                    updated.pop(key)
            updated["status"] = "confirmed"
        for key, value in body.items():
            if key in readonly:
                continue
            if value is None:
                updated.pop(key, None)
            elif key == "extendedProperties" and not replace and isinstance(value, Mapping):
                merged = {k: dict(v) for k, v in (updated.get(key) or {}).items()}
                for scope, props in value.items():
                    merged.setdefault(scope, {}).update(props or {})
                updated[key] = merged
            else:
                updated[key] = value
        self._check_times(updated)
        if updated.get("start") != event.get("start") or updated.get("end") != event.get("end"):
            updated["sequence"] = int(event.get("sequence", 0)) + 1
        event.clear()
        event.update(updated)
        self._touch(cal, event)
        return event

    def delete_event(self, cal: _Calendar, event_id: str) -> None:
        event = self._event(cal, event_id)
        if event["status"] == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        event["status"] = "cancelled"
        self._touch(cal, event)

    def list_events(self, cal: _Calendar, req: SandboxRequest) -> dict[str, Any]:
        params = dict(req.query)
        try:
            max_results = int(params.get("maxResults", DEFAULT_RESULTS))
        except ValueError:
            raise ApiError(400, "invalid", "Invalid value for: maxResults", location="maxResults") from None
        if not 1 <= max_results <= MAX_RESULTS:
            raise ApiError(400, "invalid", "Invalid value for: maxResults", location="maxResults")
        sync_token = params.get("syncToken")
        page_token = params.get("pageToken")
        if sync_token is not None:
            for name in _NOT_WITH_SYNC_TOKEN:
                if name in params:
                    raise ApiError(400, "invalid", f"The syncToken cannot be combined with {name}.", location=name)
            if params.get("showDeleted") == "false":
                raise ApiError(400, "invalid", "showDeleted=false is not allowed with a syncToken.", location="showDeleted")
        if page_token is not None:
            state = self._read_token(page_token, "p")
            if state is None or state.get("c") != cal.calendar_id:
                raise ApiError(400, "invalid", "Invalid page token value.", location="pageToken")
            since, watermark, after, shown = state["s"], state["w"], state["a"], state["e"]
            deleted = bool(state["d"])
        else:
            if sync_token is not None:
                sync = self._read_token(sync_token, "s")
                if (
                    sync is None
                    or sync.get("c") != cal.calendar_id
                    or sync.get("g") != cal.generation
                    or self._clock() - float(sync.get("t", 0)) > self.sync_token_ttl_s
                ):
                    raise ApiError(
                        410,
                        "fullSyncRequired",
                        "Sync token is no longer valid, a full sync is required.",
                        domain="calendar",
                        location="syncToken",
                    )
                since = int(sync["q"])
            else:
                since = None
            watermark, after, shown = cal.seq, -1, 0
            deleted = sync_token is not None or params.get("showDeleted") == "true"
        candidates = sorted(
            (cal.ordinal[eid], eid)
            for eid in cal.events
            if cal.ordinal[eid] > after and (since is None or cal.seq_of[eid] > since)
        )
        time_min = _param_time(params, "timeMin")
        time_max = _param_time(params, "timeMax")
        items: list[dict[str, Any]] = []
        last = after
        more = False
        if self.empty_first_page and page_token is None:
            more = bool(candidates)
        else:
            for ordinal, eid in candidates:
                event = cal.events[eid]
                if len(items) >= max_results:
                    more = True
                    break
                last = ordinal
                if event["status"] == "cancelled" and not deleted:
                    continue
                if time_min or time_max:
                    start, end = _when(event["start"]), _when(event["end"])
                    if (time_max and start >= time_max) or (time_min and end <= time_min):
                        continue
                items.append(event)
        out: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"p{cal.seq}"',
            "summary": cal.calendar_id,
            "updated": rfc3339(self.now()),
            "timeZone": self.time_zone,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "items": items,
        }
        if more:
            out["nextPageToken"] = self._make_token(
                "p", {"c": cal.calendar_id, "s": since, "w": watermark, "a": last, "e": shown + len(items), "d": int(deleted)}
            )
        else:
            out["nextSyncToken"] = self._make_token(
                "s", {"c": cal.calendar_id, "q": watermark, "g": cal.generation, "t": self._clock()}
            )
        return out

    @staticmethod
    def _make_token(kind: str, state: Mapping[str, Any]) -> str:
        raw = json.dumps({"k": kind, **state}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode()

    @staticmethod
    def _read_token(token: str, kind: str) -> dict[str, Any] | None:
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        return state if isinstance(state, dict) and state.get("k") == kind else None

    # -- people editing the calendar -----------------------------------------------------------

    def person_edits(
        self, calendar_id: str, event_id: str, *, action: str, minutes: int = 60, summary: str | None = None
    ) -> dict[str, Any]:
        """What a person does in Calendar: move the event, cancel (delete) it, or retitle it."""
        with self.lock:
            cal = self.calendar(calendar_id)
            event = self._event(cal, event_id)
            if action == "cancel":
                self.delete_event(cal, event_id)
                return event
            if action == "move":
                body = {
                    "start": _shift(event["start"], minutes),
                    "end": _shift(event["end"], minutes),
                }
                return self.modify_event(cal, event_id, body, replace=False)
            if action == "retitle":
                return self.modify_event(cal, event_id, {"summary": summary or event.get("summary", "") + " (edited)"}, replace=False)
            raise ValueError(f"unknown person action {action!r}: move | cancel | retitle")

    def random_person_edits(self, calendar_id: str, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
        """`n` random people's edits (moves and cancellations) among the live events of a calendar."""
        rng = random.Random(seed)
        with self.lock:
            cal = self.calendar(calendar_id)
            live = sorted(eid for eid, e in cal.events.items() if e["status"] != "cancelled")
            done = []
            for eid in rng.sample(live, min(n, len(live))):
                action = rng.choice(("move", "move", "cancel"))
                minutes = rng.choice((-120, -60, 30, 60, 24 * 60))
                self.person_edits(calendar_id, eid, action=action, minutes=minutes)
                done.append({"event_id": eid, "action": action, "minutes": minutes if action == "move" else None})
            return done

    def expire_sync_tokens(self, calendar_id: str | None = None) -> None:
        """Every sync token handed out so far answers 410 from now on."""
        with self.lock:
            for cal in self.calendars.values():
                if calendar_id is None or cal.calendar_id == calendar_id.lower():
                    cal.generation += 1

    def live_events(self, calendar_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.calendar(calendar_id).events.values() if e["status"] != "cancelled"]

    # -- control routes ------------------------------------------------------------------------

    def control_routes(self) -> list[str]:
        return [
            "GET /_sandbox/google/service-account (the JSON key file of the sandbox's service account)",
            'POST /_sandbox/google/quota {"reason": "rateLimitExceeded" | "userRateLimitExceeded" | "quotaExceeded" | "429", "next_n", "every_n"}',
            'POST /_sandbox/google/people/edit {"calendar_id", "event_id", "action": "move" | "cancel" | "retitle", "minutes", "summary"}',
            'POST /_sandbox/google/people/random {"calendar_id", "n", "seed"}',
            'POST /_sandbox/google/sync-tokens/expire {"calendar_id": optional}',
            'POST /_sandbox/google/paging {"empty_first_page": bool}',
            "GET /_sandbox/google/stats",
        ]

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        route = req.path.rstrip("/")
        prefix = "/_sandbox/google/"
        if not route.startswith(prefix):
            return None
        action = route[len(prefix) :]
        if req.method == "GET" and action == "service-account":
            return SandboxResponse.json(200, self.service_account.info)
        if req.method == "GET" and action == "stats":
            return SandboxResponse.json(
                200,
                {
                    "token_requests": self.token_requests,
                    "api_calls": self.api_calls,
                    "quota": self.quota.to_dict(),
                    "calendars": {c.calendar_id: {"events": len(c.events), "seq": c.seq} for c in self.calendars.values()},
                },
            )
        if req.method != "POST":
            return None
        body, error = control_json_body(req)
        if error is not None:
            return error
        try:
            if action == "quota":
                reason = str(body.get("reason", "rateLimitExceeded"))
                if reason not in (*QUOTA_REASONS, "429"):
                    return SandboxResponse.json(422, {"error": f"reason must be one of {', '.join((*QUOTA_REASONS, '429'))}"})
                self.quota = QuotaSwitch(reason=reason, next_n=int(body.get("next_n", 0)), every_n=int(body.get("every_n", 0)))
                return SandboxResponse.json(200, self.quota.to_dict())
            if action == "people/edit":
                event = self.person_edits(
                    str(body["calendar_id"]),
                    str(body["event_id"]),
                    action=str(body.get("action", "move")),
                    minutes=int(body.get("minutes", 60)),
                    summary=body.get("summary"),
                )
                return SandboxResponse.json(200, event)
            if action == "people/random":
                done = self.random_person_edits(str(body["calendar_id"]), int(body.get("n", 1)), seed=int(body.get("seed", 0)))
                return SandboxResponse.json(200, {"edits": done})
            if action == "sync-tokens/expire":
                self.expire_sync_tokens(body.get("calendar_id"))
                return SandboxResponse.json(200, {"expired": True})
            if action == "paging":
                self.empty_first_page = bool(body.get("empty_first_page", False))
                return SandboxResponse.json(200, {"empty_first_page": self.empty_first_page})
        except ApiError as exc:
            return exc.response()
        except (KeyError, TypeError, ValueError) as exc:
            return SandboxResponse.json(422, {"error": f"bad control request: {exc}"})
        return None


def _when(part: Mapping[str, Any]) -> datetime:
    if part.get("dateTime"):
        value = str(part["dateTime"])
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            if not part.get("timeZone"):
                raise ValueError("a dateTime without an offset needs timeZone")
            from zoneinfo import ZoneInfo

            moment = moment.replace(tzinfo=ZoneInfo(str(part["timeZone"])))
        return moment
    return datetime.fromisoformat(str(part["date"])).replace(tzinfo=UTC)


def _shift(part: Mapping[str, Any], minutes: int) -> dict[str, Any]:
    moved = dict(part)
    if part.get("dateTime"):
        moment = _when(part) + timedelta(minutes=minutes)
        moved["dateTime"] = moment.isoformat()
    else:
        moved["date"] = (_when(part) + timedelta(minutes=minutes)).date().isoformat()
    return moved


def _param_time(params: Mapping[str, str], name: str) -> datetime | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise ApiError(400, "invalid", f"Invalid value for: {name}", location=name) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sandbox google [options]``: serve the Google Calendar sandbox."""
    parser = server_parser("google", "Serve the Google Calendar sandbox.", 8405)
    parser.add_argument("--key-file", default=None, help="write the service account's JSON key file here")

    def build(args: argparse.Namespace, faults: dict[str, Any]) -> GoogleCalendarSandbox:
        sandbox = GoogleCalendarSandbox(faults=faults)
        if args.key_file:
            from pathlib import Path

            Path(args.key_file).write_text(sandbox.service_account.key_file_json(), encoding="utf-8")
        return sandbox

    return serve_main(parser, argv, build)

if __name__ == "__main__":
    sys.exit(main())

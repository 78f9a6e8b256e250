"""Secret redaction for logs, debug traces, error rows and artifacts.

Two nets: by *name* (headers, query parameters and mapping keys that carry credentials) and by
*value* (every secret the hub loads is registered, and any string that contains it is masked).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MASK = "***"

_SECRET_NAME = re.compile(
    r"(authorization|password|passwd|secret|token|api[-_]?key|apikey|signature|cookie|session|"
    r"client[-_]?assertion|assertion|private[-_]?key|credential|x-csrf-token|code_verifier|tempauth)",
    re.IGNORECASE,
)
_TEXT_PATTERNS = [
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"),
    # name=value and JSON "name": "value" (a remote's error text often echoes the request body).
    re.compile(
        r"(?i)((?:password|passwd|secret|token|api_key|apikey|client_secret|routing_key|integration_key|signature|sig)"
        r"[\"']?\s*[=:]\s*[\"']?)[^\s&,;\"']+"
    ),
    re.compile(r"(?i)(//[^/:@\s]+:)[^@/\s]+@"),
    # Webhook URLs whose path IS the credential (Slack, Discord), wherever they appear.
    re.compile(r"(?i)((?:hooks\.slack\.com/(?:services|workflows|triggers)|discord(?:app)?\.com/api/webhooks)/)[^\s\"'<>]+"),
]

# Every text pattern needs whitespace, "=", ":", "@" or "/": text without any of them skips the
# substitutions after one C-level scan (most header values and ids: the webhook ingress redacts the
# headers of every delivery).
_MAY_MATCH_PATTERN = re.compile(r"[\s=:@/]")

_known_secrets: set[str] = set()
_secrets_longest_first: tuple[str, ...] = ()
_lock = threading.Lock()


_OPAQUE = re.compile(r"(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9._~%+=-]{8,}|[A-Za-z0-9._~%+=-]{20,}")


def secret_url_parts(url: str) -> list[str]:
    """The pieces of a secret URL that a remote may repeat without the rest: the URL without its scheme,
    its path (a Slack webhook's path is its credential), every opaque path segment, query values and
    the userinfo password, plus their percent-encoded forms. Plain words ("services") are not secrets."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    if not parts.scheme or not parts.netloc:
        return []
    found = [url.split("://", 1)[1]]
    path = parts.path.strip("/")
    if path:
        found.append(path)
        segments = path.split("/")
        if len(segments) > 1:
            found.append("/".join(segments[1:]))  # /services/<team>/<bot>/<token>: all after the first word
        found.extend(seg for seg in segments if _OPAQUE.fullmatch(seg))
    found.extend(v for _, v in parse_qsl(parts.query, keep_blank_values=False))
    if parts.password:
        found.append(parts.password)
    found += [quote(piece, safe="") for piece in found]
    return [piece for piece in dict.fromkeys(found) if len(piece) >= 8]


def url_carries_credentials(url: str) -> bool:
    """True for a configured endpoint with a key inside it (a password, a secret-named query parameter, or
    a long opaque path segment such as an integration key): such a URL is registered as a secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.password or any(is_secret_name(k) for k, _ in parse_qsl(parts.query)):
        return True
    return any(len(seg) >= 20 and _OPAQUE.fullmatch(seg) for seg in parts.path.split("/"))


def register_secret(value: str | None) -> None:
    """Remember a secret value so that any text containing it is masked (ignores short values).

    A secret URL (a Slack webhook, an endpoint with a key in its path or query) also registers its parts
    (`secret_url_parts`), so text that repeats only its path or its token is masked too."""
    global _secrets_longest_first
    if value and len(value) >= 4:
        pieces = [value, *(secret_url_parts(value) if "://" in value else [])]
        with _lock:
            fresh = [p for p in pieces if p not in _known_secrets]
            if fresh:
                _known_secrets.update(fresh)
                _secrets_longest_first = tuple(sorted(_known_secrets, key=len, reverse=True))


def registered_secret_count() -> int:
    """How many secret values are registered: a memo of redacted text is stale once this changes."""
    return len(_known_secrets)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def mask_known_secrets(text: str) -> str:
    """Only the value net: mask registered secrets, leave token-looking text alone (resumable positions
    carry opaque `$skiptoken`s that the name and pattern nets would destroy)."""
    for secret in _secrets_longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_text(text: str) -> str:
    if not text:
        return text
    for secret in _secrets_longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    if _MAY_MATCH_PATTERN.search(text) is None:
        return text
    text = _TEXT_PATTERNS[0].sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _TEXT_PATTERNS[1].sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _TEXT_PATTERNS[2].sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _TEXT_PATTERNS[3].sub(lambda m: f"{m.group(1)}{MASK}", text)
    return text


def redact_url(url: str) -> str:
    """Mask credentials in the userinfo and in secret-named query parameters."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return redact_text(url)  # nothing to mask by position; urlunsplit would also mangle sqlite:///
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = [(k, MASK if is_secret_name(k) else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="$'(),/:")
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_name(k) else redact_text(str(v))) for k, v in headers.items()}


def redact_mapping(data: Any, _depth: int = 0) -> Any:
    """Deep copy of JSON-like data with secret-named keys and known secret values masked."""
    if _depth > 20:
        return MASK
    if isinstance(data, Mapping):
        return {
            str(k): (MASK if is_secret_name(str(k)) and not isinstance(v, (Mapping, list)) else redact_mapping(v, _depth + 1))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact_mapping(v, _depth + 1) for v in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


class RedactingFilter(logging.Filter):
    """Masks secrets in every record that passes through the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the log line
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        return True

"""OAuth2 JWT bearer grant (RFC 7523) as an httpx.Auth flow: Google service accounts and the like.

The assertion is signed with PyJWT + cryptography (RS256), never by hand. The access token is cached until
shortly before expiry and shared by every call of the client; a 401 on an API call drops it and retries the
call once with a fresh one (the same healing as OAuth2ClientCredentials in auth.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import SecretStr

from connectors.core.auth import CachedBearerAuth
from connectors.core.cache import TTLCache
from connectors.core.errors import AuthenticationFailed
from connectors.core.redact import register_secret

log = logging.getLogger(__name__)

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 3600  # Google refuses assertions valid for more than one hour


def load_service_account_info(key_json: SecretStr | None = None, key_file: Path | None = None) -> dict[str, str]:
    """A Google service-account key (the JSON key file) from a secret string or a file path."""
    raw = key_json.get_secret_value() if key_json is not None else ""
    if not raw and key_file is not None:
        try:
            raw = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthenticationFailed(f"cannot read the service-account key file {key_file}: {exc.strerror}") from None
    if not raw.strip():
        raise AuthenticationFailed(
            "no service-account key configured; set GOOGLE_SERVICE_ACCOUNT_JSON or GOOGLE_SERVICE_ACCOUNT_FILE "
            "(see .env.example) or the Prefect Secret block google-service-account-json"
        )
    try:
        info = json.loads(raw)
    except json.JSONDecodeError:
        raise AuthenticationFailed("the service-account key is not valid JSON (expected Google's key file)") from None
    missing = [k for k in ("type", "client_email", "private_key", "private_key_id") if not isinstance(info, dict) or not info.get(k)]
    if missing or info.get("type") != "service_account":
        raise AuthenticationFailed(f"not a service-account key file (missing or wrong: {', '.join(missing) or 'type'})")
    register_secret(info["private_key"])
    return {str(k): str(v) for k, v in info.items()}


class JWTBearerGrant(CachedBearerAuth):
    """Service-account access: a signed assertion (iss, scope, aud, iat, exp, optional sub) traded for a token."""

    def __init__(
        self,
        info: Mapping[str, str],
        *,
        scopes: Sequence[str],
        token_url: str,
        subject: str | None = None,
        lifetime_s: int = MAX_ASSERTION_LIFETIME_S,
        early_expiry_s: float = 60.0,
        cache: TTLCache[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < lifetime_s <= MAX_ASSERTION_LIFETIME_S:
            raise ValueError("assertion lifetime must be 1..3600 s")
        if not scopes:
            raise ValueError("at least one scope is required")
        self.issuer = info["client_email"]
        self.key_id = info.get("private_key_id")
        register_secret(info["private_key"])
        try:
            key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise AuthenticationFailed("the service-account private key cannot be read (expected PKCS#8 PEM)") from None
        if not isinstance(key, RSAPrivateKey):
            raise AuthenticationFailed("the service-account private key is not an RSA key")
        self._key = key
        self.scopes = tuple(scopes)
        self.token_url = token_url
        self.subject = subject or None
        self.lifetime_s = lifetime_s
        self.early_expiry_s = early_expiry_s
        self.cache: TTLCache[str, str] = cache or TTLCache(ttl_s=300)
        self._clock = clock
        self._lock = threading.Lock()
        self.token_requests = 0

    def assertion(self) -> str:
        """The signed JWT: RS256, `kid` = the key id, claims per Google's OAuth2ServiceAccount guide."""
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "scope": " ".join(self.scopes),
            "aud": self.token_url,
            "iat": now,
            "exp": now + self.lifetime_s,
        }
        if self.subject:
            claims["sub"] = self.subject  # domain-wide delegation: act as this user
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.token_url,
            data={"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion()},
            headers={"Accept": "application/json"},
        )

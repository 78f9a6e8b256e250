"""Auth schemes as httpx.Auth flows: Basic, and OAuth2 client credentials with a cached token."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Literal

import httpx
from pydantic import SecretStr

from connectors.core.cache import TTLCache
from connectors.core.errors import AuthenticationFailed, classify_response
from connectors.core.redact import register_secret

log = logging.getLogger(__name__)


def basic_auth(username: str, password: SecretStr) -> httpx.BasicAuth:
    secret = password.get_secret_value()
    if not secret:
        raise AuthenticationFailed(
            "no password configured for Basic auth; set it in the environment (see .env.example) or a Prefect Secret block"
        )
    register_secret(secret)
    return httpx.BasicAuth(username, secret)


class CachedBearerAuth(httpx.Auth):
    """A bearer token from a token endpoint, cached until shortly before expiry and shared by every call.

    A 401 on an API call drops the cached token and retries the call once with a fresh one, which is
    how an expired token (or one revoked early by the server) heals without failing the sync.
    Subclasses say how the token is asked for (`_token_request`) and set `cache`, `early_expiry_s`
    and `token_requests`.
    """

    requires_response_body = True
    cache: TTLCache[str, str]
    early_expiry_s: float
    token_requests: int
    _token_request: Callable[[], httpx.Request]

    def _store(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            error = classify_response(response, operation="token")
            if error.transient:
                # A throttled or unavailable token endpoint is retried like any other call, not a credentials error.
                raise error
            raise AuthenticationFailed(f"token request refused: {error.message}", code=error.code, status_code=response.status_code)
        body = response.json()
        token = str(body["access_token"])
        register_secret(token)
        ttl = max(1.0, float(body.get("expires_in", 3600)) - self.early_expiry_s)
        self.cache.set("token", token, ttl)
        self.token_requests += 1
        return token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.cache.get("token")
        if token is None:
            token = self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            log.info("access token refused (expired or revoked); fetching a new one")
            self.cache.invalidate("token")
            token = self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


class OAuth2ClientCredentials(CachedBearerAuth):
    """Client-credentials grant; the token is cached until shortly before expiry and shared by every call.

    A 401 on an API call drops the cached token and retries the call once with a fresh one, which is
    how an expired token (or one revoked early by the server) heals without failing the sync.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str | None = None,
        early_expiry_s: float = 60.0,
        cache: TTLCache[str, str] | None = None,
        client_auth: Literal["basic", "post"] = "basic",
    ) -> None:
        if not client_secret.get_secret_value():
            raise AuthenticationFailed("no OAuth2 client secret configured; set it in the environment or a Prefect Secret block")
        register_secret(client_secret.get_secret_value())
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        # RFC 6749 2.3.1: HTTP Basic (client_secret_basic) or the form body (client_secret_post, Entra ID's documented form).
        self.client_auth = client_auth
        self.early_expiry_s = early_expiry_s
        self.cache: TTLCache[str, str] = cache or TTLCache(ttl_s=300)
        self.token_requests = 0

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        headers = {"Accept": "application/json"}
        if self.client_auth == "post":
            data["client_id"] = self.client_id
            data["client_secret"] = self._secret.get_secret_value()
        else:
            headers["Authorization"] = httpx.BasicAuth(self.client_id, self._secret.get_secret_value())._auth_header
        return httpx.Request("POST", self.token_url, data=data, headers=headers)

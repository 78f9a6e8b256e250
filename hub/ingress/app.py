"""The webhook ingress: verify, commit to the inbox, and only then answer 2xx.

Endpoints: `POST /webhooks/razorpay`, `GET`/`POST /webhooks/whatsapp`, `GET /health`. Every POST goes
through the same steps: `precheck` on headers and peer (before any of the body is read), a bounded
read of the body, `verify`, then a group commit of the verified items (or, for a provider that must
carry a one-time token, one transaction that spends the token and stores the items). A refusal is
counted in `webhook_rejections` and logged with its reason; it is never stored as an event.

Nothing else is served on this public port: /metrics, /dashboard and /api/monitor/status live on the
monitoring listener (`hub.ingress.observability.create_monitor_app`, its own bind address).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connectors.core.redact import redact_headers, registered_secret_count
from hub.core.db import get_engine
from hub.core.settings import HubSettings, get_settings
from hub.ingress import observability
from hub.ingress.inbox import DbTokenStore, PendingEvent, PendingRejection
from hub.ingress.security import (
    InboundRequest,
    ProviderPolicy,
    Reason,
    Verdict,
    check_address,
    client_address,
    policies_from_settings,
    precheck_client,
    verify_body,
    verify_subscription,
)
from hub.ingress.writer import GroupCommitWriter, default_async_write

logger = logging.getLogger(__name__)


# The answer to an accepted delivery, encoded once per item count: it is the same bytes every time.
_JSON_HEADERS = [(b"content-type", b"application/json")]
_ACCEPTED: dict[int, bytes] = {}


def _accepted(items: int) -> bytes:
    body = _ACCEPTED.get(items)
    if body is None:
        body = _ACCEPTED.setdefault(items, b'{"status":"accepted","items":%d}' % items)
    return body


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    # Lower-case names; a repeated header (X-Forwarded-For) is joined as RFC 9110 allows.
    joined: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


class _Disconnected(Exception):
    """The client went away before its body arrived: there is no one left to answer."""


async def _read_limited(receive: Receive, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _HeaderRedactor:
    """`redact_headers` with a bounded memo: most header lines repeat from one delivery to the next.

    What is stored is bounded too: at most `max_headers` headers, each name and value cut to
    `max_chars` (a sender cannot grow the inbox with headers). The memo is dropped whenever another
    secret is registered, so it never hides a newer secret."""

    def __init__(self, max_entries: int = 4096, max_value_chars: int = 256, *, max_headers: int = 48, max_chars: int = 512) -> None:
        self._memo: dict[tuple[str, str], str] = {}
        self._max = max_entries
        self._max_value = max_value_chars
        self._max_headers = max_headers
        self._max_chars = max_chars
        self._secrets = -1

    def __call__(self, headers: Mapping[str, str]) -> dict[str, str]:
        count = registered_secret_count()
        if count != self._secrets or len(self._memo) > self._max:
            self._memo.clear()
            self._secrets = count
        memo = self._memo
        out: dict[str, str] = {}
        for name, value in headers.items():
            if len(out) >= self._max_headers:
                break
            # Cut before redaction would let a secret straddle the cut; redact whole, then cut.
            key = (name[: self._max_chars], value)
            stored = memo.get(key)
            if stored is None:
                stored = redact_headers({name: value})[name][: self._max_chars]
                if len(value) <= self._max_value:
                    memo[key] = stored
            out[key[0]] = stored
        return out


def create_app(
    settings: HubSettings | None = None,
    *,
    policies: Mapping[str, ProviderPolicy] | None = None,
    tokens: DbTokenStore | None = None,
    writer: GroupCommitWriter | None = None,
) -> FastAPI:
    """The public ingress app (webhooks and /health only); tests pass their own policies (a provider with a timestamp, say)."""
    settings = settings or get_settings()
    policies = dict(policies) if policies is not None else policies_from_settings(settings)
    tokens = tokens or DbTokenStore()
    writer = writer or GroupCommitWriter(
        max_batch=settings.webhook_commit_batch_max,
        max_wait_s=settings.webhook_commit_wait_ms / 1000,
        postgres=default_async_write(),
    )
    verify_token = settings.whatsapp_verify_token.get_secret_value()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from hub.monitoring.health import ensure_flusher

        ensure_flusher()  # webhook measurements reach call_metrics in batches
        yield
        await writer.aclose()  # what was acknowledged is already committed; this commits pending rejections

    app = FastAPI(title="DryMix webhook ingress", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.writer = writer
    observability.install(app, providers=policies)  # webhook measurement only: monitoring has its own listener

    async def refuse(provider: str, verdict: Verdict) -> Response:
        logger.warning("webhook refused: provider=%s reason=%s remote=%s", provider, verdict.reason.value, verdict.client_addr)
        try:
            await writer.submit(rejections=[PendingRejection(provider, verdict.reason.value, verdict.client_addr, datetime.now(UTC))])
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if counting it failed
            logger.error("could not count webhook rejection: %s", exc)
        return JSONResponse({"error": verdict.reason.value}, status_code=verdict.status)

    redact = _HeaderRedactor(max_headers=settings.webhook_max_stored_headers, max_chars=settings.webhook_max_stored_header_chars)

    async def ingest(scope: Scope, receive: Receive, send: Send, provider: str) -> None:
        """Precheck headers and peer, read the body within the limit, verify, group-commit, then 200."""
        policy = policies[provider]
        headers = _headers(scope)
        peer = scope["client"][0] if scope.get("client") else None
        client = client_address(peer, headers.get("x-forwarded-for"), policy.trusted_proxies)
        refused = precheck_client(policy, headers, client)
        if refused is None:
            try:
                body = await _read_limited(receive, policy.max_body_bytes)
            except _Disconnected:
                return
        if refused is not None or body is None:  # body None: over the size limit
            refused = refused or Verdict.refuse(Reason.BODY_TOO_LARGE, client)
            await (await refuse(provider, refused))(scope, receive, send)
            return
        raw_query = scope.get("query_string", b"")
        query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) if raw_query else {}
        inbound = InboundRequest(body=body, headers=headers, peer=peer, query=query)
        verdict = verify_body(policy, inbound, client)
        if not verdict.ok:
            await (await refuse(provider, verdict))(scope, receive, send)
            return
        now = datetime.now(UTC)
        stored_headers = redact(headers)
        unsigned_id = headers.get(policy.provider_event_id_header) if policy.provider_event_id_header else None
        events = [
            PendingEvent(
                provider, item.event_id, item.event_type, body, stored_headers, client, now,
                body_sha256=verdict.body_sha256,
                provider_event_id=unsigned_id[:255] if unsigned_id else None,
                event_at=datetime.fromtimestamp(item.event_at, UTC) if item.event_at is not None else None,
            )
            for item in verdict.items
        ]
        try:
            if verdict.token is not None:
                # The token is spent in the transaction that stores the delivery (a database write: off the loop).
                token_refusal = await run_in_threadpool(tokens.spend_and_store, provider, verdict.token, verdict.body_sha256, events, now)
                if token_refusal is not None:
                    await (await refuse(provider, Verdict.refuse(token_refusal, client)))(scope, receive, send)
                    return
            else:
                await writer.submit(events=events)
        except Exception as exc:  # noqa: BLE001 - not durable, so not acknowledged: the provider retries
            logger.error("webhook not stored: provider=%s error=%s", provider, exc)
            await _send_json(send, 503, b'{"error":"inbox_unavailable"}')
            return
        await _send_json(send, 200, _accepted(len(events)))

    class Ingest:
        """`POST /webhooks/<provider>` as a plain ASGI endpoint: the route needs no dependency injection,
        no request model and no response encoding, so none runs per delivery. (A class, because
        Starlette's Route wraps a plain function as a request -> response endpoint.)"""

        def __init__(self, provider: str) -> None:
            self.provider = provider

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await ingest(scope, receive, send, self.provider)

    # Razorpay events (X-Razorpay-Signature over the raw body) and WhatsApp Cloud API notifications
    # (X-Hub-Signature-256: sha256=...).
    app.router.routes.append(Route("/webhooks/razorpay", Ingest("razorpay"), methods=["POST"], name="razorpay_webhook"))
    app.router.routes.append(Route("/webhooks/whatsapp", Ingest("whatsapp"), methods=["POST"], name="whatsapp_webhook"))

    @app.get("/webhooks/whatsapp")
    async def whatsapp_subscribe(request: Request) -> Response:
        """Meta's subscription handshake: echo hub.challenge when hub.verify_token is ours and the caller is
        allowed to deliver WhatsApp webhooks (the same IP allowlist as the POSTs)."""
        policy = policies["whatsapp"]
        peer = request.client.host if request.client else None
        client = client_address(peer, request.headers.get("x-forwarded-for"), policy.trusted_proxies)
        outside = check_address(policy, client)
        if outside is not None:
            return await refuse("whatsapp", outside)
        verdict = verify_subscription(verify_token, request.query_params)
        if not verdict.ok:
            return await refuse("whatsapp", Verdict.refuse(verdict.reason, client))
        return PlainTextResponse(request.query_params["hub.challenge"])

    @app.get("/health")
    async def health() -> Response:
        """Alive and able to reach the inbox database."""
        try:
            await run_in_threadpool(_ping_database)
        except Exception as exc:  # noqa: BLE001 - health answers, it does not raise
            logger.error("health: database unreachable: %s", exc)
            return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    if settings.webhook_bench_bare:
        bare_max_body = settings.webhook_max_body_bytes

        class Bare:
            """The benchmark's floor: the same app, uvicorn and kind of endpoint (plain ASGI) as the
            webhook routes, and the same answer; it reads the body and does nothing else."""

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                try:
                    await _read_limited(receive, bare_max_body)
                except _Disconnected:
                    return
                await _send_json(send, 200, _accepted(1))

        app.router.routes.append(Route("/bench/bare", Bare(), methods=["POST"], name="bench_bare"))

    return app


def _ping_database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def server_config(app: FastAPI, host: str, port: int, *, log_level: str = "info", **kwargs: object) -> uvicorn.Config:
    """uvicorn settings of the ingress, in one place."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # Never let uvicorn rewrite the client address from X-Forwarded-For: that would let any
        # local hop spoof the allowlist. Trusted proxies are handled by WEBHOOK_TRUSTED_PROXIES.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **kwargs,  # type: ignore[arg-type]
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 8480,
    *,
    log_level: str = "info",
    monitor_host: str | None = None,
    monitor_port: int | None = None,
) -> None:
    """Serve the ingress until interrupted (one process, one event loop, one inbox writer), and beside it,
    on its own bind address, the monitoring listener (unless its port is 0)."""
    settings = get_settings()
    servers = [uvicorn.Server(server_config(create_app(settings), host, port, log_level=log_level))]
    monitor_host = settings.monitor_host if monitor_host is None else monitor_host
    monitor_port = settings.monitor_port if monitor_port is None else monitor_port
    if monitor_port:
        if (monitor_host, monitor_port) == (host, port):
            raise ValueError("the monitoring listener needs its own address: MONITOR_PORT equals the webhook port")
        monitor = observability.create_monitor_app(settings, host=monitor_host)
        servers.append(uvicorn.Server(server_config(monitor, monitor_host, monitor_port, log_level=log_level)))

    async def run_all() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(run_all())

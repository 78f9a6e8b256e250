"""The webhook ingress: verify, commit to the inbox, and only then answer 2xx.

Endpoints: `POST /webhooks/razorpay`, `GET`/`POST /webhooks/whatsapp`, `GET /health`. Every POST goes
through the same steps: `precheck` on headers and peer (before any of the body is read), a bounded
read of the body, `verify`, then a group commit of the verified items. A refusal is counted in
`webhook_rejections` and logged with its reason; it is never stored as an event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from connectors.core.redact import redact_headers
from hub.db import get_engine
from hub.settings import HubSettings, get_settings
from hub.webhooks import observability
from hub.webhooks.inbox import DbTokenStore, PendingEvent, PendingRejection
from hub.webhooks.security import (
    InboundRequest,
    ProviderPolicy,
    Reason,
    TokenStore,
    Verdict,
    client_address,
    policies_from_settings,
    precheck,
    verify,
    verify_subscription,
)
from hub.webhooks.writer import GroupCommitWriter

logger = logging.getLogger(__name__)


def _headers(request: Request) -> dict[str, str]:
    # Starlette gives lower-case names; a repeated header (X-Forwarded-For) is joined as RFC 9110 allows.
    joined: dict[str, str] = {}
    for name, value in request.headers.items():
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` (the rest is never read)."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            return None
    return bytes(received)


def create_app(
    settings: HubSettings | None = None,
    *,
    policies: Mapping[str, ProviderPolicy] | None = None,
    tokens: TokenStore | None = None,
    writer: GroupCommitWriter | None = None,
) -> FastAPI:
    """The ingress app; tests pass their own policies (a provider with a timestamp, say)."""
    settings = settings or get_settings()
    policies = dict(policies) if policies is not None else policies_from_settings(settings)
    tokens = tokens or DbTokenStore()
    writer = writer or GroupCommitWriter(
        max_batch=settings.webhook_commit_batch_max, max_wait_s=settings.webhook_commit_wait_ms / 1000
    )
    verify_token = settings.whatsapp_verify_token.get_secret_value()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from hub.monitoring import ensure_flusher

        ensure_flusher()  # webhook measurements reach call_metrics in batches
        yield
        await writer.aclose()  # what was acknowledged is already committed; this commits pending rejections

    app = FastAPI(title="DryMix webhook ingress", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.writer = writer
    observability.install(app, providers=policies)  # webhook measurement, /metrics, /dashboard (docs/monitoring.md)

    async def refuse(provider: str, verdict: Verdict) -> Response:
        logger.warning("webhook refused: provider=%s reason=%s remote=%s", provider, verdict.reason.value, verdict.client_addr)
        try:
            await writer.submit(rejections=[PendingRejection(provider, verdict.reason.value, verdict.client_addr, datetime.now(UTC))])
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if counting it failed
            logger.error("could not count webhook rejection: %s", exc)
        return JSONResponse({"error": verdict.reason.value}, status_code=verdict.status)

    async def ingest(request: Request, provider: str) -> Response:
        policy = policies[provider]
        headers = _headers(request)
        peer = request.client.host if request.client else None
        refused = precheck(policy, headers, peer)
        if refused is not None:
            return await refuse(provider, refused)
        body = await _read_limited(request, policy.max_body_bytes)
        if body is None:
            client = client_address(peer, headers.get("x-forwarded-for"), policy.trusted_proxies)
            return await refuse(provider, Verdict.refuse(Reason.BODY_TOO_LARGE, client))
        inbound = InboundRequest(body=body, headers=headers, peer=peer, query=dict(request.query_params))
        if policy.token_required:
            # Consuming a token is a database write: off the event loop.
            verdict = await run_in_threadpool(verify, policy, inbound, tokens=tokens)
        else:
            verdict = verify(policy, inbound)
        if not verdict.ok:
            return await refuse(provider, verdict)
        now = datetime.now(UTC)
        stored_headers = redact_headers(headers)
        events = [
            PendingEvent(provider, item.event_id, item.event_type, body, stored_headers, verdict.client_addr, now)
            for item in verdict.items
        ]
        try:
            await writer.submit(events=events)
        except Exception as exc:  # noqa: BLE001 - not durable, so not acknowledged: the provider retries
            logger.error("webhook not stored: provider=%s error=%s", provider, exc)
            return JSONResponse({"error": "inbox_unavailable"}, status_code=503)
        return JSONResponse({"status": "accepted", "items": len(events)})

    @app.post("/webhooks/razorpay")
    async def razorpay_webhook(request: Request) -> Response:
        """Razorpay events (X-Razorpay-Signature over the raw body)."""
        return await ingest(request, "razorpay")

    @app.post("/webhooks/whatsapp")
    async def whatsapp_webhook(request: Request) -> Response:
        """WhatsApp Cloud API notifications (X-Hub-Signature-256: sha256=...)."""
        return await ingest(request, "whatsapp")

    @app.get("/webhooks/whatsapp")
    async def whatsapp_subscribe(request: Request) -> Response:
        """Meta's subscription handshake: echo hub.challenge when hub.verify_token is ours."""
        verdict = verify_subscription(verify_token, request.query_params)
        if not verdict.ok:
            peer = request.client.host if request.client else None
            client = client_address(peer, request.headers.get("x-forwarded-for"), policies["whatsapp"].trusted_proxies)
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

        @app.post("/bench/bare")
        async def bench_bare(request: Request) -> Response:
            """The benchmark's floor: same stack, reads the body, does nothing."""
            await request.body()
            return JSONResponse({"status": "accepted", "items": 1})

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


def serve(host: str = "127.0.0.1", port: int = 8480, *, log_level: str = "info") -> None:
    """Serve the ingress until interrupted (one process, one event loop, one inbox writer)."""
    uvicorn.Server(server_config(create_app(), host, port, log_level=log_level)).run()

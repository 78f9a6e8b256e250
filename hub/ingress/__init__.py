"""Webhook ingress: verification, the durable inbox and the ASGI app (docs/webhooks.md)."""

"""Secrets at run time: the environment first, then whatever fallback the runtime installed.

Nothing here knows Prefect. The flow runtime installs the Prefect Secret-block lookup
(hub/runtime/secret_blocks.py, from tasks/__init__.py) as the fallback; without one a secret missing from
the environment stays empty, and the connector that needs it refuses with a clear AUTHENTICATION_FAILED
(configuration) error instead of starting a Prefect server to look for a block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import SecretStr

from connectors.core.redact import register_secret

log = logging.getLogger(__name__)

#: Looks a secret up by its documented block name: its value, or None when there is none.
SecretFallback = Callable[[str], str | None]

_FALLBACK: SecretFallback | None = None


def install_fallback(resolver: SecretFallback | None) -> SecretFallback | None:
    """Install (or with None remove) where secrets missing from the environment are looked up; returns the previous one."""
    global _FALLBACK
    previous, _FALLBACK = _FALLBACK, resolver
    return previous


def installed_fallback() -> SecretFallback | None:
    return _FALLBACK


def resolve_secret(value: SecretStr, block_name: str, *, fallback: SecretFallback | None = None) -> SecretStr:
    """`value` when set; else what the fallback (`fallback`, or the installed one) finds under `block_name`; else empty."""
    if value.get_secret_value():
        register_secret(value.get_secret_value())
        return value
    lookup = fallback or _FALLBACK
    if lookup is None:
        return value
    try:
        found = lookup(block_name)
    except Exception as exc:  # noqa: BLE001 - no block (or no API) means "not configured", said clearly by the caller
        log.debug("no secret %r from the fallback: %s", block_name, type(exc).__name__)
        return value
    if not found:
        return value
    register_secret(found)
    return SecretStr(found)

"""Prefect Secret blocks as the fallback of `hub.core.secrets.resolve_secret`.

`drymix stack up` stores each integration's secrets as Secret blocks of documented names; a flow that
finds a secret missing from its environment reads the block. The flow runtime installs this lookup
(tasks/__init__.py, next to the shared rate limits); the CLI and `drymix smoke` install the server-only
variant, which asks only a configured Prefect API (PREFECT_API_URL) and never starts a temporary server.
"""

from __future__ import annotations

import json
from typing import Any, cast

from hub.core.secrets import SecretFallback, install_fallback, installed_fallback


def read_secret_block(name: str) -> str | None:
    """The value of the Prefect Secret block `name` as saved (raises when there is none)."""
    from prefect.blocks.system import Secret

    block = cast(Secret[Any], Secret.load(name, _sync=True))  # type: ignore[call-arg]
    # The stored value as saved: Secret.get() would json.loads a string, turning a JSON secret (a Google
    # service-account key file) into a dict whose str() is no longer JSON.
    loaded = block.value.get_secret_value()
    return loaded if isinstance(loaded, str) else json.dumps(loaded)  # a block saved with a JSON object (UI)


def read_secret_block_from_server(name: str) -> str | None:
    """`read_secret_block` only when a Prefect API is configured: without one the lookup would start a temporary server."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return None
    return read_secret_block(name)


def install(*, server_only: bool = False) -> SecretFallback | None:
    """Make Secret blocks the fallback of every secret lookup in this process; returns the previous fallback.

    `server_only` never replaces the full lookup a flow runtime installed."""
    if server_only and installed_fallback() is read_secret_block:
        return read_secret_block
    return install_fallback(read_secret_block_from_server if server_only else read_secret_block)

"""Secrets at run time: the environment first, then a Prefect Secret block of a documented name."""

from __future__ import annotations

import logging
from typing import Any, cast

from pydantic import SecretStr

from connectors.core.redact import register_secret

log = logging.getLogger(__name__)


def resolve_secret(value: SecretStr, block_name: str) -> SecretStr:
    """`value` when set; else the Prefect Secret block `block_name` when a Prefect API has one; else empty."""
    if value.get_secret_value():
        register_secret(value.get_secret_value())
        return value
    try:
        from prefect.blocks.system import Secret

        block = cast(Secret[Any], Secret.load(block_name, _sync=True))  # type: ignore[call-arg]
        loaded = block.get()
    except Exception as exc:  # noqa: BLE001 - no block (or no API) means "not configured", said clearly by the caller
        log.debug("no Prefect Secret block %r: %s", block_name, type(exc).__name__)
        return value
    secret = str(loaded)
    register_secret(secret)
    return SecretStr(secret)

"""Secrets at run time: the environment first, then a Prefect Secret block of a documented name."""

from __future__ import annotations

import json
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
        # The stored value as saved: Secret.get() would json.loads a string, turning a JSON secret (a Google
        # service-account key file) into a dict whose str() is no longer JSON.
        loaded = block.value.get_secret_value()
    except Exception as exc:  # noqa: BLE001 - no block (or no API) means "not configured", said clearly by the caller
        log.debug("no Prefect Secret block %r: %s", block_name, type(exc).__name__)
        return value
    secret = loaded if isinstance(loaded, str) else json.dumps(loaded)  # a block saved with a JSON object (UI)
    register_secret(secret)
    return SecretStr(secret)

"""Helpers for the plant connector tests: configurations pointed at an in-process asyncua sandbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.core.config import PlantOpcuaConfig, RetryPolicy
from hub.core.settings import plant_opcua_config, reset_settings_cache


@pytest.fixture
def plant_config(tmp_path: Path) -> Callable[..., PlantOpcuaConfig]:
    """`plant_config(url, **overrides)`: the shipped [plant_opcua] with test-sized timeouts and retries."""
    reset_settings_cache()
    base = plant_opcua_config()

    def make(url: str, **overrides: Any) -> PlantOpcuaConfig:
        values: dict[str, Any] = {
            "base_url": url,
            "timeout_s": 3.0,
            "connect_timeout_s": 2.0,
            "reconnect_max_delay_s": 1.0,
            "retry": RetryPolicy(max_retries=3, base_delay_ms=50, max_delay_ms=500, jitter_ratio=0.2),
            "client_certificate": tmp_path / "pki" / "hub_client_cert.der",
            "client_private_key": tmp_path / "pki" / "hub_client_key.pem",
            "buffer_dir": tmp_path / "buffer",
        }
        values.update(overrides)
        return base.model_copy(update=values)

    return make

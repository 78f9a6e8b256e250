"""Secrets at run time: the environment first, then a Prefect Secret block."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from connectors.core.redact import redact_text
from hub.secrets import resolve_secret


def test_environment_value_wins_and_is_registered_for_redaction() -> None:
    value = resolve_secret(SecretStr("env-password-123"), "sap-password")
    assert value.get_secret_value() == "env-password-123"
    assert "env-password-123" not in redact_text("login with env-password-123 failed")


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_secret_block_is_used_when_the_environment_has_none() -> None:
    from prefect.blocks.system import Secret

    Secret(value="block-password-456").save("sap-password-test", overwrite=True)
    value = resolve_secret(SecretStr(""), "sap-password-test")
    assert value.get_secret_value() == "block-password-456"
    assert "block-password-456" not in redact_text("block-password-456")


@pytest.mark.usefixtures("prefect_harness")
def test_missing_block_leaves_the_secret_empty() -> None:
    assert resolve_secret(SecretStr(""), "no-such-block").get_secret_value() == ""

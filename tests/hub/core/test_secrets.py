"""Secrets at run time: the environment first, then a Prefect Secret block."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from connectors.core.redact import redact_text
from hub.core.secrets import resolve_secret


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


@pytest.mark.usefixtures("prefect_harness")
def test_json_secret_block_comes_back_as_the_same_json_text() -> None:
    """A service-account key file stored as a block is handed to the connector as JSON, not as a Python repr."""
    import json

    from prefect.blocks.system import Secret

    key_file = json.dumps({"type": "service_account", "client_email": "hub@example.iam.gserviceaccount.com", "private_key": "-----BEGIN..."})
    Secret(value=SecretStr(key_file)).save("google-key-test", overwrite=True)
    assert resolve_secret(SecretStr(""), "google-key-test").get_secret_value() == key_file
    Secret(value={"username": "hub", "password": "pw"}).save("dict-secret-test", overwrite=True)
    assert json.loads(resolve_secret(SecretStr(""), "dict-secret-test").get_secret_value()) == {"username": "hub", "password": "pw"}

"""Secrets at run time: the environment first, then the fallback the runtime installed (Prefect Secret blocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.core.redact import redact_text
from hub.core.secrets import install_fallback, resolve_secret
from hub.runtime.secret_blocks import read_secret_block

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def no_fallback() -> Iterator[None]:
    previous = install_fallback(None)
    yield
    install_fallback(previous)


@pytest.fixture
def secret_blocks(prefect_harness: None) -> Iterator[None]:
    """The flow runtime's plug-in (tasks/__init__.py installs it), against the test harness's Prefect API."""
    previous = install_fallback(read_secret_block)
    yield
    install_fallback(previous)


def test_environment_value_wins_and_is_registered_for_redaction() -> None:
    value = resolve_secret(SecretStr("env-password-123"), "sap-password")
    assert value.get_secret_value() == "env-password-123"
    assert "env-password-123" not in redact_text("login with env-password-123 failed")


@pytest.mark.usefixtures("no_fallback")
def test_without_a_fallback_a_missing_secret_stays_empty() -> None:
    assert resolve_secret(SecretStr(""), "sap-password").get_secret_value() == ""


@pytest.mark.usefixtures("no_fallback")
def test_installed_fallback_fills_a_missing_secret_and_a_failing_one_leaves_it_empty() -> None:
    install_fallback({"sap-password": "from-the-fallback-789"}.get)
    assert resolve_secret(SecretStr(""), "sap-password").get_secret_value() == "from-the-fallback-789"
    assert "from-the-fallback-789" not in redact_text("from-the-fallback-789")
    assert resolve_secret(SecretStr(""), "no-such-secret").get_secret_value() == ""

    def unreachable(name: str) -> str | None:
        raise ConnectionError("no API")

    install_fallback(unreachable)
    assert resolve_secret(SecretStr(""), "sap-password").get_secret_value() == ""


@pytest.mark.usefixtures("secret_blocks")
def test_prefect_secret_block_is_used_when_the_environment_has_none() -> None:
    from prefect.blocks.system import Secret

    Secret(value="block-password-456").save("sap-password-test", overwrite=True)
    value = resolve_secret(SecretStr(""), "sap-password-test")
    assert value.get_secret_value() == "block-password-456"
    assert "block-password-456" not in redact_text("block-password-456")


@pytest.mark.usefixtures("secret_blocks")
def test_missing_block_leaves_the_secret_empty() -> None:
    assert resolve_secret(SecretStr(""), "no-such-block").get_secret_value() == ""


@pytest.mark.usefixtures("secret_blocks")
def test_json_secret_block_comes_back_as_the_same_json_text() -> None:
    """A service-account key file stored as a block is handed to the connector as JSON, not as a Python repr."""
    from prefect.blocks.system import Secret

    key_file = json.dumps({"type": "service_account", "client_email": "hub@example.iam.gserviceaccount.com", "private_key": "-----BEGIN..."})
    Secret(value=SecretStr(key_file)).save("google-key-test", overwrite=True)
    assert resolve_secret(SecretStr(""), "google-key-test").get_secret_value() == key_file
    Secret(value={"username": "hub", "password": "pw"}).save("dict-secret-test", overwrite=True)
    assert json.loads(resolve_secret(SecretStr(""), "dict-secret-test").get_secret_value()) == {"username": "hub", "password": "pw"}


BUILD_WITHOUT_SECRETS = """
import sys

from connectors.core.errors import AuthenticationFailed
from hub.runtime import connections

refused = {}
for name in ("sap", "razorpay", "whatsapp", "microsoft365", "google_workspace"):
    try:
        getattr(connections, f"build_{name}_connector")()
    except AuthenticationFailed as exc:
        refused[name] = str(exc.category)
plant = connections.build_plant_connector()  # a session user without a password: refused by the server, later
print(sorted(refused.items()))
print(plant._password.get_secret_value() == "")
print(sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect.")))
"""


def test_building_connectors_without_secrets_or_fallback_is_a_configuration_error_and_never_imports_prefect(
    tmp_path: Path,
) -> None:
    """No secret in the environment and no plug-in installed: each builder refuses with AUTHENTICATION_FAILED,
    and Prefect is not even imported (before, the Secret-block lookup started a temporary Prefect server)."""
    secrets = (
        "SAP_PASSWORD", "RAZORPAY_KEY_SECRET", "WHATSAPP_ACCESS_TOKEN", "MICROSOFT365_CLIENT_SECRET",
        "GOOGLE_SERVICE_ACCOUNT_JSON", "GOOGLE_SERVICE_ACCOUNT_FILE", "PLANT_OPCUA_PASSWORD",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update({name: "" for name in secrets})
    env.update(PYTHONPATH=str(ROOT), PLANT_OPCUA_USERNAME="hub-operator", SAP_USERNAME="DRYMIX_INT")
    done = subprocess.run(
        [sys.executable, "-c", BUILD_WITHOUT_SECRETS], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    refused, plant_without_password, prefect_modules = done.stdout.strip().splitlines()
    assert refused == str(sorted({name: "AUTHENTICATION_FAILED" for name in
                                  ("sap", "razorpay", "whatsapp", "microsoft365", "google_workspace")}.items()))
    assert plant_without_password == "True"
    assert prefect_modules == "[]"

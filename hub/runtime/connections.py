"""Every connector built from the hub's settings: the one place that knows both settings and connectors.

Connectors read no settings and resolve no secrets (see docs/architecture.md): here each builder takes
the integration's knobs from config/integrations.toml (with their environment overrides), resolves its
secrets (the environment, then the fallback the runtime installed, hub/core/secrets.py) and hands both
to the connector. A secret that is still missing is refused as AUTHENTICATION_FAILED, a configuration
error, before any call is made.

System modules are imported inside their builder: a flow that builds one connector does not load the
others (asyncua, JWT crypto).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from connectors.core.auth import OAuth2ClientCredentials, basic_auth
from connectors.core.client import IntegrationClient
from connectors.core.config import IntegrationConfig, PlantOpcuaConfig, RetryPolicy
from connectors.core.debug import DebugLog
from connectors.core.errors import AuthenticationFailed, InvalidRequest
from hub.core.secrets import resolve_secret
from hub.core.settings import (
    debug_log_path,
    get_settings,
    integration_config,
    lab_config,
    microsoft365_options,
    plant_opcua_config,
    sap_sales_order_options,
)
from hub.runtime import jobs

# Every connector the hub builds queues its background work (`Integration.queue_job`) as Prefect flow runs
# (hub/runtime/jobs.py, docs/background-jobs.md); a test hands an instance its own `job_queue`.
jobs.install()

if TYPE_CHECKING:
    from connectors.google_workspace.connector import GoogleCalendarConnector
    from connectors.lab.api import LabApiConnector
    from connectors.microsoft365.connector import Microsoft365Connector
    from connectors.plant.connector import PlantConnector
    from connectors.razorpay.connector import RazorpayConnector
    from connectors.sap.connector import SapConnector
    from connectors.sap.sales_orders import SapSalesOrderConnector
    from connectors.whatsapp.connector import WhatsAppConnector


def debug_log(integration: str) -> Path | None:
    """Where the integration's client appends redacted request/response pairs when its debug mode is on
    (INTEGRATION_DEBUG for all, or this one only: hub/core/settings.py `integration_debug_enabled`); None when off."""
    return debug_log_path(integration)


def sap_auth(config: IntegrationConfig) -> httpx.Auth:
    """Basic (communication user) or OAuth2 client credentials; secrets from the environment or Secret blocks."""
    settings = get_settings()
    if config.auth == "oauth2":
        if not config.token_url:
            raise AuthenticationFailed("sap.auth is oauth2 but sap.token_url is not set in config/integrations.toml")
        secret = resolve_secret(settings.sap_client_secret, "sap-client-secret")
        return OAuth2ClientCredentials(config.token_url, settings.sap_client_id, secret)
    return basic_auth(settings.sap_username, resolve_secret(settings.sap_password, "sap-password"))


def build_sap_connector(
    *,
    transport: httpx.BaseTransport | None = None,
    config: IntegrationConfig | None = None,
    retry: RetryPolicy | None = None,
    page_size: int | None = None,
) -> SapConnector:
    """The SAP connector from settings (credentials) and config/integrations.toml (everything else)."""
    from connectors.sap.connector import SapConnector

    return SapConnector(_sap_client(config or integration_config("sap"), transport, retry), page_size=page_size)


def _sap_client(config: IntegrationConfig, transport: httpx.BaseTransport | None, retry: RetryPolicy | None) -> IntegrationClient:
    """An HTTP client for one SAP OData service: the integration's user, limits and retries, SAP's error body."""
    from connectors.sap.odata import parse_sap_error

    return IntegrationClient(
        config,
        auth=sap_auth(config),
        transport=transport,
        headers={"Accept": "application/json"},
        retry=retry,
        body_parser=parse_sap_error,
        debug_log=debug_log(config.name),
    )


def build_sap_sales_order_connector(
    *,
    transport: httpx.BaseTransport | None = None,
    config: IntegrationConfig | None = None,
    retry: RetryPolicy | None = None,
    page_size: int | None = None,
) -> SapSalesOrderConnector:
    """The API_SALES_ORDER_SRV connector: the SAP integration's user, limits and retries on the sales-order service
    (sap.sales_order_base_url or SAP_SALES_ORDER_BASE_URL, else the service beside the business-partner one)."""
    from connectors.sap.sales_orders import SALES_ORDER_SERVICE, SapSalesOrderConnector, service_url

    config = config or integration_config("sap")
    options = sap_sales_order_options()
    config = config.model_copy(update={"base_url": options.base_url or service_url(config.base_url, SALES_ORDER_SERVICE)})
    return SapSalesOrderConnector(_sap_client(config, transport, retry), page_size=page_size, overlap_s=options.overlap_s)


def build_razorpay_connector(
    *,
    transport: httpx.BaseTransport | None = None,
    config: IntegrationConfig | None = None,
    retry: RetryPolicy | None = None,
    page_size: int | None = None,
) -> RazorpayConnector:
    """The Razorpay connector from settings (key pair) and config/integrations.toml (everything else)."""
    from connectors.razorpay.connector import RazorpayConnector, parse_razorpay_error

    config = config or integration_config("razorpay")
    settings = get_settings()
    if not settings.razorpay_key_id:
        raise AuthenticationFailed("RAZORPAY_KEY_ID is not set (see .env.example)", integration="razorpay")
    secret = resolve_secret(settings.razorpay_key_secret, "razorpay-key-secret")
    client = IntegrationClient(
        config,
        auth=basic_auth(settings.razorpay_key_id, secret),
        transport=transport,
        headers={"Accept": "application/json"},
        retry=retry,
        body_parser=parse_razorpay_error,
        debug_log=debug_log(config.name),
    )
    return RazorpayConnector(client, key_secret=secret.get_secret_value(), page_size=page_size)


def build_whatsapp_connector(
    *,
    transport: httpx.BaseTransport | None = None,
    config: IntegrationConfig | None = None,
    retry: RetryPolicy | None = None,
) -> WhatsAppConnector:
    """The WhatsApp connector from settings (token, phone number id) and config/integrations.toml."""
    from connectors.whatsapp.connector import WhatsAppClient, WhatsAppConnector, parse_meta_error

    config = config or integration_config("whatsapp")
    settings = get_settings()
    if not settings.whatsapp_phone_number_id:
        raise AuthenticationFailed("WHATSAPP_PHONE_NUMBER_ID is not set (see .env.example)", integration="whatsapp")
    token = resolve_secret(settings.whatsapp_access_token, "whatsapp-access-token").get_secret_value()
    if not token:
        raise AuthenticationFailed("WHATSAPP_ACCESS_TOKEN is not set (see .env.example)", integration="whatsapp")
    client = WhatsAppClient(
        config,
        transport=transport,
        headers={"Accept": "application/json", "Authorization": f"Bearer {token}"},
        retry=retry,
        body_parser=parse_meta_error,
        debug_log=debug_log(config.name),
    )
    return WhatsAppConnector(client, phone_number_id=settings.whatsapp_phone_number_id)


def build_microsoft365_connector(
    *,
    transport: httpx.BaseTransport | None = None,
    config: IntegrationConfig | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Microsoft365Connector:
    """The Graph connector from settings (tenant, app, secret, drive, calendar user) and config/integrations.toml."""
    from connectors.microsoft365.connector import (
        GRAPH_SCOPE,
        INTEGRATION,
        Microsoft365Connector,
        parse_graph_error,
        shared_token_cache,
    )

    config = config or integration_config(INTEGRATION)
    settings = get_settings()
    if not settings.microsoft365_tenant_id or not settings.microsoft365_client_id:
        raise AuthenticationFailed("MICROSOFT365_TENANT_ID and MICROSOFT365_CLIENT_ID must be set (see .env.example)", integration=INTEGRATION)
    secret = resolve_secret(settings.microsoft365_client_secret, "microsoft365-client-secret")
    if not secret.get_secret_value():
        raise AuthenticationFailed("MICROSOFT365_CLIENT_SECRET is not set (see .env.example)", integration=INTEGRATION)
    if not config.token_url:
        raise InvalidRequest("microsoft365.token_url is not configured", integration=INTEGRATION)
    token_url = config.token_url.replace("{tenant}", quote(settings.microsoft365_tenant_id, safe=""))
    auth = OAuth2ClientCredentials(
        token_url,
        settings.microsoft365_client_id,
        secret,
        scope=GRAPH_SCOPE,
        client_auth="post",
        cache=shared_token_cache(token_url, settings.microsoft365_client_id),
    )
    documents, calendar = microsoft365_options()
    debug = debug_log(config.name)
    client = IntegrationClient(config, auth=auth, transport=transport, headers={"Accept": "application/json"}, retry=retry,
                               body_parser=parse_graph_error, sleep=sleep, debug_log=debug)
    # The upload URL is pre-authenticated: this client has no auth at all, so no chunk PUT can carry a token.
    upload_client = IntegrationClient(config, transport=transport, headers={"Accept": "application/json"}, retry=retry,
                                      body_parser=parse_graph_error, sleep=sleep, debug_log=debug)
    return Microsoft365Connector(
        client, upload_client,
        drive_id=settings.microsoft365_drive_id,
        calendar_user=settings.microsoft365_calendar_user,
        documents=documents, calendar=calendar, sleep=sleep,
    )


def build_google_workspace_connector(
    *,
    transport: httpx.BaseTransport | None = None,
    config: IntegrationConfig | None = None,
    calendar_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> GoogleCalendarConnector:
    """The Google Calendar connector: the service-account key (JSON secret or file), the delegated subject, the calendar."""
    from connectors.core.jwt_bearer import JWTBearerGrant, load_service_account_info
    from connectors.google_workspace.connector import DEFAULT_SCOPES, INTEGRATION, GoogleCalendarConnector

    settings = get_settings()
    config = config or integration_config(INTEGRATION)
    key_json = settings.google_service_account_json
    if not key_json.get_secret_value() and settings.google_service_account_file is None:
        # Neither in the environment: the fallback (a Prefect Secret block of the documented name) may hold it.
        key_json = resolve_secret(key_json, "google-service-account-json")
    info = load_service_account_info(key_json, settings.google_service_account_file)
    auth = JWTBearerGrant(
        info,
        scopes=[s for s in settings.google_scopes.split() if s] or list(DEFAULT_SCOPES),
        token_url=config.token_url or "https://oauth2.googleapis.com/token",
        subject=settings.google_delegated_subject or None,
    )
    client = IntegrationClient(
        config, auth=auth, transport=transport, headers={"Accept": "application/json"}, sleep=sleep, debug_log=debug_log(config.name)
    )
    return GoogleCalendarConnector(client, calendar_id=google_calendar_id(calendar_id))


def google_calendar_id(calendar_id: str | None = None) -> str:
    """The calendar a Google sync reads and writes: the one asked for, else the configured one."""
    settings = get_settings()
    calendar = calendar_id or settings.google_calendar_id
    if calendar == "primary" and settings.google_delegated_subject:
        # A user's primary calendar id is their email: links and cursors then name the real calendar.
        calendar = settings.google_delegated_subject
    return calendar


def build_plant_connector(config: PlantOpcuaConfig | None = None) -> PlantConnector:
    """The OPC UA connector with the configured URL and security; the session password and the client key's
    passphrase come from the environment or the fallback (`plant-opcua-password`, `plant-opcua-key-password`),
    looked up only when they are needed: a username is set, or the session is secured."""
    from connectors.plant.connector import PlantConnector

    settings = get_settings()
    config = config or plant_opcua_config()
    password = settings.plant_opcua_password
    key_password = settings.plant_opcua_key_password
    if settings.plant_opcua_username:
        password = resolve_secret(password, "plant-opcua-password")
    if config.security == "sign_and_encrypt":
        key_password = resolve_secret(key_password, "plant-opcua-key-password")
    debug = debug_log(config.name)
    return PlantConnector(config, username=settings.plant_opcua_username, password=password, key_password=key_password,
                          debug_log=DebugLog(debug) if debug is not None else None)


def build_lab_api_connector(
    *,
    base_url: str | None = None,
    transport: httpx.BaseTransport | None = None,
    config: IntegrationConfig | None = None,
    retry: RetryPolicy | None = None,
    page_size: int | None = None,
) -> LabApiConnector:
    """The results-API connector: base URL from `LAB_API_URL` / `[lab] api_url`, knobs from `[lab]`."""
    from connectors.lab.api import LabApiConnector

    url = base_url or lab_config().api_url
    if not url:
        raise ValueError("no lab results API configured: set LAB_API_URL or [lab] api_url")
    config = (config or integration_config("lab")).model_copy(update={"base_url": url.rstrip("/") + "/", "auth": "none"})
    return LabApiConnector(IntegrationClient(config, transport=transport, retry=retry, debug_log=debug_log(config.name)), page_size=page_size)

"""Typed settings: environment for secrets and deployment knobs, one TOML file for per-integration knobs."""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The plain config types a connector is handed live in connectors/core/config.py; old imports from here still work.
from connectors.core.config import (  # noqa: F401 - RetryPolicy re-exported
    CalendarOptions,
    DocumentOptions,
    IntegrationConfig,
    PlantOpcuaConfig,
    RetryPolicy,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INTEGRATIONS_FILE = ROOT / "config" / "integrations.toml"


class HubSettings(BaseSettings):
    """Process-wide settings; every field can be set by its upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{ROOT / 'var' / 'drymix.db'}",
        description="SQLAlchemy URL of the ERP database; postgresql+psycopg://... selects PostgreSQL.",
    )
    org_id: str = "drymix"
    integrations_file: Path = DEFAULT_INTEGRATIONS_FILE
    data_docs_dir: Path = ROOT / "var" / "data_docs"
    data_docs_keep_runs: int = Field(50, ge=1, description="validation reports kept (each run has its own site)")
    log_dir: Path = ROOT / "logs"
    # Debug mode (docs/troubleshooting.md): the redacted call log of LOG_DIR/integration_debug.log. For every
    # integration, or for some only: these, `<NAME>_DEBUG=1`, or `debug = true` in their integrations-file table.
    integration_debug: bool = Field(False, description="debug mode for every integration")
    debug_integrations: str = Field("", description="comma-separated integrations in debug mode (what `drymix --debug <name>` sets)")

    # SAP S/4HANA communication user (Basic) or OAuth2 client (client credentials).
    sap_base_url: str | None = None
    sap_username: str = "DRYMIX_INT"
    sap_password: SecretStr = SecretStr("")
    sap_client_id: str = "drymix-hub"
    sap_client_secret: SecretStr = SecretStr("")
    # SAP_SALES_ORDER_BASE_URL overrides sap.sales_orders.base_url (default: beside the SAP base URL).
    sap_sales_order_base_url: str | None = None

    # Razorpay API keys (HTTP Basic key_id:key_secret); RAZORPAY_BASE_URL overrides razorpay.base_url.
    razorpay_base_url: str | None = None
    razorpay_key_id: str = ""
    razorpay_key_secret: SecretStr = SecretStr("")

    # WhatsApp Cloud API (Bearer system-user token, one business phone number id);
    # WHATSAPP_BASE_URL overrides whatsapp.base_url.
    whatsapp_base_url: str | None = None
    whatsapp_access_token: SecretStr = SecretStr("")
    whatsapp_phone_number_id: str = ""

    # Microsoft 365 (docs/microsoft365.md): an Entra ID app registration with application permissions
    # Files.ReadWrite.All / Sites.ReadWrite.All and Calendars.ReadWrite. MICROSOFT365_BASE_URL and
    # MICROSOFT365_TOKEN_URL override microsoft365.base_url / token_url (the sandbox serves both).
    microsoft365_base_url: str | None = None
    microsoft365_token_url: str | None = None
    microsoft365_tenant_id: str = ""
    microsoft365_client_id: str = ""
    microsoft365_client_secret: SecretStr = SecretStr("")
    microsoft365_drive_id: str = Field("", description="document library (drive) the ERP's documents go to")
    microsoft365_calendar_user: str = Field("", description="UPN or object id of the mailbox whose calendar holds ERP schedules")

    # Google Workspace (docs/google-workspace.md): a service account with domain-wide delegation for the
    # Calendar scope. The key file's JSON as a secret (GOOGLE_SERVICE_ACCOUNT_JSON) or a path to it
    # (GOOGLE_SERVICE_ACCOUNT_FILE); GOOGLE_BASE_URL / GOOGLE_TOKEN_URL override google_workspace.base_url / token_url.
    google_base_url: str | None = None
    google_token_url: str | None = None
    google_service_account_json: SecretStr = SecretStr("")
    google_service_account_file: Path | None = None
    google_delegated_subject: str = Field("", description="user the service account acts as (domain-wide delegation)")
    google_calendar_id: str = Field("primary", description="calendar holding the ERP's schedules (an email or a calendar id)")
    google_scopes: str = Field("https://www.googleapis.com/auth/calendar.events", description="space-separated OAuth scopes")
    # Plant OPC UA server (docs/plant.md); PLANT_OPCUA_URL overrides plant_opcua.base_url. The session is
    # anonymous unless a username is set; the password and the client key's passphrase are secrets.
    plant_opcua_url: str | None = None
    plant_opcua_username: str = ""
    plant_opcua_password: SecretStr = SecretStr("")
    plant_opcua_key_password: SecretStr = SecretStr("")
    plant_opcua_buffer_dir: str = Field("", description="overrides plant_opcua.buffer_dir (the durable local buffer); empty = config")
    plant_opcua_tag_map: str = Field("", description="overrides plant_opcua.tag_map (the site tag map file); empty = config")

    # Webhook ingress (docs/webhooks.md). Secret lists are comma-separated, current first: during a
    # rotation both the new and the previous secret verify.
    razorpay_webhook_secrets: SecretStr = SecretStr("")
    whatsapp_app_secrets: SecretStr = SecretStr("")
    whatsapp_verify_token: SecretStr = SecretStr("")
    razorpay_webhook_allowed_ips: str = Field("", description="comma-separated CIDRs; empty = any address")
    whatsapp_webhook_allowed_ips: str = Field("", description="comma-separated CIDRs; empty = any address")
    webhook_trusted_proxies: str = Field("", description="comma-separated proxy CIDRs whose X-Forwarded-For is believed")
    webhook_one_time_token_providers: str = Field("", description="providers whose deliveries must carry a one-time token")
    webhook_max_body_bytes: int = Field(1_048_576, ge=1)
    webhook_max_age_s: int = Field(
        300, ge=1, description="window, both ways, for a provider that signs a delivery timestamp (neither Razorpay nor Meta does)"
    )
    webhook_max_future_skew_s: int = Field(
        300, ge=0, description="a payload time further ahead of our clock than this is refused (future_event)"
    )
    razorpay_webhook_max_event_age_s: int = Field(
        86_400, ge=60, description="a Razorpay payload created_at older than this is refused (stale_event): Razorpay retries for 24 h"
    )
    whatsapp_webhook_max_event_age_s: int = Field(
        604_800, ge=60, description="a WhatsApp message/status timestamp older than this is refused (stale_event): Meta retries for about 7 days"
    )
    webhook_max_stored_headers: int = Field(48, ge=1, description="request headers kept with a stored event (the rest are dropped)")
    webhook_max_stored_header_chars: int = Field(512, ge=16, description="characters kept of each stored header name and value")
    webhook_commit_batch_max: int = Field(500, ge=1, description="most events written in one group-commit transaction")
    webhook_commit_wait_ms: float = Field(
        0.0, ge=0, description="extra wait for more events before a commit; 0 = batch what queued while the last commit ran"
    )
    webhook_bench_bare: bool = Field(False, description="benchmark only: also serve POST /bench/bare, which does nothing")

    # Monitoring endpoints (/metrics, /dashboard, /api/monitor/status) are served by their own listener, never
    # on the public webhook port (docs/monitoring.md). A token is required when set, and always off loopback.
    monitor_host: str = Field("127.0.0.1", description="bind address of the monitoring listener (not the webhook port)")
    monitor_port: int = Field(8481, ge=0, le=65535, description="port of the monitoring listener; 0 = do not serve it")
    monitor_token: SecretStr = Field(SecretStr(""), description="Bearer token (or Basic password) the monitoring listener requires")

    # Monitoring and alerting (docs/monitoring.md). Non-secret knobs in MONITORING_FILE; channel secrets here.
    monitoring_file: Path = ROOT / "config" / "monitoring.toml"
    metrics_enabled: bool = Field(True, description="measure every connector call and webhook (buffered, flushed in batches)")
    alert_smtp_username: str = ""
    alert_smtp_password: SecretStr = SecretStr("")
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    slack_webhook_url: SecretStr = SecretStr("")
    pagerduty_routing_key: SecretStr = SecretStr("")

    # Error workflow (docs/troubleshooting.md): queued reruns of a failed unit (SYNC_FAILED and transient
    # categories) by the retry-failed-units flow, then escalation. Delay = base * 2^(attempt-1) + jitter, capped.
    error_retry_max_attempts: int = Field(5, ge=0, le=50, description="queued reruns of a failed unit before it is escalated")
    error_retry_base_delay_s: float = Field(60.0, ge=0, description="delay before the first queued rerun")
    error_retry_max_delay_s: float = Field(3600.0, ge=0, description="cap of the delay between queued reruns")
    error_retry_jitter_ratio: float = Field(0.5, ge=0.0, le=1.0)
    error_retry_lease_s: float = Field(900.0, gt=0, description="a rerun in progress is not claimed again for this long")
    error_spool_dir: Path = Field(
        ROOT / "var" / "error_spool",
        description="where failures wait on local disk while the database is unavailable (one file per database)",
    )

    # Database outages (docs/troubleshooting.md): a dead or silent database fails a run within these bounds
    # (classified DATABASE_UNAVAILABLE) instead of hanging it; loads retry across a window before giving up.
    database_connect_timeout_s: float = Field(10.0, gt=0, description="PostgreSQL: give up opening a connection after this long")
    database_statement_timeout_s: float = Field(
        300.0, ge=0, description="PostgreSQL statement_timeout; the client also stops waiting for any answer after this plus the connect timeout; 0 = none"
    )
    database_tcp_user_timeout_s: float = Field(30.0, ge=0, description="PostgreSQL: drop a connection whose sent data stays unacknowledged this long; 0 = OS default")
    database_keepalives_idle_s: int = Field(30, ge=1, description="PostgreSQL: TCP keepalive probes start after this idle time")
    database_keepalives_interval_s: int = Field(10, ge=1, description="PostgreSQL: seconds between unanswered keepalive probes")
    database_keepalives_count: int = Field(3, ge=1, description="PostgreSQL: unanswered keepalive probes before the connection is dropped")
    database_sqlite_busy_timeout_s: float = Field(30.0, ge=0, description="SQLite: wait this long for another writer's lock")
    database_retry_window_s: float = Field(60.0, ge=0, description="load retries (jittered exponential backoff) span about this long")

    # Lab testing machines: the folder they drop their exports into (overrides lab.base_url).
    lab_drop_dir: Path | None = None
    # Optional results API of the testing machine / LIMS middleware (overrides [lab] api_url).
    lab_api_url: str | None = None

    @field_validator("google_service_account_file", mode="before")
    @classmethod
    def _blank_path_is_none(cls, value: object) -> object:
        # GOOGLE_SERVICE_ACCOUNT_FILE= (blank, as in .env.example) means "no file", not the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _normalise_pg_driver(cls, value: str) -> str:
        # psycopg 3 is the only PostgreSQL driver we ship; plain postgresql:// would pick psycopg2.
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


def split_list(value: str | SecretStr) -> list[str]:
    """Items of a comma-separated setting, blanks dropped (secrets are unwrapped)."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return [item.strip() for item in raw.split(",") if item.strip()]


@lru_cache(maxsize=1)
def get_settings() -> HubSettings:
    return HubSettings()


def reset_settings_cache() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
    _load_integrations.cache_clear()
    _dotenv.cache_clear()
    from hub.monitoring.config import reset_monitoring_config_cache

    reset_monitoring_config_cache()


@lru_cache(maxsize=8)
def _load_integrations(path: Path) -> dict[str, IntegrationConfig]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    # [jobs] holds the schedules of hub jobs (hub/operations/deploy.py), not an integration.
    return {name: IntegrationConfig(name=name, **values) for name, values in raw.items() if name != "jobs"}


def integration_config(name: str) -> IntegrationConfig:
    """The configuration of one integration; an unknown name is a clear error."""
    configs = _load_integrations(get_settings().integrations_file)
    try:
        config = configs[name]
    except KeyError:
        known = ", ".join(sorted(configs))
        raise KeyError(f"no integration {name!r} in {get_settings().integrations_file} (known: {known})") from None
    settings = get_settings()
    override = {
        "sap": settings.sap_base_url,
        "razorpay": settings.razorpay_base_url,
        "whatsapp": settings.whatsapp_base_url,
        "microsoft365": settings.microsoft365_base_url,
        "google_workspace": settings.google_base_url,
        "plant_opcua": settings.plant_opcua_url,
    }.get(name)
    if override:
        config = config.model_copy(update={"base_url": override})
    token_url = {"microsoft365": settings.microsoft365_token_url, "google_workspace": settings.google_token_url}.get(name)
    if token_url:
        config = config.model_copy(update={"token_url": token_url})
    return config


def all_integrations() -> dict[str, IntegrationConfig]:
    return dict(_load_integrations(get_settings().integrations_file))


_TRUE = frozenset({"1", "true", "yes", "on"})


def integration_debug_enabled(name: str) -> bool:
    """Is debug mode on for this integration? INTEGRATION_DEBUG turns it on for all; for one, in this order:
    DEBUG_INTEGRATIONS (`drymix --debug <name>`), `<NAME>_DEBUG` (environment, then .env: 0 turns the file's
    setting off), `debug = true` in its integrations-file table. An unknown name is never in debug mode."""
    settings = get_settings()
    if settings.integration_debug or name in split_list(settings.debug_integrations):
        return True
    variable = f"{name.upper()}_DEBUG"
    flag = os.environ.get(variable)
    if flag is None:
        flag = _dotenv(str(settings.model_config.get("env_file") or ".env")).get(variable)
    if flag is not None and flag.strip():
        return flag.strip().lower() in _TRUE
    configs = _load_integrations(settings.integrations_file)
    return bool(configs[name].debug) if name in configs else False


def debug_log_path(name: str) -> Path | None:
    """Where the integration's debug entries go (LOG_DIR/integration_debug.log), or None when its debug mode is off."""
    return get_settings().log_dir / "integration_debug.log" if integration_debug_enabled(name) else None


@lru_cache(maxsize=4)
def _dotenv(path: str) -> dict[str, str | None]:
    """The .env file pydantic-settings reads (per-integration `<NAME>_DEBUG` flags are not fields of HubSettings)."""
    from dotenv import dotenv_values

    return dict(dotenv_values(path)) if Path(path).is_file() else {}


def microsoft365_options() -> tuple[DocumentOptions, CalendarOptions]:
    """The `[microsoft365.documents]` and `[microsoft365.calendar]` sub-tables (IntegrationConfig keeps only the common knobs)."""
    with get_settings().integrations_file.open("rb") as fh:
        section = tomllib.load(fh).get("microsoft365", {})
    return DocumentOptions(**section.get("documents", {})), CalendarOptions(**section.get("calendar", {}))


class SapSalesOrderOptions(BaseModel):
    """[sap.sales_orders] of config/integrations.toml: what the sales-order read adds to the SAP integration's knobs."""

    base_url: str | None = Field(None, description="API_SALES_ORDER_SRV root; unset = beside the business-partner service")
    overlap_s: int = Field(300, ge=0, description="an incremental read re-reads this many seconds before the watermark")
    reconcile_after_h: float = Field(24.0, gt=0, description="a run is a full, reconciling read when the last one is older")
    batch_pages: int | None = Field(None, ge=1, description="pages per batch of the sales-order read; unset = [sap] batch_pages")
    schedule_cron: str = "*/10 * * * *"


def sap_sales_order_options() -> SapSalesOrderOptions:
    """[sap.sales_orders] with SAP_SALES_ORDER_BASE_URL applied."""
    settings = get_settings()
    with settings.integrations_file.open("rb") as fh:
        section = dict(tomllib.load(fh).get("sap", {}).get("sales_orders", {}))
    if settings.sap_sales_order_base_url:
        section["base_url"] = settings.sap_sales_order_base_url
    return SapSalesOrderOptions(**section)


class LabConfig(BaseModel):
    """The lab drop folder and validation knobs: [lab] in config/integrations.toml, LAB_DROP_DIR overrides the folder."""

    drop_dir: Path
    settle_s: float = Field(5.0, ge=0, description="a file is read only after its size and mtime stood still this long")
    archive: bool = Field(True, description="move processed files to processed/, duplicates/ or rejected/ under the drop folder")
    timezone: str = Field("Asia/Kolkata", description="zone of the machines' clocks, for export times without an offset")
    planned_ages: list[int] = Field(default_factory=lambda: [1, 7, 28], description="specimen ages (days) the lab tests at")
    strength_abs_tolerance_mpa: float = Field(0.05, ge=0, description="reported strength may differ from load/area by this much...")
    strength_rel_tolerance: float = Field(0.02, ge=0, description="...or by this fraction of it, whichever is larger")
    max_files_per_run: int = Field(200, ge=1)
    api_url: str | None = Field(None, description="results API base URL; unset = drop folder only")
    profiles: list[str] | None = Field(None, description="instrument profiles (config/lab/<name>.toml) in the order tried; unset = every one there")
    profiles_dir: Path = Field(ROOT / "config" / "lab", description="where the instrument profiles are")


def lab_config() -> LabConfig:
    """[lab] of the integrations file; `base_url = "file://var/lab_drop/"` names the drop folder (relative to the project)."""
    settings = get_settings()
    with settings.integrations_file.open("rb") as fh:
        raw = dict(tomllib.load(fh).get("lab", {}))
    base_url = str(raw.pop("base_url", "file://var/lab_drop/"))
    known = set(LabConfig.model_fields)
    values = {k: v for k, v in raw.items() if k in known}
    if settings.lab_drop_dir is not None:
        drop = settings.lab_drop_dir
    else:
        if not base_url.startswith("file://"):
            raise ValueError(f"lab.base_url must be a file:// URL naming the drop folder, got {base_url!r}")
        drop = Path(base_url.removeprefix("file://"))
    values["drop_dir"] = drop if drop.is_absolute() else ROOT / drop
    if "profiles_dir" in values and not Path(values["profiles_dir"]).is_absolute():
        values["profiles_dir"] = ROOT / values["profiles_dir"]
    if settings.lab_api_url:
        values["api_url"] = settings.lab_api_url
    return LabConfig(**values)


def plant_opcua_config() -> PlantOpcuaConfig:
    """[plant_opcua] with PLANT_OPCUA_URL applied; relative paths are taken from the repository root."""
    base = integration_config("plant_opcua")
    with get_settings().integrations_file.open("rb") as fh:
        raw = dict(tomllib.load(fh).get("plant_opcua", {}))
    raw.update(name="plant_opcua", base_url=base.base_url)
    if get_settings().plant_opcua_buffer_dir.strip():
        raw["buffer_dir"] = Path(get_settings().plant_opcua_buffer_dir.strip())
    if get_settings().plant_opcua_tag_map.strip():
        raw["tag_map"] = Path(get_settings().plant_opcua_tag_map.strip())
    config = PlantOpcuaConfig(**raw)
    updates = {
        key: ROOT / value
        for key in ("client_certificate", "client_private_key", "server_certificate", "buffer_dir", "tag_map")
        if isinstance(value := getattr(config, key), Path) and not value.is_absolute()
    }
    return config.model_copy(update=updates) if updates else config

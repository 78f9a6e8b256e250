"""The plain configuration a connector is handed: pydantic models, no environment or file reading.

The hub fills them from config/integrations.toml and the environment (hub/core/settings.py) and passes
them in (hub/runtime/connections.py); tests build them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

# The repository root: default places of the plant client's key material and durable buffer.
_ROOT = Path(__file__).resolve().parents[2]

CHUNK_UNIT = 320 * 1024  # Graph: every fragment but the last is a multiple of 320 KiB
MAX_FRAGMENT = 60 * 1024 * 1024  # Graph: each request carries < 60 MiB
ConflictPolicy = Literal["replace", "rename", "fail"]


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter: base * 2^(attempt-1) + jitter, capped."""

    max_retries: int = Field(3, ge=0, le=20)
    base_delay_ms: int = Field(1000, ge=0)
    max_delay_ms: int = Field(60_000, ge=0)
    jitter_ratio: float = Field(0.5, ge=0.0, le=1.0)


class IntegrationConfig(BaseModel):
    """Non-secret knobs of one integration, from config/integrations.toml."""

    name: str
    base_url: str
    auth: Literal["basic", "oauth2", "none"] = "basic"
    token_url: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    page_size: int = Field(1000, ge=1)
    batch_pages: int = Field(10, ge=1)
    overlap_days: int = Field(1, ge=0)
    rate_budget_per_s: float = Field(10.0, gt=0)
    schedule_cron: str = "*/15 * * * *"
    retry: RetryPolicy = RetryPolicy()
    debug: bool = Field(False, description="debug mode for this integration only: its redacted call log (docs/troubleshooting.md)")
    extract_process: bool = Field(
        False, description="a run reads and maps its pages in a process of its own, beside its validation and loads "
        "(tasks/extract_process.py): Linux (fork), a connector over the network, a mapped dataset, not a partitioned read"
    )


class PlantOpcuaConfig(IntegrationConfig):
    """[plant_opcua] in config/integrations.toml: the common knobs plus what OPC UA needs."""

    tag_map: Path = Field(_ROOT / "config" / "plant" / "drymix-simulator.toml",
                          description="the site tag map (config/plant/*.toml): what to collect, namespaces by URI, batch records")
    security: Literal["none", "sign_and_encrypt"] = "none"
    client_certificate: Path = _ROOT / "var" / "plant_pki" / "hub_client_cert.der"
    client_private_key: Path = _ROOT / "var" / "plant_pki" / "hub_client_key.pem"
    server_certificate: Path | None = Field(None, description="pin the server's certificate; unset = take it from GetEndpoints")
    application_uri: str = "urn:drymix:hub:plant-client"
    stale_after_s: float = Field(120.0, gt=0, description="a continuously sampled tag whose source timestamp is older is stale")
    subscription_period_ms: float = Field(500.0, gt=0)
    reconnect_max_delay_s: float = Field(10.0, gt=0)
    buffer_dir: Path = _ROOT / "var" / "plant_buffer"
    flush_chunk: int = Field(5000, ge=1, description="buffered entries loaded per database transaction")


class DocumentOptions(BaseModel):
    """`[microsoft365.documents]` in config/integrations.toml."""

    upload_schedule_cron: str = "*/5 * * * *"
    known_folders: list[str] = Field(default_factory=lambda: ["ERP/Test Certificates", "ERP/Delivery Challans", "ERP/Invoices"])
    default_conflict_policy: ConflictPolicy = "rename"
    simple_upload_max_bytes: int = Field(4 * 1024 * 1024, ge=1, le=4 * 1024 * 1024)
    chunk_bytes: int = Field(10 * CHUNK_UNIT, ge=CHUNK_UNIT, le=MAX_FRAGMENT - CHUNK_UNIT)
    max_file_bytes: int = Field(250 * 1024 * 1024, ge=1)
    rows_per_task: int = Field(20, ge=1)
    max_attempts: int = Field(5, ge=1)

    @field_validator("chunk_bytes")
    @classmethod
    def _multiple_of_unit(cls, value: int) -> int:
        if value % CHUNK_UNIT:
            raise ValueError(f"chunk_bytes must be a multiple of 320 KiB ({CHUNK_UNIT} bytes)")
        return value


class CalendarOptions(BaseModel):
    """`[microsoft365.calendar]` in config/integrations.toml."""

    window_past_days: int = Field(30, ge=0)
    window_future_days: int = Field(180, ge=1)
    delta_page_size: int = Field(50, ge=1, le=1000)
    push_page_size: int = Field(100, ge=1)

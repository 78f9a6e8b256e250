"""SQLAlchemy 2 models of the hub's own tables and the ERP tables it loads.

Every table runs on SQLite (the embedded default) and PostgreSQL; JSON columns are JSONB on
PostgreSQL. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite has no 64-bit autoincrement alias other than INTEGER PRIMARY KEY.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always hands back aware UTC (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: timestamps are timezone-aware UTC inside the hub")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ErrorStatus(enum.StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    RESOLVED = "resolved"
    ESCALATED = "escalated"


class QuarantineStatus(enum.StrEnum):
    QUARANTINED = "quarantined"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class IntegrationErrorRow(Base):
    """Every failure that ended a unit of work, until someone resolves it."""

    __tablename__ = "integration_errors"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64), default="drymix")
    integration: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(64))
    operation: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str] = mapped_column(Text)
    error_type: Mapped[str] = mapped_column(String(32), comment="category: AUTHENTICATION_FAILED ... SYNC_FAILED")
    severity: Mapped[str] = mapped_column(String(16))
    transient: Mapped[bool] = mapped_column(Boolean, default=False)
    http_status: Mapped[int | None] = mapped_column(Integer)
    request_data: Mapped[dict[str, Any] | None] = mapped_column(JsonType, comment="redacted of credentials")
    response_data: Mapped[dict[str, Any] | None] = mapped_column(JsonType, comment="redacted of credentials")
    unit: Mapped[dict[str, Any] | None] = mapped_column(JsonType, comment="the failed unit of work (page/batch position)")
    remedy: Mapped[str | None] = mapped_column(Text, comment="what on-call should do")
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=ErrorStatus.PENDING.value)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolution_note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_integration_errors_status_integration", "status", "integration"),
        Index("ix_integration_errors_created_at", "created_at"),
    )


class SyncState(Base):
    """One cursor/watermark per (integration, dataset), written with the rows it covers."""

    __tablename__ = "sync_state"

    integration: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    last_run_id: Mapped[str | None] = mapped_column(String(64))
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rows_total: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class QuarantinedRecord(Base):
    """A source row refused by validation: kept with its raw record and why, never lost."""

    __tablename__ = "quarantined_records"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    integration: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(64))
    record_key: Mapped[str] = mapped_column(String(128), comment="source primary key, or a row digest when it has none")
    raw_record: Mapped[dict[str, Any]] = mapped_column(JsonType)
    mapped_record: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    failed_expectations: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=QuarantineStatus.QUARANTINED.value)
    seen_count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    resolution_note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # One open quarantine entry per source record: seeing it again refreshes it, never duplicates it.
        Index(
            "uq_quarantined_records_open",
            "integration",
            "dataset",
            "record_key",
            unique=True,
            postgresql_where=text("status = 'quarantined'"),
            sqlite_where=text("status = 'quarantined'"),
        ),
        Index("ix_quarantined_records_status", "status", "integration", "dataset"),
    )


class Customer(Base):
    """The ERP's canonical customer, loaded from SAP business partners (A_BusinessPartner + A_Customer)."""

    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(10), primary_key=True, comment="SAP A_BusinessPartner.BusinessPartner")
    sap_customer: Mapped[str | None] = mapped_column(String(10), comment="SAP A_BusinessPartner.Customer")
    category: Mapped[str] = mapped_column(String(16), comment="SAP BusinessPartnerCategory: 1=person, 2=organization")
    name: Mapped[str] = mapped_column(String(81), comment="SAP BusinessPartnerFullName, else OrganizationBPName1, else FirstName LastName")
    first_name: Mapped[str | None] = mapped_column(String(40), comment="SAP FirstName")
    last_name: Mapped[str | None] = mapped_column(String(40), comment="SAP LastName")
    search_term: Mapped[str | None] = mapped_column(String(20), comment="SAP SearchTerm1")
    bp_grouping: Mapped[str | None] = mapped_column(String(4), comment="SAP BusinessPartnerGrouping")
    language: Mapped[str | None] = mapped_column(String(2), comment="SAP CorrespondenceLanguage")
    industry: Mapped[str | None] = mapped_column(String(10), comment="SAP Industry")
    email: Mapped[str | None] = mapped_column(String(241), comment="SAP to_BusinessPartnerAddress/to_EmailAddress/EmailAddress (first)")
    phone: Mapped[str | None] = mapped_column(String(30), comment="SAP .../to_PhoneNumber InternationalPhoneNumber, else PhoneNumber normalised to E.164")
    mobile: Mapped[str | None] = mapped_column(String(30), comment="SAP .../to_MobilePhoneNumber, normalised to E.164")
    street: Mapped[str | None] = mapped_column(String(60), comment="SAP to_BusinessPartnerAddress/StreetName")
    house_number: Mapped[str | None] = mapped_column(String(10), comment="SAP to_BusinessPartnerAddress/HouseNumber")
    city: Mapped[str | None] = mapped_column(String(40), comment="SAP to_BusinessPartnerAddress/CityName")
    postal_code: Mapped[str | None] = mapped_column(String(10), comment="SAP to_BusinessPartnerAddress/PostalCode")
    region: Mapped[str | None] = mapped_column(String(3), comment="SAP to_BusinessPartnerAddress/Region")
    country: Mapped[str] = mapped_column(String(3), comment="SAP to_BusinessPartnerAddress/Country (ISO 3166-1 alpha-2)")
    gstin: Mapped[str | None] = mapped_column(String(20), comment="SAP to_BusinessPartnerTax BPTaxNumber where BPTaxType = IN3")
    account_group: Mapped[str | None] = mapped_column(String(4), comment="SAP to_Customer/CustomerAccountGroup")
    is_blocked: Mapped[bool] = mapped_column(Boolean, comment="SAP BusinessPartnerIsBlocked")
    is_archived: Mapped[bool] = mapped_column(Boolean, comment="SAP IsMarkedForArchiving")
    deletion_flag: Mapped[bool] = mapped_column(Boolean, comment="SAP to_Customer/DeletionIndicator")
    order_block: Mapped[str | None] = mapped_column(String(2), comment="SAP to_Customer/OrderIsBlockedForCustomer")
    sap_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="SAP CreationDate + CreationTime")
    sap_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), comment="SAP LastChangeDate + LastChangeTime (else creation)")
    row_hash: Mapped[str] = mapped_column(String(32), comment="digest of the mapped columns: unchanged rows are not rewritten")
    source_run_id: Mapped[str | None] = mapped_column(String(64), comment="flow run that last wrote the row")
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="when the hub last wrote the row")

    __table_args__ = (Index("ix_customers_gstin", "gstin"), Index("ix_customers_sap_changed_at", "sap_changed_at"))


class WebhookStatus(enum.StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    FAILED = "failed"


class WebhookEvent(Base):
    """One verified webhook item, committed before the provider was answered 2xx (the durable inbox)."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(
        String(255), comment="razorpay: x-razorpay-event-id; whatsapp: message:<wamid> or status:<wamid>:<status>"
    )
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary, comment="the raw request body, byte for byte as signed")
    headers: Mapped[dict[str, Any]] = mapped_column(JsonType, comment="request headers, redacted of secrets")
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.RECEIVED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # The provider's own id is the idempotency key: a redelivery is acknowledged and stored once.
        UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event_id"),
        Index("ix_webhook_events_status", "status", "provider", "id"),
    )


class WebhookRejection(Base):
    """Refused deliveries counted per provider, reason and minute: a flood adds to counts, not rows."""

    __tablename__ = "webhook_rejections"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True, comment="the minute the rejections fell in")
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_remote_addr: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookToken(Base):
    """A one-time token the hub issued: only its hash is kept, and it can be used once before it expires."""

    __tablename__ = "webhook_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True, comment="sha256 hex of the token")
    provider: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Payment(Base):
    """One Razorpay order and the state of its payment, moved only forward (see data_mappings/payments.py)."""

    __tablename__ = "payments"

    order_id: Mapped[str] = mapped_column(String(40), primary_key=True, comment="Razorpay order id (order_...)")
    receipt: Mapped[str | None] = mapped_column(String(40), comment="our receipt (invoice number) sent with the order")
    amount_paise: Mapped[int | None] = mapped_column(BigInteger, comment="order amount in paise")
    currency: Mapped[str | None] = mapped_column(String(3))
    order_status: Mapped[str] = mapped_column(String(16), default="created", comment="created | attempted | paid")
    payment_id: Mapped[str | None] = mapped_column(String(40), comment="Razorpay payment id (pay_...) of the attempt that decides the state")
    payment_status: Mapped[str] = mapped_column(String(16), default="created", comment="created | authorized | captured | failed | refunded")
    method: Mapped[str | None] = mapped_column(String(32), comment="upi, card, netbanking, wallet, ...")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_description: Mapped[str | None] = mapped_column(Text)
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="when the hub first saw the payment captured")
    last_event_id: Mapped[str | None] = mapped_column(String(64), comment="x-razorpay-event-id of the last applied webhook")
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="provider time of the state in the row (event or payment created_at)")
    source: Mapped[str] = mapped_column(String(16), comment="api (order created by the hub) | webhook | reconciliation: what last moved the row")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_payments_payment_id", "payment_id"), Index("ix_payments_receipt", "receipt"))



class WhatsAppMessage(Base):
    """One WhatsApp message (outgoing, or written in by a customer) and its latest status, moved only forward
    (see data_mappings/whatsapp.py)."""

    __tablename__ = "whatsapp_messages"

    wamid: Mapped[str] = mapped_column(String(128), primary_key=True, comment="WhatsApp message id (wamid....)")
    direction: Mapped[str] = mapped_column(String(8), comment="outbound (sent by the hub) | inbound (written by a customer)")
    recipient: Mapped[str | None] = mapped_column(String(32), comment="wa_id of the customer (outbound) or our phone number id (inbound)")
    sender: Mapped[str | None] = mapped_column(String(32), comment="our phone number id (outbound) or the customer's wa_id (inbound)")
    message_type: Mapped[str | None] = mapped_column(String(16), comment="text | template | image | ...")
    template_name: Mapped[str | None] = mapped_column(String(512))
    body: Mapped[str | None] = mapped_column(Text, comment="text body (outbound text, inbound text) or template parameters")
    status: Mapped[str] = mapped_column(String(16), comment="accepted | sent | delivered | read | failed (outbound); received (inbound)")
    error_code: Mapped[int | None] = mapped_column(Integer, comment="Meta error code of a failed message")
    error_title: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="provider time of the sent status")
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_event_id: Mapped[str | None] = mapped_column(String(255), comment="inbox event id of the last applied webhook")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_whatsapp_messages_recipient", "recipient"), Index("ix_whatsapp_messages_status", "status"))

CUSTOMER_COLUMNS: list[str] = [c.name for c in Customer.__table__.columns]


# --- Plant (OPC UA) ---


class PlantReading(Base):
    """One value of one plant tag as the OPC UA server reported it: value, status code and source time.

    `reading_key` makes a reading idempotent: the same tag at the same source timestamp (a stale value
    read again, or a buffer flush repeated after a crash) is stored once.
    """

    __tablename__ = "plant_readings"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    reading_key: Mapped[str] = mapped_column(String(64), comment="sha1 of tag + source timestamp (server timestamp when the source has none)")
    tag: Mapped[str] = mapped_column(String(128), comment="browse path below the plant folder, e.g. Mixers/M1/MotorCurrent")
    node_id: Mapped[str] = mapped_column(String(255), comment="OPC UA NodeId string, e.g. ns=2;s=Mixers.M1.MotorCurrent")
    equipment: Mapped[str | None] = mapped_column(String(64), comment="mixer / scale / silo / dryer the tag belongs to")
    value: Mapped[float | None] = mapped_column(Float, comment="numeric value (None for text tags or a bad value)")
    value_text: Mapped[str | None] = mapped_column(String(255), comment="text value (state, material, batch id)")
    unit: Mapped[str | None] = mapped_column(String(16), comment="engineering unit (EUInformation display name): kg, %, A, degC, s")
    status_code: Mapped[int] = mapped_column(BigInteger, comment="OPC UA StatusCode value (0 = Good)")
    status_name: Mapped[str] = mapped_column(String(64), comment="StatusCode symbolic name, e.g. Good, BadSensorFailure")
    quality: Mapped[str] = mapped_column(String(16), comment="good | uncertain | bad | stale")
    source_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="DataValue.SourceTimestamp")
    server_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="DataValue.ServerTimestamp")
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime(), comment="when the hub read it (before buffering)")
    quality_flags: Mapped[list[str] | None] = mapped_column(JsonType, comment="bad_quality, stale, out_of_range ...")
    row_hash: Mapped[str] = mapped_column(String(32))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("reading_key", name="uq_plant_readings_reading_key"),
        Index("ix_plant_readings_tag_source_timestamp", "tag", "source_timestamp"),
    )


class ProductionBatch(Base):
    """One completed mixer batch as the plant recorded it: recipe, times and every component's dosing."""

    __tablename__ = "production_batches"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), comment="plant batch id, e.g. B-M1-000123")
    batch_seq: Mapped[int] = mapped_column(BigInteger, comment="server's monotonically increasing batch counter")
    product_code: Mapped[str] = mapped_column(String(32))
    recipe_code: Mapped[str] = mapped_column(String(32))
    mixer: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime())
    mixing_time_s: Mapped[float | None] = mapped_column(Float)
    total_target_kg: Mapped[float | None] = mapped_column(Float)
    total_actual_kg: Mapped[float | None] = mapped_column(Float)
    max_deviation_pct: Mapped[float | None] = mapped_column(Float, comment="largest |actual - target| / target of a component, in %")
    components: Mapped[list[dict[str, Any]]] = mapped_column(
        JsonType, comment="[{component, material, target_kg, actual_kg, deviation_pct}]"
    )
    quality_flags: Mapped[list[str] | None] = mapped_column(JsonType, comment="dosing_out_of_tolerance ...")
    row_hash: Mapped[str] = mapped_column(String(32))
    source_run_id: Mapped[str | None] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("batch_id", name="uq_production_batches_batch_id"),
        Index("ix_production_batches_ended_at", "ended_at"),
    )


# --- Lab results ---


class LabResult(Base):
    """One tested specimen (EN 1015-11 prism or prism half) from a lab testing-machine export.

    No foreign key to `production_batches`: lab exports often arrive before the plant's batch record,
    so an unknown batch is flagged (`batch_known`) and re-checked on every collection run instead.
    """

    __tablename__ = "lab_results"

    specimen_id: Mapped[str] = mapped_column(String(64), primary_key=True, comment="the machine's specimen id, e.g. B-M1-000123-28D-P1A")
    batch_id: Mapped[str] = mapped_column(String(64), comment="production batch the specimen was cast from (plant batch id)")
    product_code: Mapped[str | None] = mapped_column(String(40), comment="product / recipe code as entered on the machine")
    test_type: Mapped[str] = mapped_column(String(16), comment="compressive | flexural")
    test_standard: Mapped[str | None] = mapped_column(String(40), comment="e.g. EN 1015-11:2019")
    age_days: Mapped[int] = mapped_column(Integer, comment="specimen age at test, days (one of the planned ages)")
    length_mm: Mapped[float | None] = mapped_column(Float, comment="measured specimen length (prism 160 mm)")
    width_mm: Mapped[float | None] = mapped_column(Float, comment="measured width b")
    height_mm: Mapped[float | None] = mapped_column(Float, comment="measured depth d")
    span_mm: Mapped[float | None] = mapped_column(Float, comment="flexural support span l (100 mm)")
    area_mm2: Mapped[float | None] = mapped_column(Float, comment="compressive loaded area (40 x 40 mm platens = 1600)")
    peak_load_kn: Mapped[float] = mapped_column(Float, comment="maximum load F, kN")
    strength_mpa: Mapped[float] = mapped_column(Float, comment="strength as reported by the machine, MPa (N/mm2)")
    computed_strength_mpa: Mapped[float | None] = mapped_column(Float, comment="F/A or 1.5 F l / (b d^2) recomputed by the hub")
    tested_at: Mapped[datetime] = mapped_column(UTCDateTime(), comment="test time (naive export times read in the lab's time zone)")
    machine_id: Mapped[str] = mapped_column(String(64), comment="testing machine, e.g. MATEST-C089")
    operator: Mapped[str | None] = mapped_column(String(64))
    batch_known: Mapped[bool] = mapped_column(Boolean, default=False, comment="batch_id found in production_batches (re-checked each run)")
    export_sha256: Mapped[str] = mapped_column(String(64), comment="content checksum of the export the row came from (lab_exports.sha256)")
    export_file: Mapped[str | None] = mapped_column(String(255), comment="file name of that export")
    source_line: Mapped[int | None] = mapped_column(Integer, comment="line of the row in the export file")
    row_hash: Mapped[str] = mapped_column(String(32), comment="digest of the mapped measurement: an unchanged re-export is not rewritten")
    source_run_id: Mapped[str | None] = mapped_column(String(64), comment="flow run that last wrote the row")
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="when the hub last wrote the row")

    __table_args__ = (
        Index("ix_lab_results_batch_id", "batch_id"),
        Index("ix_lab_results_tested_at", "tested_at"),
        Index("ix_lab_results_batch_known", "batch_known"),
    )


class LabExportStatus(enum.StrEnum):
    PROCESSED = "processed"  # rows loaded and/or quarantined
    REJECTED = "rejected"  # the file as a whole could not be read (no header found, not text)


class LabExport(Base):
    """One processed export, keyed by the checksum of its content: the same bytes are never processed twice."""

    __tablename__ = "lab_exports"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), comment="sha256 hex of the file content")
    file_name: Mapped[str] = mapped_column(String(255), comment="name the content first arrived under")
    source: Mapped[str] = mapped_column(String(16), default="drop", comment="drop (file in the drop folder) | api")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_mtime: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="modification time of the file when read")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="when the hub read the file")
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="commit time of its rows")
    status: Mapped[str] = mapped_column(String(16), comment="processed | rejected")
    delimiter: Mapped[str | None] = mapped_column(String(4))
    decimal_comma: Mapped[bool | None] = mapped_column(Boolean)
    encoding: Mapped[str | None] = mapped_column(String(16))
    rows_total: Mapped[int] = mapped_column(Integer, default=0, comment="data lines in the file")
    rows_loaded: Mapped[int] = mapped_column(Integer, default=0, comment="rows that passed validation")
    rows_written: Mapped[int] = mapped_column(Integer, default=0, comment="of those, new or changed lab_results rows")
    rows_quarantined: Mapped[int] = mapped_column(Integer, default=0)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    duplicates_seen: Mapped[int] = mapped_column(Integer, default=0, comment="times the same content was dropped again")
    last_duplicate_name: Mapped[str | None] = mapped_column(String(255))
    last_duplicate_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text, comment="why a rejected file was rejected")

    __table_args__ = (
        UniqueConstraint("sha256", name="uq_lab_exports_sha256"),
        Index("ix_lab_exports_processed_at", "processed_at"),
    )

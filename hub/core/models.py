"""SQLAlchemy 2 models of the hub's own tables and the ERP tables it loads.

Every table runs on SQLite (the embedded default) and PostgreSQL; JSON columns are JSONB on
PostgreSQL. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from connectors.core.metrics import LATENCY_BUCKETS_S

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
    # Error workflow (0005): queued reruns of the failed unit, escalation, who closed it.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0", comment="queued reruns of the unit made so far")
    max_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0", comment="queued reruns allowed before escalation (0: none)")
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(128), comment="who resolved it: a person, or the flow that did")
    # 0015: the traceback (redacted, innermost frames kept); retry_count above counts the in-run retries.
    stack_trace: Mapped[str | None] = mapped_column(
        Text, comment="the traceback that ended the unit: redacted, innermost frames kept (hub/ledger/errors.py)"
    )

    __table_args__ = (
        Index("ix_integration_errors_status_integration", "status", "integration"),
        Index("ix_integration_errors_created_at", "created_at"),
        Index("ix_integration_errors_status_next_retry_at", "status", "next_retry_at"),
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
    # Error workflow (0005): the DATA_VALIDATION_FAILED row it belongs to, and who replayed or discarded it.
    error_id: Mapped[int | None] = mapped_column(BigInteger, comment="integration_errors.id of the run that last refused it")
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_quarantined_records_error_id", "error_id"),
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
    # Written by the customer push (hub/systems/sap_push.py) when a customer the ERP created reaches SAP; the
    # SAP customers sync never writes it (it is not one of the mapping's columns, data_mappings/columns.py).
    erp_ref: Mapped[str | None] = mapped_column(String(20), comment="the ERP's own customer key (SAP BusinessPartnerIDByExtSystem)")

    __table_args__ = (
        Index("ix_customers_gstin", "gstin"),
        Index("ix_customers_sap_changed_at", "sap_changed_at"),
        Index("ix_customers_erp_ref", "erp_ref"),
    )


class SalesOrder(Base):
    """An SAP sales order's header (API_SALES_ORDER_SRV A_SalesOrder, partners from to_Partner); its items in `sales_order_items`."""

    __tablename__ = "sales_orders"

    sales_order: Mapped[str] = mapped_column(String(10), primary_key=True, comment="SAP A_SalesOrder.SalesOrder")
    order_type: Mapped[str | None] = mapped_column(String(4), comment="SAP SalesOrderType (OR, ...)")
    sales_org: Mapped[str | None] = mapped_column(String(4), comment="SAP SalesOrganization")
    distribution_channel: Mapped[str | None] = mapped_column(String(2), comment="SAP DistributionChannel")
    division: Mapped[str | None] = mapped_column(String(2), comment="SAP OrganizationDivision")
    sold_to: Mapped[str] = mapped_column(String(10), comment="SAP SoldToParty")
    ship_to: Mapped[str | None] = mapped_column(String(10), comment="SAP to_Partner Customer where PartnerFunction = WE (ship-to)")
    bill_to: Mapped[str | None] = mapped_column(String(10), comment="SAP to_Partner Customer where PartnerFunction = RE (bill-to)")
    payer: Mapped[str | None] = mapped_column(String(10), comment="SAP to_Partner Customer where PartnerFunction = RG (payer)")
    customer_po: Mapped[str | None] = mapped_column(String(35), comment="SAP PurchaseOrderByCustomer")
    customer_po_date: Mapped[date | None] = mapped_column(Date, comment="SAP CustomerPurchaseOrderDate")
    order_date: Mapped[date | None] = mapped_column(Date, comment="SAP SalesOrderDate")
    requested_delivery_date: Mapped[date | None] = mapped_column(Date, comment="SAP RequestedDeliveryDate")
    net_amount: Mapped[Decimal | None] = mapped_column(Numeric(16, 3), comment="SAP TotalNetAmount")
    currency: Mapped[str | None] = mapped_column(String(5), comment="SAP TransactionCurrency")
    gross_amount: Mapped[Decimal | None] = mapped_column(
        Numeric(16, 3), comment="SAP to_PricingElement ConditionAmount summed over prices (ConditionClass B)"
    )
    discount_amount: Mapped[Decimal | None] = mapped_column(
        Numeric(16, 3), comment="SAP to_PricingElement ConditionAmount summed over discounts and surcharges (ConditionClass A)"
    )
    tax_amount: Mapped[Decimal | None] = mapped_column(
        Numeric(16, 3), comment="SAP to_PricingElement ConditionAmount summed over taxes (ConditionClass D)"
    )
    payment_terms: Mapped[str | None] = mapped_column(String(4), comment="SAP CustomerPaymentTerms")
    incoterms: Mapped[str | None] = mapped_column(String(3), comment="SAP IncotermsClassification")
    process_status: Mapped[str | None] = mapped_column(String(1), comment="SAP OverallSDProcessStatus (A open, B in process, C completed)")
    delivery_status: Mapped[str | None] = mapped_column(String(1), comment="SAP OverallDeliveryStatus")
    billing_status: Mapped[str | None] = mapped_column(String(1), comment="SAP OverallOrdReltdBillgStatus")
    credit_status: Mapped[str | None] = mapped_column(String(1), comment="SAP TotalCreditCheckStatus")
    rejection_status: Mapped[str | None] = mapped_column(String(1), comment="SAP OverallSDDocumentRejectionSts")
    block_status: Mapped[str | None] = mapped_column(String(1), comment="SAP TotalBlockStatus")
    sap_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="SAP CreationDate")
    sap_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), comment="SAP LastChangeDateTime (UTC)")
    deleted_in_sap_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), comment="when a complete reconciling read no longer found the order in SAP (null: live)"
    )
    row_hash: Mapped[str] = mapped_column(String(32), comment="digest of the mapped header columns: unchanged rows are not rewritten")
    source_run_id: Mapped[str | None] = mapped_column(String(64), comment="flow run that last wrote the row")
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="when the hub last wrote the row")

    __table_args__ = (
        Index("ix_sales_orders_sold_to", "sold_to"),
        Index("ix_sales_orders_sap_changed_at", "sap_changed_at"),
    )


class SalesOrderItem(Base):
    """An SAP sales order item (A_SalesOrderItem), written with its order; a rejected item is kept with its reason."""

    __tablename__ = "sales_order_items"

    sales_order: Mapped[str] = mapped_column(
        String(10), ForeignKey("sales_orders.sales_order", ondelete="CASCADE"), primary_key=True, comment="SAP SalesOrder"
    )
    item: Mapped[str] = mapped_column(String(6), primary_key=True, comment="SAP SalesOrderItem")
    material: Mapped[str] = mapped_column(String(40), comment="SAP Material")
    text: Mapped[str | None] = mapped_column(String(40), comment="SAP SalesOrderItemText")
    quantity: Mapped[Decimal] = mapped_column(Numeric(15, 3), comment="SAP RequestedQuantity")
    unit: Mapped[str | None] = mapped_column(String(3), comment="SAP RequestedQuantityUnit")
    net_amount: Mapped[Decimal | None] = mapped_column(Numeric(16, 3), comment="SAP NetAmount")
    currency: Mapped[str | None] = mapped_column(String(5), comment="SAP TransactionCurrency")
    plant: Mapped[str | None] = mapped_column(String(4), comment="SAP ProductionPlant")
    storage_location: Mapped[str | None] = mapped_column(String(4), comment="SAP StorageLocation")
    shipping_point: Mapped[str | None] = mapped_column(String(4), comment="SAP ShippingPoint")
    gross_weight: Mapped[Decimal | None] = mapped_column(Numeric(15, 3), comment="SAP ItemGrossWeight")
    net_weight: Mapped[Decimal | None] = mapped_column(Numeric(15, 3), comment="SAP ItemNetWeight")
    weight_unit: Mapped[str | None] = mapped_column(String(3), comment="SAP ItemWeightUnit")
    batch: Mapped[str | None] = mapped_column(String(10), comment="SAP Batch")
    item_category: Mapped[str | None] = mapped_column(String(4), comment="SAP SalesOrderItemCategory")
    process_status: Mapped[str | None] = mapped_column(String(1), comment="SAP SDProcessStatus")
    delivery_status: Mapped[str | None] = mapped_column(String(1), comment="SAP DeliveryStatus")
    rejection_reason: Mapped[str | None] = mapped_column(String(2), comment="SAP SalesDocumentRjcnReason (a rejected item is kept)")
    row_hash: Mapped[str] = mapped_column(String(32), comment="digest of the mapped item columns: unchanged rows are not rewritten")
    source_run_id: Mapped[str | None] = mapped_column(String(64), comment="flow run that last wrote the row")
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="when the hub last wrote the row")

    __table_args__ = (Index("ix_sales_order_items_material", "material"),)


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
        String(255),
        comment="from the signed body only: razorpay <event>:<entity id>:<created_at>; whatsapp message:<wamid> or status:<wamid>:<status>",
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
    body_sha256: Mapped[str | None] = mapped_column(String(64), comment="sha256 hex of the signed raw body")
    provider_event_id: Mapped[str | None] = mapped_column(
        String(255), comment="an id the provider sent outside the signature (x-razorpay-event-id): information, never the key"
    )
    event_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), comment="the payload's own time (Razorpay created_at, WhatsApp timestamp), inside the signed body"
    )

    __table_args__ = (
        # The key is built from the signed body only: a redelivery, or a resend with other unsigned headers, is stored once.
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
    body_sha256: Mapped[str | None] = mapped_column(
        String(64), comment="sha256 of the delivery stored under this token: its retry is acknowledged, anything else refused"
    )


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
    amount_refunded: Mapped[int | None] = mapped_column(
        BigInteger, comment="paise refunded so far (Razorpay payment.amount_refunded, from refund.processed or a poll); null before any refund"
    )
    last_event_id: Mapped[str | None] = mapped_column(
        String(64), comment="inbox key of the last applied webhook, from the signed body: <event>:<entity id>:<created_at>"
    )
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


# --- Schedules (calendars) ---


class Schedule(Base):
    """An ERP schedule (delivery, site visit, plant maintenance), synced both ways with people's calendars
    (see data_mappings/schedules.py and docs/calendar-sync.md)."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    schedule_ref: Mapped[str] = mapped_column(String(64), unique=True, comment="ERP key of the schedule (e.g. DLV-2026-000123)")
    kind: Mapped[str] = mapped_column(String(16), comment="delivery | site_visit | maintenance")
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(512))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Kolkata", comment="IANA zone shown in calendars")
    status: Mapped[str] = mapped_column(String(16), default="scheduled", comment="scheduled | cancelled")
    owner: Mapped[str] = mapped_column(String(16), default="erp", comment="erp | calendar: who wins a conflict on content")
    version: Mapped[int] = mapped_column(Integer, default=1, comment="bumped on every change made in the ERP or pulled from a calendar")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128), comment="erp:<user> | google_workspace | microsoft365")

    __table_args__ = (Index("ix_schedules_starts_at", "starts_at"), Index("ix_schedules_status", "status"))


class ScheduleCalendarLink(Base):
    """Where a schedule lives in one provider's calendar, and what both sides looked like at the last sync."""

    __tablename__ = "schedule_calendar_links"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32), comment="microsoft365 | google_workspace")
    calendar_id: Mapped[str] = mapped_column(String(255), comment="Google calendarId / Graph user or calendar id")
    event_id: Mapped[str] = mapped_column(String(1024), comment="provider event id")
    etag: Mapped[str | None] = mapped_column(String(255), comment="remote etag (Google etag, Graph @odata.etag) at the last sync")
    pushed_version: Mapped[int | None] = mapped_column(Integer, comment="schedules.version the remote event matches")
    remote_status: Mapped[str | None] = mapped_column(String(16), comment="confirmed | tentative | cancelled, as last seen")
    remote_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="remote last-modified time at the last sync")
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("provider", "calendar_id", "event_id", name="uq_schedule_calendar_links_event"),
        UniqueConstraint("schedule_id", "provider", "calendar_id", name="uq_schedule_calendar_links_schedule"),
    )


# --- Microsoft 365 documents ---


class DocumentStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for the upload flow
    UPLOADING = "uploading"  # an upload session is open (upload_url + bytes_confirmed resume it)
    UPLOADED = "uploaded"
    FAILED = "failed"  # last attempt failed; retried by the next run while attempts < max_attempts
    QUARANTINED = "quarantined"  # refused by the documents suite; fixed and re-queued by a person


class DocumentOutbox(Base):
    """An ERP document (test certificate, delivery challan, invoice) waiting for or done with its upload to SharePoint."""

    __tablename__ = "document_outbox"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    document_key: Mapped[str] = mapped_column(String(128), unique=True, comment="ERP key of the document (e.g. INV-2026-000123): one upload per key")
    source_path: Mapped[str | None] = mapped_column(Text, comment="file on the hub's disk to upload (streamed), or null when content is set")
    content: Mapped[bytes | None] = mapped_column(LargeBinary, comment="the document's bytes, for small documents the ERP hands over directly")
    drive_id: Mapped[str | None] = mapped_column(String(255), comment="target document library; null = MICROSOFT365_DRIVE_ID")
    folder_path: Mapped[str] = mapped_column(String(400), comment="folder in the library, e.g. ERP/Invoices (one of the known folders)")
    file_name: Mapped[str] = mapped_column(String(255), comment="name in SharePoint (no \" * : < > ? / \\ |, no leading/trailing space)")
    content_type: Mapped[str | None] = mapped_column(String(128))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, comment="set by the flow from the file or content")
    document_metadata: Mapped[dict[str, Any] | None] = mapped_column(JsonType, comment="ERP metadata (customer, order, batch, ...)")
    conflict_policy: Mapped[str] = mapped_column(String(8), default="rename", comment="replace | rename | fail when the name exists")
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    drive_item_id: Mapped[str | None] = mapped_column(String(255), comment="Graph driveItem id once uploaded")
    web_url: Mapped[str | None] = mapped_column(Text, comment="SharePoint URL of the uploaded file")
    uploaded_name: Mapped[str | None] = mapped_column(String(255), comment="name SharePoint stored (differs under rename)")
    upload_url: Mapped[str | None] = mapped_column(Text, comment="open upload session (pre-authenticated URL) to resume from")
    bytes_confirmed: Mapped[int] = mapped_column(BigInteger, default=0, comment="bytes the upload session confirmed (nextExpectedRanges)")
    upload_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_code: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="not retried before this time (backoff)")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_document_outbox_status", "status", "next_attempt_at", "id"),)


class CustomerPushStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its push, or for its next attempt after a transient failure (next_attempt_at)
    PUSHED = "pushed"
    CONFLICT = "conflict"  # SAP changed the partner too: a person decides (docs/sap-customer-push.md)
    FAILED = "failed"  # SAP refused it, or attempts ran out: last_error_id says why; `drymix errors retry` pushes it again


class CustomerOutbox(Base):
    """An ERP customer creation or change waiting for (or done with) its push to SAP (API_BUSINESS_PARTNER).

    The ERP writes the row in the same transaction as its customer change (hub/systems/sap_push.py
    `enqueue_customer_change`): a change is pushed exactly when it committed. Not a trigger on `customers`:
    the hub's SAP sync writes that table from SAP, and a trigger would push SAP's own changes back to SAP.
    """

    __tablename__ = "customer_outbox"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    erp_ref: Mapped[str] = mapped_column(String(20), comment="the ERP's customer key (ERP-000123): SAP BusinessPartnerIDByExtSystem")
    operation: Mapped[str] = mapped_column(String(8), comment="create | update")
    partner: Mapped[str | None] = mapped_column(String(10), comment="SAP BusinessPartner when known; written back after a create")
    fields: Mapped[dict[str, Any]] = mapped_column(JsonType, comment="the ERP's customer fields (hub/systems/sap_push.py ERP_FIELDS)")
    base_fields: Mapped[dict[str, Any] | None] = mapped_column(
        JsonType, comment="the partner as the ERP saw it (its customers row) when it made the change: SAP's edits since tell from the ERP's"
    )
    status: Mapped[str] = mapped_column(String(16), default=CustomerPushStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), comment="not pushed before this time (backoff after a transient failure)")
    last_error_id: Mapped[int | None] = mapped_column(BigInteger, comment="integration_errors row of the last failure or conflict")
    last_error: Mapped[str | None] = mapped_column(Text)
    sap_etag: Mapped[str | None] = mapped_column(String(128), comment="the partner's ETag after our last write (or as read before it)")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_customer_outbox_status", "status", "next_attempt_at", "id"),
        Index("ix_customer_outbox_erp_ref", "erp_ref"),
    )


# --- Error workflow ---------------------------------------------------------------------------------


class ErrorEventAction(enum.StrEnum):
    RECORDED = "recorded"
    RETRY_SCHEDULED = "retry_scheduled"
    RETRY_STARTED = "retry_started"
    RETRY_FAILED = "retry_failed"
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    NOTIFIED = "notified"
    REOPENED = "reopened"
    QUARANTINE_REPLAYED = "quarantine_replayed"
    QUARANTINE_DISCARDED = "quarantine_discarded"
    RECURRED = "recurred"  # a later run failed the same way: the open row took its counts (DATA_VALIDATION_FAILED)


class IntegrationErrorEvent(Base):
    """The audit trail of an integration_errors row: who changed what, when and why. Never updated."""

    __tablename__ = "integration_error_events"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    error_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("integration_errors.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128), comment="a person (--by, default the OS user) or a flow (flow:<name>)")
    action: Mapped[str] = mapped_column(String(32), comment="recorded | retry_scheduled | retry_started | retry_failed | resolved | escalated | ...")
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonType)

    __table_args__ = (Index("ix_integration_error_events_error_id", "error_id", "id"),)


# --- Monitoring ---
# Call measurements are buffered in memory (connectors.core.metrics) and written here in batches by
# hub.monitoring.health's flusher: one row per minute, integration, operation and kind, whose counters and
# latency histogram a later flush adds to (an upsert), so any window's counts and percentiles come
# from summing rows. call_metric_totals holds the same counters since the table was created (the
# Prometheus counters, which must never go down when old minutes are deleted).



HISTOGRAM_COLUMNS: tuple[str, ...] = tuple(f"h{i:02d}" for i in range(len(LATENCY_BUCKETS_S) + 1))
"""h00..h17: calls whose latency fell in each bucket of LATENCY_BUCKETS_S (the last one: above 30 s)."""
COUNTER_COLUMNS: tuple[str, ...] = ("calls", "successes", "errors", "rate_limited", "cache_hits", "cache_misses")


def _measurement_columns() -> list[Column[Any]]:
    bounds = [f"<= {b:g} s" for b in LATENCY_BUCKETS_S] + [f"> {LATENCY_BUCKETS_S[-1]:g} s"]
    return [
        *(Column(name, BigInteger, nullable=False, default=0, server_default="0") for name in COUNTER_COLUMNS),
        Column("latency_sum_s", Float, nullable=False, default=0.0, server_default="0"),
        Column("latency_max_s", Float, nullable=False, default=0.0, server_default="0"),
        *(
            Column(name, BigInteger, nullable=False, default=0, server_default="0", comment=f"latency {bound}")
            for name, bound in zip(HISTOGRAM_COLUMNS, bounds, strict=True)
        ),
        Column("last_success_at", UTCDateTime(), nullable=True),
        Column("last_error_at", UTCDateTime(), nullable=True),
    ]


class CallMetric(Base):
    """Per-minute aggregate of connector calls (kind=call), webhook deliveries (webhook) and webhook processing."""

    __table__ = Table(
        "call_metrics",
        Base.metadata,
        Column("bucket_start", UTCDateTime(), nullable=False, comment="start of the minute (UTC)"),
        Column("integration", String(64), nullable=False),
        Column("operation", String(128), nullable=False),
        Column("kind", String(24), nullable=False, comment="call | webhook | webhook_processing"),
        *_measurement_columns(),
        PrimaryKeyConstraint("bucket_start", "integration", "operation", "kind", name="pk_call_metrics"),
        Index("ix_call_metrics_integration_bucket", "integration", "bucket_start"),
    )


class CallMetricTotal(Base):
    """The same counters summed since the table was created: Prometheus counters read these."""

    __table__ = Table(
        "call_metric_totals",
        Base.metadata,
        Column("integration", String(64), nullable=False),
        Column("operation", String(128), nullable=False),
        Column("kind", String(24), nullable=False),
        *_measurement_columns(),
        Column("first_seen_at", UTCDateTime(), nullable=True, comment="first measurement (IntegrationDown when it never succeeded)"),
        PrimaryKeyConstraint("integration", "operation", "kind", name="pk_call_metric_totals"),
    )


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(Base):
    """One occurrence of an alert rule for one integration, from firing to resolved, with its notifications."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(32), comment="IntegrationDown | HighErrorRate | RateLimitExceeded | SlowResponseTime | WebhookDelay")
    integration: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.FIRING.value)
    summary: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float, comment="the measured value when last evaluated")
    threshold: Mapped[float | None] = mapped_column(Float)
    error_id: Mapped[int | None] = mapped_column(BigInteger, comment="an unresolved integration_errors row: holds the alert until it is resolved")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notifications_sent: Mapped[int] = mapped_column(Integer, default=0)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_delivery: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType, comment="outcome per channel of the last notification")

    __table_args__ = (
        # At most one firing alert per rule and integration: re-evaluation updates it, never duplicates it.
        Index(
            "uq_alerts_firing",
            "rule",
            "integration",
            unique=True,
            postgresql_where=text("status = 'firing'"),
            sqlite_where=text("status = 'firing'"),
        ),
        Index("ix_alerts_status_started_at", "status", "started_at"),
    )


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

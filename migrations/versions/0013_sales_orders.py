"""sales orders: SAP A_SalesOrder headers and their items (API_SALES_ORDER_SRV), loaded by sync-sap-sales-orders

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.core.models

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sales_orders",
        sa.Column('sales_order', sa.String(length=10), nullable=False, comment='SAP A_SalesOrder.SalesOrder'),
        sa.Column('order_type', sa.String(length=4), nullable=True, comment='SAP SalesOrderType (OR, ...)'),
        sa.Column('sales_org', sa.String(length=4), nullable=True, comment='SAP SalesOrganization'),
        sa.Column('distribution_channel', sa.String(length=2), nullable=True, comment='SAP DistributionChannel'),
        sa.Column('division', sa.String(length=2), nullable=True, comment='SAP OrganizationDivision'),
        sa.Column('sold_to', sa.String(length=10), nullable=False, comment='SAP SoldToParty'),
        sa.Column('ship_to', sa.String(length=10), nullable=True, comment='SAP to_Partner Customer where PartnerFunction = WE (ship-to)'),
        sa.Column('bill_to', sa.String(length=10), nullable=True, comment='SAP to_Partner Customer where PartnerFunction = RE (bill-to)'),
        sa.Column('payer', sa.String(length=10), nullable=True, comment='SAP to_Partner Customer where PartnerFunction = RG (payer)'),
        sa.Column('customer_po', sa.String(length=35), nullable=True, comment='SAP PurchaseOrderByCustomer'),
        sa.Column('customer_po_date', sa.Date(), nullable=True, comment='SAP CustomerPurchaseOrderDate'),
        sa.Column('order_date', sa.Date(), nullable=True, comment='SAP SalesOrderDate'),
        sa.Column('requested_delivery_date', sa.Date(), nullable=True, comment='SAP RequestedDeliveryDate'),
        sa.Column('net_amount', sa.Numeric(precision=16, scale=3), nullable=True, comment='SAP TotalNetAmount'),
        sa.Column('currency', sa.String(length=5), nullable=True, comment='SAP TransactionCurrency'),
        sa.Column('gross_amount', sa.Numeric(precision=16, scale=3), nullable=True, comment='SAP to_PricingElement ConditionAmount summed over prices (ConditionClass B)'),
        sa.Column('discount_amount', sa.Numeric(precision=16, scale=3), nullable=True, comment='SAP to_PricingElement ConditionAmount summed over discounts and surcharges (ConditionClass A)'),
        sa.Column('tax_amount', sa.Numeric(precision=16, scale=3), nullable=True, comment='SAP to_PricingElement ConditionAmount summed over taxes (ConditionClass D)'),
        sa.Column('payment_terms', sa.String(length=4), nullable=True, comment='SAP CustomerPaymentTerms'),
        sa.Column('incoterms', sa.String(length=3), nullable=True, comment='SAP IncotermsClassification'),
        sa.Column('process_status', sa.String(length=1), nullable=True, comment='SAP OverallSDProcessStatus (A open, B in process, C completed)'),
        sa.Column('delivery_status', sa.String(length=1), nullable=True, comment='SAP OverallDeliveryStatus'),
        sa.Column('billing_status', sa.String(length=1), nullable=True, comment='SAP OverallOrdReltdBillgStatus'),
        sa.Column('credit_status', sa.String(length=1), nullable=True, comment='SAP TotalCreditCheckStatus'),
        sa.Column('rejection_status', sa.String(length=1), nullable=True, comment='SAP OverallSDDocumentRejectionSts'),
        sa.Column('block_status', sa.String(length=1), nullable=True, comment='SAP TotalBlockStatus'),
        sa.Column('sap_created_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='SAP CreationDate'),
        sa.Column('sap_changed_at', hub.core.models.UTCDateTime(timezone=True), nullable=False, comment='SAP LastChangeDateTime (UTC)'),
        sa.Column('deleted_in_sap_at', hub.core.models.UTCDateTime(timezone=True), nullable=True, comment='when a complete reconciling read no longer found the order in SAP (null: live)'),
        sa.Column('row_hash', sa.String(length=32), nullable=False, comment='digest of the mapped header columns: unchanged rows are not rewritten'),
        sa.Column('source_run_id', sa.String(length=64), nullable=True, comment='flow run that last wrote the row'),
        sa.Column('synced_at', hub.core.models.UTCDateTime(timezone=True), nullable=False, comment='when the hub last wrote the row'),
        sa.PrimaryKeyConstraint("sales_order", name=op.f("pk_sales_orders")),
    )
    with op.batch_alter_table("sales_orders", schema=None) as batch_op:
        batch_op.create_index("ix_sales_orders_sold_to", ["sold_to"], unique=False)
        batch_op.create_index("ix_sales_orders_sap_changed_at", ["sap_changed_at"], unique=False)
    op.create_table(
        "sales_order_items",
        sa.Column('sales_order', sa.String(length=10), nullable=False, comment='SAP SalesOrder'),
        sa.Column('item', sa.String(length=6), nullable=False, comment='SAP SalesOrderItem'),
        sa.Column('material', sa.String(length=40), nullable=False, comment='SAP Material'),
        sa.Column('text', sa.String(length=40), nullable=True, comment='SAP SalesOrderItemText'),
        sa.Column('quantity', sa.Numeric(precision=15, scale=3), nullable=False, comment='SAP RequestedQuantity'),
        sa.Column('unit', sa.String(length=3), nullable=True, comment='SAP RequestedQuantityUnit'),
        sa.Column('net_amount', sa.Numeric(precision=16, scale=3), nullable=True, comment='SAP NetAmount'),
        sa.Column('currency', sa.String(length=5), nullable=True, comment='SAP TransactionCurrency'),
        sa.Column('plant', sa.String(length=4), nullable=True, comment='SAP ProductionPlant'),
        sa.Column('storage_location', sa.String(length=4), nullable=True, comment='SAP StorageLocation'),
        sa.Column('shipping_point', sa.String(length=4), nullable=True, comment='SAP ShippingPoint'),
        sa.Column('gross_weight', sa.Numeric(precision=15, scale=3), nullable=True, comment='SAP ItemGrossWeight'),
        sa.Column('net_weight', sa.Numeric(precision=15, scale=3), nullable=True, comment='SAP ItemNetWeight'),
        sa.Column('weight_unit', sa.String(length=3), nullable=True, comment='SAP ItemWeightUnit'),
        sa.Column('batch', sa.String(length=10), nullable=True, comment='SAP Batch'),
        sa.Column('item_category', sa.String(length=4), nullable=True, comment='SAP SalesOrderItemCategory'),
        sa.Column('process_status', sa.String(length=1), nullable=True, comment='SAP SDProcessStatus'),
        sa.Column('delivery_status', sa.String(length=1), nullable=True, comment='SAP DeliveryStatus'),
        sa.Column('rejection_reason', sa.String(length=2), nullable=True, comment='SAP SalesDocumentRjcnReason (a rejected item is kept)'),
        sa.Column('row_hash', sa.String(length=32), nullable=False, comment='digest of the mapped item columns: unchanged rows are not rewritten'),
        sa.Column('source_run_id', sa.String(length=64), nullable=True, comment='flow run that last wrote the row'),
        sa.Column('synced_at', hub.core.models.UTCDateTime(timezone=True), nullable=False, comment='when the hub last wrote the row'),
        sa.ForeignKeyConstraint(
            ["sales_order"], ["sales_orders.sales_order"], name=op.f("fk_sales_order_items_sales_order_sales_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sales_order", "item", name=op.f("pk_sales_order_items")),
    )
    with op.batch_alter_table("sales_order_items", schema=None) as batch_op:
        batch_op.create_index("ix_sales_order_items_material", ["material"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sales_order_items", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_order_items_material")
    op.drop_table("sales_order_items")
    with op.batch_alter_table("sales_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_orders_sap_changed_at")
        batch_op.drop_index("ix_sales_orders_sold_to")
    op.drop_table("sales_orders")

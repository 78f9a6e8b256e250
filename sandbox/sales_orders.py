"""SAP S/4HANA sandbox: the ``API_SALES_ORDER_SRV`` OData V2 service (sales orders of a dry-mix maker).

What it serves (all under ``/sap/opu/odata/sap/API_SALES_ORDER_SRV/``):

* ``A_SalesOrder`` with ``to_Item``, ``to_Partner`` and ``to_PricingElement``, plus the entity
  sets ``A_SalesOrderItem``, ``A_SalesOrderHeaderPartner`` and ``A_SalesOrderHeaderPrElement``;
  names and types follow SAP's published EDMX. The ETag of an order is its
  ``LastChangeDateTime`` (Edm.DateTimeOffset), sent as ``W/"datetimeoffset'...Z'"``.
* Everything the generic engine in :mod:`sandbox.odata` does: ``$metadata``, ``$filter``
  (``LastChangeDateTime ge datetimeoffset'2026-01-01T00:00:00Z'``), ``$expand``, ``$orderby``,
  keyset seeks on ``SalesOrder gt '...'``, server-driven paging, ``/$count`` as text/plain.

The data is a deterministic (by ``seed``) order book of an Indian dry-mix mortar manufacturer:
tile adhesives, wall putty, plasters and block-jointing mortar in 20/25/40 kg bags (and bulk
plaster in tonnes) from three plants, 1-8 items an order, GST pricing, A/B/C status mixes,
rejected items, and a few percent of deliberately dirty orders (:attr:`SalesOrderSandbox.dirty_ids`).
Drills change items, reject items, delete orders and dirty orders between two syncs. One SAP
host serves this service beside ``API_BUSINESS_PARTNER``: see :func:`sandbox.sap.build_sap_system`.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

from sandbox.core import FaultSwitches, SandboxResponse
from sandbox.odata import (
    EntityType,
    Nav,
    ODataSandbox,
    ODataService,
    bool_prop,
    date_prop,
    decimal_prop,
    dto_prop,
    faults_with_env,
    gc_paused,
    row_builder,
    span,
    string_prop,
    wire_day,
)
from sandbox.sap import ANCHOR_DATE, partner_id

logger = logging.getLogger(__name__)

SERVICE_NAME: Final = "API_SALES_ORDER_SRV"
SERVICE_ROOT: Final = "/sap/opu/odata/sap/API_SALES_ORDER_SRV/"
NAMESPACE: Final = "API_SALES_ORDER_SRV"
#: First SalesOrder number; ids are 7-digit strings counting up from here (key order = row order).
FIRST_ORDER_NUMBER: Final = 1_000_001
#: Orders are dated from this day up to :data:`sandbox.sap.ANCHOR_DATE`, evenly by number.
WINDOW_START: Final = date(2025, 1, 1)
_BLOCK: Final = 1024

# ============================================================================================
# EDM schema (names, lengths and order follow SAP's EDMX for API_SALES_ORDER_SRV; a subset)
# ============================================================================================

_s = string_prop
_d = date_prop
_m = decimal_prop

ORDER_TYPE = EntityType(
    "A_SalesOrderType",
    "A_SalesOrder",
    (
        _s("SalesOrder", 10, key=True),
        _s("SalesOrderType", 4),
        _s("SalesOrganization", 4),
        _s("DistributionChannel", 2),
        _s("OrganizationDivision", 2),
        _s("SalesGroup", 3),
        _s("SalesOffice", 4),
        _s("SalesDistrict", 6),
        _s("SoldToParty", 10),
        _d("CreationDate", ro=True),
        _s("CreatedByUser", 12, ro=True),
        _d("LastChangeDate", ro=True),
        dto_prop("LastChangeDateTime", ro=True),
        _s("PurchaseOrderByCustomer", 35),
        _s("CustomerPurchaseOrderType", 4),
        _d("CustomerPurchaseOrderDate"),
        _d("SalesOrderDate"),
        _m("TotalNetAmount", ro=True),
        _s("OverallDeliveryStatus", 1, ro=True),
        _s("TotalBlockStatus", 1, ro=True),
        _s("OverallOrdReltdBillgStatus", 1, ro=True),
        _s("OverallSDDocReferenceStatus", 1, ro=True),
        _s("TransactionCurrency", 5),
        _s("SDDocumentReason", 3),
        _d("PricingDate"),
        _d("RequestedDeliveryDate"),
        _s("ShippingCondition", 2),
        bool_prop("CompleteDeliveryIsDefined"),
        _s("ShippingType", 2),
        _s("HeaderBillingBlockReason", 2),
        _s("DeliveryBlockReason", 2),
        _s("IncotermsClassification", 3),
        _s("IncotermsTransferLocation", 28),
        _s("IncotermsLocation1", 70),
        _s("CustomerPriceGroup", 2),
        _s("PriceListType", 2),
        _s("CustomerPaymentTerms", 4),
        _s("PaymentMethod", 1),
        _s("CustomerAccountAssignmentGroup", 2),
        _s("CustomerGroup", 2),
        _s("OverallSDProcessStatus", 1, ro=True),
        _s("TotalCreditCheckStatus", 1, ro=True),
        _s("OverallTotalDeliveryStatus", 1, ro=True),
        _s("OverallSDDocumentRejectionSts", 1, ro=True),
    ),
    ("SalesOrder",),
    (
        Nav("to_Item", "A_SalesOrderItem", True),
        Nav("to_Partner", "A_SalesOrderHeaderPartner", True),
        Nav("to_PricingElement", "A_SalesOrderHeaderPrElement", True),
    ),
    has_etag=True,
    etag_property="LastChangeDateTime",
)

ITEM_TYPE = EntityType(
    "A_SalesOrderItemType",
    "A_SalesOrderItem",
    (
        _s("SalesOrder", 10, key=True),
        _s("SalesOrderItem", 6, key=True),
        _s("HigherLevelItem", 6),
        _s("SalesOrderItemCategory", 4),
        _s("SalesOrderItemText", 40),
        _s("PurchaseOrderByCustomer", 35),
        _s("Material", 40),
        _s("MaterialByCustomer", 35),
        _d("PricingDate"),
        _m("RequestedQuantity"),
        _s("RequestedQuantityUnit", 3),
        _s("RequestedQuantitySAPUnit", 3),
        _s("RequestedQuantityISOUnit", 3),
        _m("ItemGrossWeight"),
        _m("ItemNetWeight"),
        _s("ItemWeightUnit", 3),
        _s("TransactionCurrency", 5),
        _m("NetAmount", ro=True),
        _s("MaterialGroup", 9),
        _s("Batch", 10),
        _s("ProductionPlant", 4),
        _s("StorageLocation", 4),
        _s("ShippingPoint", 4),
        _s("IncotermsClassification", 3),
        _m("TaxAmount", ro=True),
        _s("CustomerPaymentTerms", 4),
        _s("SalesDocumentRjcnReason", 2),
        _s("ItemBillingBlockReason", 2),
        _s("SDProcessStatus", 1, ro=True),
        _s("DeliveryStatus", 1, ro=True),
        _s("OrderRelatedBillingStatus", 1, ro=True),
    ),
    ("SalesOrder", "SalesOrderItem"),
)

PARTNER_TYPE = EntityType(
    "A_SalesOrderHeaderPartnerType",
    "A_SalesOrderHeaderPartner",
    (
        _s("SalesOrder", 10, key=True),
        _s("PartnerFunction", 2, key=True),
        _s("Customer", 10),
        _s("Supplier", 10),
        _s("Personnel", 8),
        _s("ContactPerson", 10),
        _s("ReferenceBusinessPartner", 10),
        _s("AddressID", 10),
    ),
    ("SalesOrder", "PartnerFunction"),
)

PRICING_TYPE = EntityType(
    "A_SalesOrderHeaderPrElementType",
    "A_SalesOrderHeaderPrElement",
    (
        _s("SalesOrder", 10, key=True),
        _s("PricingProcedureStep", 3, key=True),
        _s("PricingProcedureCounter", 3, key=True),
        _s("ConditionType", 4),
        _s("PricingDateTime", 14),
        _s("ConditionCalculationType", 3),
        _m("ConditionBaseValue"),
        _m("ConditionRateValue"),
        _s("ConditionCurrency", 5),
        _m("ConditionQuantity"),
        _s("ConditionQuantityUnit", 3),
        _s("ConditionCategory", 1),
        bool_prop("ConditionIsForStatistics"),
        _s("ConditionOrigin", 1),
        _s("TaxCode", 2),
        _m("ConditionAmount"),
        _s("TransactionCurrency", 5),
        _s("ConditionClass", 1),
        _s("ConditionInactiveReason", 1),
    ),
    ("SalesOrder", "PricingProcedureStep", "PricingProcedureCounter"),
)

ENTITY_TYPES: Final[tuple[EntityType, ...]] = (ORDER_TYPE, ITEM_TYPE, PARTNER_TYPE, PRICING_TYPE)
#: Read-only here: the hub reads sales orders; writes go to API_BUSINESS_PARTNER.
SERVICE: Final = ODataService(SERVICE_NAME, SERVICE_ROOT, NAMESPACE, ENTITY_TYPES, component_id="SD-SLS-SO")

_OX = ORDER_TYPE.index
_IX = ITEM_TYPE.index
_PX = PARTNER_TYPE.index

# ============================================================================================
# The order book: products, plants, customers' habits
# ============================================================================================


@dataclass(frozen=True)
class Product:
    """A finished good: material number, text, pack, sales unit, list price (INR per unit), group."""

    material: str
    text: str
    pack_kg: int
    unit: str
    price: int
    group: str
    weight: float  # share of order lines


PRODUCTS: Final[tuple[Product, ...]] = (
    Product("FG-TA-C1-GR20", "Tile Adhesive C1 Grey 20kg", 20, "BAG", 340, "DMTA", 14),
    Product("FG-TA-C2T-GR20", "Tile Adhesive C2T Grey 20kg", 20, "BAG", 520, "DMTA", 10),
    Product("FG-TA-C2TE-WH20", "Tile Adhesive C2TE White 20kg", 20, "BAG", 640, "DMTA", 6),
    Product("FG-TA-S1-GR20", "Tile Adhesive C2TES1 Flexible 20kg", 20, "BAG", 890, "DMTA", 3),
    Product("FG-WP-WH40", "Wall Putty White 40kg", 40, "BAG", 780, "DMWP", 13),
    Product("FG-WP-WH20", "Wall Putty White 20kg", 20, "BAG", 410, "DMWP", 8),
    Product("FG-WP-AC40", "Acrylic Wall Putty 40kg", 40, "BAG", 1150, "DMWP", 3),
    Product("FG-PL-RM40", "Ready-Mix Plaster 40kg", 40, "BAG", 330, "DMPL", 12),
    Product("FG-PL-GY25", "Gypsum Plaster 25kg", 25, "BAG", 365, "DMPL", 6),
    Product("FG-PL-RM-BULK", "Ready-Mix Plaster Bulk (silo)", 1000, "TO", 6200, "DMPL", 2),
    Product("FG-BJ-GR40", "Block Jointing Mortar 40kg", 40, "BAG", 310, "DMBJ", 11),
    Product("FG-BJ-GR25", "Block Jointing Mortar 25kg", 25, "BAG", 215, "DMBJ", 5),
    Product("FG-WPC-20", "Waterproofing Compound 20kg", 20, "BAG", 980, "DMWC", 3),
    Product("FG-TG-EP01", "Epoxy Tile Grout", 1, "KG", 260, "DMTG", 3),
    Product("FG-SC-SL25", "Self-Levelling Screed 25kg", 25, "BAG", 720, "DMSC", 1),
)
_PRODUCT_CUM: Final = tuple(sum(p.weight for p in PRODUCTS[: i + 1]) for i in range(len(PRODUCTS)))
PRODUCTS_BY_MATERIAL: Final[dict[str, Product]] = {p.material: p for p in PRODUCTS}
#: Sales unit -> (SAP internal unit, ISO unit).
UNITS: Final[dict[str, tuple[str, str]]] = {"BAG": ("BAG", "BG"), "KG": ("KG", "KGM"), "TO": ("TO", "TNE")}
#: (plant, city, GST state code of the plant, sales office)
PLANTS: Final = (("1010", "Taloja", "27", "IN01"), ("1020", "Sanand", "24", "IN02"), ("1030", "Hosur", "33", "IN03"))
_PLANT_WEIGHTS: Final = (0.5, 0.3, 0.2)
#: Item-rejection reasons (SAP standard codes): delivery date too late, too expensive, competitor, other.
REJECTION_REASONS: Final = ("01", "03", "04", "10")
_USERS: Final = ("SDSALES1", "KPATIL", "RSHARMA", "AIYER", "EDI_B2B", "CRM_BRIDGE", "SREDDY")
_PAYMENT_TERMS: Final = ("0001", "NT30", "NT30", "NT45", "NT60")
_GST_PERCENT: Final = 18  # tile adhesives, putty and plasters (HSN 3214 / 3824)

#: Dirty order kinds (see docs/sandbox-sap.md).
DIRTY_KINDS: Final[tuple[str, ...]] = (
    "missing_material",
    "invalid_quantity",
    "unknown_unit",
    "missing_sold_to",
    "future_change",
    "currency_mismatch",
)
_DIRTY_RATE: Final = 0.03
_BAD_UNITS: Final = ("SAK", "BG1", "PAK", "XX")
#: LastChangeDateTime of a ``future_change`` order: a clock gone wrong in 2100.
FUTURE_CHANGE: Final = datetime(2100, 1, 1, 0, 0, 0, tzinfo=UTC)
#: Change kinds of :meth:`SalesOrderSandbox.change_items`.
CHANGE_KINDS: Final[tuple[str, ...]] = ("quantity", "item_added", "item_removed")

_Row = list[Any]
_ITEM_NUMBERS: Final = tuple(str(10 * (n + 1)) for n in range(8))


def order_id(index: int) -> str:
    """SalesOrder number of the order at position ``index`` (0-based)."""
    return str(FIRST_ORDER_NUMBER + index)


def _money(paise: int) -> str:
    """An Edm.Decimal amount in rupees with two decimals, from paise."""
    sign = "-" if paise < 0 else ""
    paise = abs(paise)
    return f"{sign}{paise // 100}.{paise % 100:02d}"


def _paise(text: Any) -> int:
    """Paise of an amount string (0 for anything that is not a number)."""
    return _scaled(text, 2)


def _scaled(text: Any, places: int) -> int:
    """``text`` times 10**places as an integer; the sandbox's own ``-123.45`` strings take the fast path."""
    if isinstance(text, str):
        head, dot, tail = text.partition(".")
        if dot and len(tail) == places and tail.isdigit() and head.lstrip("-").isdigit():
            return int(head + tail)
    try:
        return int((Decimal(str(text)) * 10**places).to_integral_value())
    except ArithmeticError:
        return 0


_qty_cache: dict[int, str] = {}


def _quantity(milli: int) -> str:
    """An Edm.Decimal quantity with three decimals, from thousandths."""
    text = _qty_cache.get(milli)
    if text is None:
        sign = "-" if milli < 0 else ""
        text = f"{sign}{abs(milli) // 1000}.{abs(milli) % 1000:03d}"
        if len(_qty_cache) < 100_000:
            _qty_cache[milli] = text
    return text


def _milli(text: Any) -> int:
    return _scaled(text, 3)


def _wire_dto(ms: int) -> str:
    return f"/Date({ms}+0000)/"


def _ms_of(stamp: datetime) -> int:
    return int(stamp.timestamp() * 1000)


_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


def _day_of_ms(ms: int) -> int:
    return _EPOCH_ORDINAL + ms // 86_400_000


_day_texts: dict[int, tuple[str, str, str, str]] = {}


def _day_text(ordinal: int) -> tuple[str, str, str, str]:
    """Per-day strings: (YYMM for batches, financial year, "05 Mar", YYYYMMDD)."""
    texts = _day_texts.get(ordinal)
    if texts is None:
        d = date.fromordinal(ordinal)
        start = d.year if d.month >= 4 else d.year - 1
        texts = _day_texts[ordinal] = (f"{d:%y%m}", f"{start}-{(start + 1) % 100:02d}", f"{d:%d %b}", f"{d:%Y%m%d}")
    return texts


# ============================================================================================
# Generation: orders block by block, deterministic by (seed, total, index)
# ============================================================================================

_ORDER_FIELDS: Final = (
    "SalesOrder",
    "SalesOrderType",
    "DistributionChannel",
    "SalesGroup",
    "SalesOffice",
    "SalesDistrict",
    "SoldToParty",
    "CreationDate",
    "CreatedByUser",
    "LastChangeDate",
    "LastChangeDateTime",
    "PurchaseOrderByCustomer",
    "CustomerPurchaseOrderDate",
    "SalesOrderDate",
    "PricingDate",
    "RequestedDeliveryDate",
    "ShippingCondition",
    "IncotermsClassification",
    "IncotermsTransferLocation",
    "IncotermsLocation1",
    "CustomerPaymentTerms",
    "CustomerGroup",
    "TotalCreditCheckStatus",
)
_ITEM_FIELDS: Final = (
    "SalesOrder",
    "SalesOrderItem",
    "SalesOrderItemText",
    "PurchaseOrderByCustomer",
    "Material",
    "PricingDate",
    "RequestedQuantity",
    "RequestedQuantityUnit",
    "RequestedQuantitySAPUnit",
    "RequestedQuantityISOUnit",
    "ItemGrossWeight",
    "ItemNetWeight",
    "NetAmount",
    "MaterialGroup",
    "Batch",
    "ProductionPlant",
    "ShippingPoint",
    "IncotermsClassification",
    "TaxAmount",
    "CustomerPaymentTerms",
    "SalesDocumentRjcnReason",
    "SDProcessStatus",
    "DeliveryStatus",
    "OrderRelatedBillingStatus",
)
_build_order = row_builder(
    ORDER_TYPE,
    _ORDER_FIELDS,
    {"SalesOrganization": "1000", "OrganizationDivision": "10", "TransactionCurrency": "INR", "PriceListType": "01"},
)
_build_item = row_builder(
    ITEM_TYPE,
    _ITEM_FIELDS,
    {"SalesOrderItemCategory": "TAN", "ItemWeightUnit": "KG", "TransactionCurrency": "INR", "StorageLocation": "FG01"},
)


@dataclass(slots=True)
class _Order:
    """One order before it is stored: header and item rows as lists, partner rows, pricing inputs."""

    header: _Row
    items: list[_Row]
    partners: list[tuple[Any, ...]]
    discount: int  # customer discount K007, percent
    inter_state: bool  # IGST (JOIG) rather than CGST + SGST (JOCG, JOSG)
    dirty: str | None = None
    #: (net, gross) of the items not rejected, in paise, when the generator knows them; else parsed.
    totals: tuple[int, int] | None = None


def _totals(order: _Order) -> tuple[int, int]:
    """(net, gross) in paise of the items not rejected; gross at list price (the net for unknown materials)."""
    if order.totals is not None:
        return order.totals
    net = gross = 0
    for item in order.items:
        if not _item_live(item):
            continue
        amount = _paise(item[_IX["NetAmount"]])
        product = PRODUCTS_BY_MATERIAL.get(item[_IX["Material"]])
        net += amount
        gross += _milli(item[_IX["RequestedQuantity"]]) * product.price // 10 if product is not None else amount
    return net, gross


class _Generator:
    """Generates orders block by block; order ``i`` depends only on ``(seed, total, i)``."""

    def __init__(self, seed: int, total: int, sold_to: Sequence[str]) -> None:
        self.seed = seed
        self.total = max(total, 1)
        self.sold_to = sold_to
        self.window = ANCHOR_DATE.toordinal() - WINDOW_START.toordinal()

    def block(self, block_no: int) -> list[_Order]:
        rng = random.Random(self.seed * 1_000_003 + block_no)
        showcase: dict[int, str] = {}
        if block_no == 0:
            # Every dirty kind twice among the first 200 orders, so that small sandboxes show each.
            slots = sorted(rng.sample(range(10, 200), 2 * len(DIRTY_KINDS)))
            kinds = list(DIRTY_KINDS) * 2
            rng.shuffle(kinds)
            showcase = dict(zip(slots, kinds, strict=True))
        orders = []
        for offset in range(_BLOCK):
            index = block_no * _BLOCK + offset
            order = self.order(rng, index)
            kind = showcase.get(offset)
            if kind is None and (block_no > 0 or offset >= 200) and rng.random() < _DIRTY_RATE:
                kind = DIRTY_KINDS[int(rng.random() * len(DIRTY_KINDS))]
            if kind is not None:
                _make_dirty(order, kind, rng)
            orders.append(order)
        return orders

    def order(self, rng: random.Random, index: int, created: datetime | None = None) -> _Order:
        """One clean order; ``created`` (an order entered now) overrides the generated dates."""
        r = rng.random
        so = order_id(index)
        if created is None:
            day = WINDOW_START.toordinal() + (index * self.window) // self.total
            created_ms = (day - _EPOCH_ORDINAL) * 86_400_000 + int((12_600 + r() * 36_000) * 1000)
        else:
            created_ms = _ms_of(created)
            day = _day_of_ms(created_ms)
        age = ANCHOR_DATE.toordinal() - day
        # Big dealers order often: skew the pick towards the front of the customer list.
        customers = self.sold_to
        sold_to = customers[int(len(customers) * r() ** 2)] if customers else ""
        plant, city, _state, office = PLANTS[bisect_right((0.5, 0.8), r())]
        order_type = "OR" if r() < 0.85 else ("SO" if r() < 0.55 else "CS")
        channel = "10" if r() < 0.75 else "20"
        dap = r() < 0.7
        incoterms, location = ("DAP", "Customer site") if dap else ("EXW", city)
        terms = "0001" if order_type == "CS" else _PAYMENT_TERMS[int(r() * len(_PAYMENT_TERMS))]
        po_roll = r()
        yymm, fy, day_month, _ = _day_text(day)
        if po_roll < 0.7:
            po = f"PO/{fy}/{int(r() * 9000) + 100:04d}"
        elif po_roll < 0.85:
            po = "VERBAL"
        else:
            po = f"WA {day_month}"
        po_day = day - int(r() * 4)
        requested_day = day + 2 + int(r() * 12)

        # Progress by age: old orders are delivered and billed, recent ones are open.
        roll = r()
        if created is not None:
            stage = "A"  # entered just now
        elif age > 30:
            stage = "C" if roll < 0.92 else ("B" if roll < 0.97 else "A")
        elif age > 7:
            stage = "C" if roll < 0.5 else ("B" if roll < 0.85 else "A")
        else:
            stage = "A" if roll < 0.6 else ("B" if roll < 0.9 else "C")
        credit = "" if order_type == "CS" else ("B" if stage == "A" and r() < 0.05 else "A")
        if created is None:
            lag_days = min(age, 1 + int(r() * 30)) if stage != "A" else min(age, int(r() * 3))
            changed_ms = created_ms + lag_days * 86_400_000 + int(r() * 5_400_000)
        else:
            changed_ms = created_ms

        discount = 0 if r() < 0.45 else (2, 3, 5, 5, 7, 10)[int(r() * 6)]
        inter_state = r() < 0.45
        items: list[Any] = []
        count = 1 + min(7, int(8 * r() ** 1.7))
        wire_date = wire_day(day)
        net_total = gross_total = 0
        for n in range(count):
            product = PRODUCTS[bisect_right(_PRODUCT_CUM, r() * _PRODUCT_CUM[-1])]
            qty = _draw_quantity(product, r)
            if stage == "C":
                item_status = "C"
            elif stage == "A":
                item_status = "A"
            else:
                item_status = "ABC"[int(r() * 3)]
            rejected = r() < 0.04
            batch = f"{yymm}{plant[-2:]}{int(r() * 9000) + 1000}" if item_status == "C" else ""
            net = _net_paise(qty, product.price, discount)
            if not rejected:
                net_total += net
                gross_total += qty * product.price // 10
            items.append(
                _build_item(
                        so,
                        _ITEM_NUMBERS[n],
                        product.text,
                        po,
                        product.material,
                        wire_date,
                        _quantity(qty),
                        product.unit,
                        *UNITS[product.unit],
                        _quantity(qty * product.pack_kg * 101 // 100),
                        _quantity(qty * product.pack_kg),
                        _money(net),
                        product.group,
                        "" if rejected else batch,
                        plant,
                        plant,
                        incoterms,
                        _money(net * _GST_PERCENT // 100),
                        terms,
                        REJECTION_REASONS[int(r() * 4)] if rejected else "",
                        "C" if rejected else item_status,
                        "" if rejected else item_status,
                        "" if rejected else item_status,
                )
            )
        if all(item[_IX["SalesDocumentRjcnReason"]] for item in items):
            # Every item rejected is rare in practice; keep the first one open.
            first = list(items[0])
            first[_IX["SalesDocumentRjcnReason"]] = ""
            first[_IX["SDProcessStatus"]] = first[_IX["DeliveryStatus"]] = "A"
            first[_IX["OrderRelatedBillingStatus"]] = "A"
            items[0] = tuple(first)
            net_total = _paise(first[_IX["NetAmount"]])
            gross_total = _milli(first[_IX["RequestedQuantity"]]) * PRODUCTS_BY_MATERIAL[first[_IX["Material"]]].price // 10
        header = list(
            _build_order(
                so,
                order_type,
                channel,
                f"G{1 + int(r() * 9):02d}",
                office,
                "",
                sold_to,
                wire_day(_day_of_ms(created_ms)),
                _USERS[int(r() * len(_USERS))],
                wire_day(_day_of_ms(changed_ms)),
                _wire_dto(changed_ms),
                po,
                wire_day(po_day),
                wire_day(day),
                wire_day(day),
                wire_day(requested_day),
                "01" if dap else "10",
                incoterms,
                location,
                location,
                terms,
                "01" if channel == "10" else "02",
                credit,
            )
        )
        partners = _partners(so, sold_to, customers, r)
        order = _Order(header, items, partners, discount, inter_state, totals=(net_total, gross_total))
        _derive_header(order)
        return order


def _draw_quantity(product: Product, r: Callable[[], float]) -> int:
    """Requested quantity in thousandths of the sales unit."""
    if product.unit == "TO":
        return (5 + int(r() * 50)) * 500  # 2.5 to 27 tonnes in half tonnes
    if product.unit == "KG":
        return (5 + int(r() * 40)) * 5000
    return (1 + int(r() ** 1.5 * 80)) * 5000  # 5 to 400 bags


def _net_paise(qty_milli: int, price: int, discount: int) -> int:
    gross = qty_milli * price // 10  # rupees per unit * units -> paise
    return gross - gross * discount // 100


def _partners(so: str, sold_to: str, customers: Sequence[str], r: Callable[[], float]) -> list[tuple[Any, ...]]:
    """AG sold-to, WE ship-to (sometimes a site of another customer), RE bill-to, RG payer, VE sales employee."""
    ship_to = customers[int(r() * len(customers))] if customers and r() < 0.2 else sold_to
    payer = customers[int(r() * len(customers))] if customers and r() < 0.1 else sold_to
    rows: list[tuple[Any, ...]] = []
    for function, customer in (("AG", sold_to), ("RE", sold_to), ("RG", payer), ("WE", ship_to)):
        if customer:
            rows.append((so, function, customer, "", "", "", customer, ""))
    if r() < 0.6:
        rows.append((so, "VE", "", "", f"5000{int(r() * 9000) + 1000}", "", "", ""))
    return rows


_hms_texts: dict[int, str] = {}


def _hhmmss(seconds: int) -> str:
    text = _hms_texts.get(seconds)
    if text is None:
        text = _hms_texts[seconds] = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    return text


def _item_live(item: Sequence[Any]) -> bool:
    return not item[_IX["SalesDocumentRjcnReason"]]


def _combined(statuses: list[str]) -> str:
    if not statuses:
        return "C"
    if all(s == "C" for s in statuses):
        return "C"
    if all(s == "A" for s in statuses):
        return "A"
    return "B"


def _derive_header(order: _Order) -> None:
    """Totals and overall statuses of the header from its items (rejected items do not count)."""
    header, items = order.header, order.items
    live = [item for item in items if _item_live(item)]
    header[_OX["TotalNetAmount"]] = _money(_totals(order)[0])
    header[_OX["OverallSDProcessStatus"]] = _combined([item[_IX["SDProcessStatus"]] for item in live])
    delivery = _combined([item[_IX["DeliveryStatus"]] for item in live]) if live else ""
    header[_OX["OverallDeliveryStatus"]] = header[_OX["OverallTotalDeliveryStatus"]] = delivery
    header[_OX["OverallOrdReltdBillgStatus"]] = (
        _combined([item[_IX["OrderRelatedBillingStatus"]] for item in live]) if live else ""
    )
    rejected = len(items) - len(live)
    header[_OX["OverallSDDocumentRejectionSts"]] = "A" if not rejected else ("C" if not live else "B")
    header[_OX["TotalBlockStatus"]] = "C" if header[_OX["TotalCreditCheckStatus"]] == "B" else ""


def _pricing_rows(order: _Order) -> list[tuple[Any, ...]]:
    """Header pricing elements: PR00 gross, K007 customer discount, GST (JOCG + JOSG, or JOIG)."""
    header = order.header
    so = header[0]
    net, gross = _totals(order)
    seconds = int(header[_OX["LastChangeDateTime"]][6:-7]) // 1000
    pricing_time = f"{_day_text(_EPOCH_ORDINAL + seconds // 86_400)[3]}{_hhmmss(seconds % 86_400)}"
    currency = header[_OX["TransactionCurrency"]]

    def element(
        step: str, ctype: str, calc: str, base: int, rate: str, amount: int, category: str, cls: str, tax: str = ""
    ) -> tuple[Any, ...]:
        # PricingDateTime, calculation type (B fixed amount, A percentage), base, rate,
        # condition currency (none for percentages), quantity and unit, category, statistical,
        # origin (A automatic), tax code, amount, currency, class (B price, A discount, D tax), inactive.
        return (
            so, step, "001", ctype, pricing_time, calc, _money(base), rate, "" if calc == "A" else currency,
            "0", "", category, False, "A", tax, _money(amount), currency, cls, "",
        )  # fmt: skip

    rows = [element("010", "PR00", "B", gross, _money(gross), gross, "H", "B")]
    if order.discount:
        rows.append(element("020", "K007", "A", gross, f"-{order.discount}.000", net - gross, "", "A"))
    if order.inter_state:
        rows.append(element("500", "JOIG", "A", net, f"{_GST_PERCENT}.000", net * _GST_PERCENT // 100, "D", "D", "G8"))
    else:
        half = _GST_PERCENT // 2
        rows.append(element("500", "JOCG", "A", net, f"{half}.000", net * half // 100, "D", "D", "G4"))
        rows.append(element("510", "JOSG", "A", net, f"{half}.000", net * half // 100, "D", "D", "G4"))
    return rows


def _make_dirty(order: _Order, kind: str, rng: random.Random) -> None:
    """Spoil one order the way real order books are spoilt (see :data:`DIRTY_KINDS`)."""
    order.items = items = [list(row) for row in order.items]
    order.totals = None
    item = items[int(rng.random() * len(items))]
    if kind == "missing_material":
        item[_IX["Material"]] = ""
    elif kind == "invalid_quantity":
        item[_IX["RequestedQuantity"]] = _quantity(0 if rng.random() < 0.5 else -5000 * (1 + int(rng.random() * 10)))
        item[_IX["NetAmount"]] = _money(_net_paise(_milli(item[_IX["RequestedQuantity"]]), 300, 0))
    elif kind == "unknown_unit":
        bad = _BAD_UNITS[int(rng.random() * len(_BAD_UNITS))]
        item[_IX["RequestedQuantityUnit"]] = item[_IX["RequestedQuantitySAPUnit"]] = bad
        item[_IX["RequestedQuantityISOUnit"]] = ""
    elif kind == "missing_sold_to":
        order.header[_OX["SoldToParty"]] = ""
        order.partners = [p for p in order.partners if p[1] != "AG"]
    elif kind == "future_change":
        ms = _ms_of(FUTURE_CHANGE) + int(rng.random() * 86_400) * 1000
        order.header[_OX["LastChangeDateTime"]] = _wire_dto(ms)
        order.header[_OX["LastChangeDate"]] = wire_day(_day_of_ms(ms))
    elif kind == "currency_mismatch":
        item[_IX["TransactionCurrency"]] = "USD"
    else:
        raise ValueError(f"unknown dirty kind {kind!r} (one of {', '.join(DIRTY_KINDS)})")
    order.dirty = kind
    _derive_header(order)


_FUTURE_MS: Final = int(FUTURE_CHANGE.timestamp() * 1000)


def _dirt_of(order: _Order) -> list[str]:
    """The dirty kinds an order's data shows now (drills can add dirt and repair it)."""
    header, items = order.header, order.items
    currency = header[_OX["TransactionCurrency"]]
    checks = (
        ("missing_material", any(not item[_IX["Material"]] for item in items)),
        ("invalid_quantity", any(_milli(item[_IX["RequestedQuantity"]]) <= 0 for item in items)),
        ("unknown_unit", any(item[_IX["RequestedQuantityUnit"]] not in UNITS for item in items)),
        ("missing_sold_to", not header[_OX["SoldToParty"]]),
        ("future_change", int(header[_OX["LastChangeDateTime"]][6:-7]) >= _FUTURE_MS),
        ("currency_mismatch", any(item[_IX["TransactionCurrency"]] != currency for item in items)),
    )
    return [kind for kind, present in checks if present]


# ============================================================================================
# The service
# ============================================================================================


class SalesOrderSandbox(ODataSandbox):
    """Simulator of SAP S/4HANA ``API_SALES_ORDER_SRV`` (OData V2), served by :class:`ODataSandbox`.

    ``orders`` orders dated evenly from :data:`WINDOW_START` to :data:`sandbox.sap.ANCHOR_DATE`;
    sold-to parties are ``sold_to_parties`` or else the business partners ``partner_id(0..partners-1)``
    of the ``API_BUSINESS_PARTNER`` sandbox. Same seed and sizes give identical data.
    ``dirty_ids`` maps each deliberately dirty order to its :data:`DIRTY_KINDS` reason.
    """

    name = "sales-orders"
    control_actions = ("change-items", "delete", "reject-item", "make-dirty", "add-orders")
    control_subject = "sales order"

    def __init__(
        self,
        orders: int = 5_000,
        seed: int = 0,
        clock: Callable[[], datetime] | None = None,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
        max_page_size: int = 1000,
        *,
        partners: int = 10_000,
        sold_to_parties: Sequence[str] | None = None,
        username: str = "DRYMIX_INT",
        password: str = "sandbox-secret",
        client_id: str = "drymix-hub",
        client_secret: str = "sandbox-client-secret",
        token_ttl_s: int = 3600,
        csrf_ttl_s: int = 1800,
        sap_client: str = "100",
        system_id: str = "S4H",
    ) -> None:
        if orders < 0 or partners < 0:
            raise ValueError("orders and partners must be >= 0")
        super().__init__(
            SERVICE,
            seed=seed,
            max_page_size=max_page_size,
            username=username,
            password=password,
            client_id=client_id,
            client_secret=client_secret,
            token_ttl_s=token_ttl_s,
            csrf_ttl_s=csrf_ttl_s,
            clock=clock,
            faults=faults,
            sap_client=sap_client,
            system_id=system_id,
        )
        sold_to = list(sold_to_parties) if sold_to_parties is not None else [partner_id(i) for i in range(partners)]
        #: SalesOrder id -> reason (see DIRTY_KINDS) for every deliberately dirty order.
        self.dirty_ids: dict[str, str] = {}
        #: SalesOrder ids deleted by :meth:`delete_orders`, in the order they went.
        self.deleted_ids: list[str] = []
        self._orders = self.tables[ORDER_TYPE.set_name]
        self._items = self.tables[ITEM_TYPE.set_name]
        self._generator = _Generator(seed, orders, sold_to)
        self._next_index = orders
        started = time.perf_counter()
        with gc_paused():
            for block_no in range((orders + _BLOCK - 1) // _BLOCK):
                chosen = self._generator.block(block_no)[: orders - block_no * _BLOCK]
                self._store(chosen)
        for table in self.tables.values():
            table.invalidate()
        gc.collect(0)
        self.data_changed()
        logger.info(
            "SAP sales-order sandbox: %d orders, %d items (seed %d, %d dirty) built in %.2fs",
            orders,
            len(self._items.rows),
            seed,
            len(self.dirty_ids),
            time.perf_counter() - started,
        )

    # -- storing ---------------------------------------------------------------------------------

    def _store(self, orders: Iterable[_Order]) -> list[str]:
        """Append orders to every table and link them (children stored contiguously)."""
        order_rows = self._orders.rows
        item_rows = self._items.rows
        partner_rows = self.tables[PARTNER_TYPE.set_name].rows
        pricing_rows = self.tables[PRICING_TYPE.set_name].rows
        to_item = self._orders.links["to_Item"]
        to_partner = self._orders.links["to_Partner"]
        to_pricing = self._orders.links["to_PricingElement"]
        ids = []
        for order in orders:
            so = order.header[0]
            ids.append(so)
            order_rows.append(tuple(order.header))
            first = len(item_rows)
            item_rows.extend(map(tuple, order.items))
            to_item.append(span(first, len(item_rows)))
            first = len(partner_rows)
            partner_rows.extend(order.partners)
            to_partner.append(span(first, len(partner_rows)))
            first = len(pricing_rows)
            pricing_rows.extend(_pricing_rows(order))
            to_pricing.append(span(first, len(pricing_rows)))
            if order.dirty is not None:
                self.dirty_ids[so] = order.dirty
        return ids

    def _index(self, so: str) -> int:
        index = self._orders.find((so,))
        if index is None:
            raise KeyError(so)
        return index

    def _load(self, index: int) -> _Order:
        """An order as stored, thawed for a drill (discount and GST kind read back from its pricing)."""
        tables = self.tables
        header = list(self._orders.rows[index])
        items = [list(self._items.rows[i]) for i in self._orders.links["to_Item"][index]]
        items.sort(key=lambda item: int(item[_IX["SalesOrderItem"]]))
        partners = [tables[PARTNER_TYPE.set_name].rows[i] for i in self._orders.links["to_Partner"][index]]
        pricing = [tables[PRICING_TYPE.set_name].rows[i] for i in self._orders.links["to_PricingElement"][index]]
        discount = 0
        inter_state = False
        for row in pricing:
            if row[3] == "K007":
                discount = -int(Decimal(row[7]))
            elif row[3] == "JOIG":
                inter_state = True
        return _Order(header, items, partners, discount, inter_state, self.dirty_ids.get(header[0]))

    def _replace(self, changed: Mapping[int, _Order]) -> None:
        """Write thawed orders back: headers in place, children deleted and appended anew."""
        links = self._orders.links
        for set_name, nav in (
            (ITEM_TYPE.set_name, "to_Item"),
            (PARTNER_TYPE.set_name, "to_Partner"),
            (PRICING_TYPE.set_name, "to_PricingElement"),
        ):
            self.delete_rows(set_name, [i for index in changed for i in links[nav][index]])
        for index, order in changed.items():
            _derive_header(order)
            self._orders.replace(index, tuple(order.header))
            for set_name, nav, rows in (
                (ITEM_TYPE.set_name, "to_Item", [tuple(item) for item in order.items]),
                (PARTNER_TYPE.set_name, "to_Partner", order.partners),
                (PRICING_TYPE.set_name, "to_PricingElement", _pricing_rows(order)),
            ):
                table = self.tables[set_name]
                first = len(table.rows)
                for row in rows:
                    table.append(row)
                links[nav][index] = span(first, len(table.rows))
            kinds = _dirt_of(order)
            if order.dirty not in kinds:
                order.dirty = kinds[0] if kinds else None
            if order.dirty is None:
                self.dirty_ids.pop(order.header[0], None)
            else:
                self.dirty_ids[order.header[0]] = order.dirty
        self.data_changed()

    def _stamp(self, order: _Order, stamp: datetime) -> None:
        """An order changed now: LastChangeDateTime (and so the ETag) and LastChangeDate move."""
        ms = _ms_of(stamp)
        order.header[_OX["LastChangeDateTime"]] = _wire_dto(ms)
        order.header[_OX["LastChangeDate"]] = wire_day(_day_of_ms(ms))

    # -- public helpers ------------------------------------------------------------------------

    @property
    def order_count(self) -> int:
        """Number of sales orders currently served."""
        return len(self._orders.rows)

    def order_ids(self) -> list[str]:
        """All SalesOrder ids in key order."""
        return [row[0] for row in self._orders.rows]

    def get_order(self, so: str) -> dict[str, Any]:
        """One order in wire format: header properties plus ``to_Item``, ``to_Partner``, ``to_PricingElement`` lists."""
        with self.lock:
            index = self._index(so)
            order: dict[str, Any] = dict(zip(ORDER_TYPE.names, self._orders.rows[index], strict=True))
            for nav in ORDER_TYPE.navs:
                table = self.tables[nav.target]
                order[nav.name] = [
                    dict(zip(table.etype.names, table.rows[i], strict=True)) for i in self._orders.links[nav.name][index]
                ]
            order["to_Item"].sort(key=lambda item: int(item["SalesOrderItem"]))
            return order

    def etag_of(self, so: str) -> str:
        """Current ETag of an order, as sent in ``__metadata.etag`` and the ``ETag`` header."""
        with self.lock:
            return ORDER_TYPE.etag_of(self._orders.rows[self._index(so)])

    # -- drills --------------------------------------------------------------------------------

    def change_items(
        self, orders: Sequence[str] | int, seed: int | None = None, kind: str | None = None
    ) -> dict[str, str]:
        """Change the items of some orders, stamped with the sandbox clock: order id -> change kind.

        ``orders`` is a list of ids or a count of random orders (rejected-only and dirty orders
        included). A change is one of :data:`CHANGE_KINDS` (``kind`` forces one): a new quantity
        on an item, an item added (the next item number), or an item removed (an order keeps at
        least one item; a one-item order gets an item added instead). ``seed`` makes it reproducible.
        """
        if kind is not None and kind not in CHANGE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CHANGE_KINDS)}")
        rng = random.Random(seed if seed is not None else time.time_ns())
        with self.lock:
            indices = self._pick(orders, rng)
            stamp = self.now()
            changed: dict[int, _Order] = {}
            kinds: dict[str, str] = {}
            for index in indices:
                order = self._load(index)
                what = kind or CHANGE_KINDS[int(rng.random() * len(CHANGE_KINDS))]
                if what == "item_removed" and len(order.items) < 2:
                    what = "item_added"
                if what == "quantity":
                    self._new_quantity(order, rng)
                elif what == "item_added":
                    self._add_item(order, rng)
                else:
                    order.items.pop(int(rng.random() * len(order.items)))
                self._stamp(order, stamp)
                changed[index] = order
                kinds[order.header[0]] = what
            self._replace(changed)
            logger.info("SAP sales-order sandbox: changed items of %d orders at %s", len(kinds), stamp.isoformat())
            return kinds

    def _pick(self, orders: Sequence[str] | int, rng: random.Random) -> list[int]:
        if isinstance(orders, bool) or not isinstance(orders, int | list | tuple):
            raise TypeError("orders must be a count or a list of SalesOrder ids")
        if isinstance(orders, int):
            if orders < 0:
                raise ValueError("count must be >= 0")
            total = len(self._orders.rows)
            return sorted(rng.sample(range(total), min(orders, total)))
        return sorted({self._index(str(so)) for so in orders})

    @staticmethod
    def _new_quantity(order: _Order, rng: random.Random) -> None:
        live = [item for item in order.items if _item_live(item)] or order.items
        item = live[int(rng.random() * len(live))]
        old = _milli(item[_IX["RequestedQuantity"]])
        new = old + 5000 * (1 + int(rng.random() * 10)) * (1 if rng.random() < 0.6 or old <= 50_000 else -1)
        product = PRODUCTS_BY_MATERIAL.get(item[_IX["Material"]])
        price = product.price if product is not None else (abs(_paise(item[_IX["NetAmount"]])) * 10 // max(abs(old), 1) or 300)
        pack = product.pack_kg if product is not None else 25
        net = _net_paise(new, price, order.discount)
        item[_IX["RequestedQuantity"]] = _quantity(new)
        item[_IX["ItemNetWeight"]] = _quantity(new * pack)
        item[_IX["ItemGrossWeight"]] = _quantity(new * pack * 101 // 100)
        item[_IX["NetAmount"]] = _money(net)
        item[_IX["TaxAmount"]] = _money(net * _GST_PERCENT // 100)
        if item[_IX["DeliveryStatus"]] == "C" and new > old:
            # More ordered than delivered: the item is partly delivered again.
            item[_IX["SDProcessStatus"]] = item[_IX["DeliveryStatus"]] = item[_IX["OrderRelatedBillingStatus"]] = "B"

    @staticmethod
    def _add_item(order: _Order, rng: random.Random) -> None:
        r = rng.random
        header = order.header
        template = order.items[0]
        product = PRODUCTS[bisect_right(_PRODUCT_CUM, r() * _PRODUCT_CUM[-1])]
        qty = _draw_quantity(product, r)
        net = _net_paise(qty, product.price, order.discount)
        number = max(int(item[_IX["SalesOrderItem"]]) for item in order.items) + 10
        order.items.append(
            list(
                _build_item(
                    header[0],
                    str(number),
                    product.text,
                    header[_OX["PurchaseOrderByCustomer"]],
                    product.material,
                    template[_IX["PricingDate"]],
                    _quantity(qty),
                    product.unit,
                    *UNITS[product.unit],
                    _quantity(qty * product.pack_kg * 101 // 100),
                    _quantity(qty * product.pack_kg),
                    _money(net),
                    product.group,
                    "",
                    template[_IX["ProductionPlant"]],
                    template[_IX["ShippingPoint"]],
                    header[_OX["IncotermsClassification"]],
                    _money(net * _GST_PERCENT // 100),
                    header[_OX["CustomerPaymentTerms"]],
                    "",
                    "A",
                    "A",
                    "A",
                )
            )
        )

    def reject_item(self, so: str, item: str | None = None, reason: str = "03") -> str:
        """Reject one item of an order (``SalesDocumentRjcnReason``), stamped now; returns the item number.

        Without ``item`` the first item not yet rejected is taken. Totals and the header's
        rejection status (``B`` partly, ``C`` all items) follow.
        """
        if not reason or len(reason) > 2:
            raise ValueError("reason must be a rejection code of 1-2 characters, e.g. '03'")
        with self.lock:
            index = self._index(so)
            order = self._load(index)
            candidates = [row for row in order.items if item is None or row[_IX["SalesOrderItem"]] == item]
            if item is None:
                candidates = [row for row in candidates if _item_live(row)]
            if not candidates:
                raise KeyError(f"{so}/{item}" if item is not None else f"{so} (no item left to reject)")
            target = candidates[0]
            target[_IX["SalesDocumentRjcnReason"]] = reason
            target[_IX["SDProcessStatus"]] = "C"
            target[_IX["DeliveryStatus"]] = target[_IX["OrderRelatedBillingStatus"]] = target[_IX["Batch"]] = ""
            self._stamp(order, self.now())
            self._replace({index: order})
            return str(target[_IX["SalesOrderItem"]])

    def make_dirty(self, so: str, kind: str, seed: int | None = None) -> None:
        """Spoil an existing order with one of :data:`DIRTY_KINDS`; it is stamped now (unless ``future_change``)."""
        if kind not in DIRTY_KINDS:
            raise ValueError(f"kind must be one of {', '.join(DIRTY_KINDS)}")
        rng = random.Random(seed if seed is not None else time.time_ns())
        with self.lock:
            index = self._index(so)
            order = self._load(index)
            if kind != "future_change":
                self._stamp(order, self.now())
            _make_dirty(order, kind, rng)
            self._replace({index: order})

    def delete_orders(self, orders: Iterable[str]) -> list[str]:
        """Delete orders with their items, partners and pricing: gone from every set, 404 by key."""
        with self.lock:
            indices = sorted({self._index(str(so)) for so in orders})
            ids = [self._orders.rows[i][0] for i in indices]
            links = self._orders.links
            for set_name, nav in (
                (ITEM_TYPE.set_name, "to_Item"),
                (PARTNER_TYPE.set_name, "to_Partner"),
                (PRICING_TYPE.set_name, "to_PricingElement"),
            ):
                self.delete_rows(set_name, [i for index in indices for i in links[nav][index]])
            self.delete_rows(ORDER_TYPE.set_name, indices)
            for so in ids:
                self.dirty_ids.pop(so, None)
            self.deleted_ids.extend(ids)
            logger.info("SAP sales-order sandbox: deleted %d orders", len(ids))
            return ids

    def add_orders(self, n: int) -> list[str]:
        """Append ``n`` new open orders created now (deterministic content); returns their ids."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self.lock:
            stamp = self.now()
            added = []
            for _ in range(n):
                index = self._next_index
                self._next_index += 1
                rng = random.Random(self.seed * 7_000_003 + index)
                added.append(self._generator.order(rng, index, created=stamp))
            ids = self._store(added)
            for table in self.tables.values():
                table.invalidate()
            self.data_changed()
            return ids

    # -- control routes ------------------------------------------------------------------------

    def control_routes(self) -> list[str]:
        """Sales-order control routes (listed by ``GET /_sandbox``)."""
        prefix = f"/_sandbox/{self.name}"
        return [
            f"GET {prefix}/info",
            f"GET {prefix}/dirty",
            f'POST {prefix}/change-items {{"count": N}} or {{"orders": [ids]}}, optional "seed", "kind"',
            f'POST {prefix}/delete {{"orders": [ids]}}',
            f'POST {prefix}/reject-item {{"order": id, "item": optional, "reason": optional}}',
            f'POST {prefix}/make-dirty {{"order": id, "kind": one of {", ".join(DIRTY_KINDS)}}}',
            f'POST {prefix}/add-orders {{"count": N}}',
            f'POST {prefix}/expire-tokens {{"kind": "all" | "oauth" | "csrf"}}',
            f'POST {prefix}/clock {{"advance_s": seconds}}',
        ]

    def control_get(self, action: str) -> SandboxResponse | None:
        """``GET /_sandbox/sales-orders/dirty``: the deliberately dirty orders and their reasons."""
        if action == "dirty":
            return SandboxResponse.json(200, {"count": len(self.dirty_ids), "dirty": self.dirty_ids})
        return None

    def control_post(self, action: str, body: Mapping[str, Any]) -> SandboxResponse:
        """The drills; the engine answers ``expire-tokens`` and ``clock``."""
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        if action == "change-items":
            target = body["orders"] if "orders" in body else _count(body.get("count", 1))
            kind = body.get("kind")
            changed = self.change_items(target, seed, None if kind is None else str(kind))
            return SandboxResponse.json(200, {"changed": changed, "count": len(changed)})
        if action == "delete":
            orders = body.get("orders")
            if not isinstance(orders, list):
                raise ValueError("orders must be a list of SalesOrder ids")
            deleted = self.delete_orders(orders)
            return SandboxResponse.json(200, {"deleted": deleted, "count": len(deleted)})
        if action == "reject-item":
            item = body.get("item")
            rejected = self.reject_item(
                str(body.get("order", "")), None if item is None else str(item), str(body.get("reason", "03"))
            )
            return SandboxResponse.json(200, {"order": body.get("order"), "item": rejected})
        if action == "make-dirty":
            self.make_dirty(str(body.get("order", "")), str(body.get("kind", "")), seed)
            return SandboxResponse.json(200, {"order": body.get("order"), "kind": body.get("kind")})
        if action == "add-orders":
            added = self.add_orders(_count(body.get("count", 1)))
            return SandboxResponse.json(200, {"added": added, "count": len(added)})
        return super().control_post(action, body)

    def info(self) -> dict[str, Any]:
        """What ``GET /_sandbox/sales-orders/info`` shows."""
        return {
            **super().info(),
            "orders": self.order_count,
            "items": len(self._items.rows),
            "dirty": len(self.dirty_ids),
            "deleted": len(self.deleted_ids),
            "window": [WINDOW_START.isoformat(), ANCHOR_DATE.isoformat()],
        }


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("count must be a non-negative integer")
    return value


def build_sales_order_sandbox(
    orders: int = 5_000,
    seed: int = 0,
    max_page_size: int = 1000,
    faults: Mapping[str, Any] | None = None,
    **options: Any,
) -> SalesOrderSandbox:
    """A sales-order sandbox with faults from ``$DRYMIX_SANDBOX_FAULTS`` (JSON) overlaid by ``faults``."""
    return SalesOrderSandbox(orders=orders, seed=seed, max_page_size=max_page_size, faults=faults_with_env(faults), **options)


__all__ = [
    "CHANGE_KINDS",
    "DIRTY_KINDS",
    "ENTITY_TYPES",
    "FIRST_ORDER_NUMBER",
    "FUTURE_CHANGE",
    "ITEM_TYPE",
    "ORDER_TYPE",
    "PARTNER_TYPE",
    "PRICING_TYPE",
    "PRODUCTS",
    "SERVICE",
    "SERVICE_NAME",
    "SERVICE_ROOT",
    "WINDOW_START",
    "SalesOrderSandbox",
    "build_sales_order_sandbox",
    "order_id",
]

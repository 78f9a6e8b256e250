"""SAP S/4HANA datasets as the sync engine runs them (tasks/engine.py).

`CUSTOMERS`: business partners (API_BUSINESS_PARTNER, addresses and customer data expanded) into the ERP
`customers` table. The read is keyset-paged on the partner key (a partner changed mid-read stays where it
was, so nothing is skipped) and counted first (`$count`): fewer distinct partners read than counted is a
shortfall, the rows read still load but the watermark does not move and the whole read is the unit to
rerun. The watermark is the latest LastChangeDate among rows that loaded (a quarantined partner dated
2100 cannot freeze later runs), never after the day the read started; the next read re-reads
`overlap_days` before it (connectors/sap `SapConnector.first_url`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors.sap import BUSINESS_PARTNERS
from data_mappings.customers import (
    SOURCE_FIELDS,
    change_dates,
    flatten_business_partners,
    map_customers,
    source_expand,
)
from hub.ledger.retry_units import SAP_CUSTOMERS_BATCH
from tasks.streams import PullStream, ReadPlan, RunOptions

if TYPE_CHECKING:
    from sqlalchemy import Table

    from connectors.core.base import Connector, Stream


def to_records(records: list[dict[str, Any]]) -> pd.DataFrame:
    """SAP's nested partner records -> rows of the ERP customers table (flattened once, then mapped)."""
    return map_customers(flatten_business_partners(records))


def next_cursor(high_water: date | None, since: str | None, read_started: datetime) -> dict[str, Any]:
    """The watermark after a complete read: the latest change date that loaded, never after the read's start.

    SAP's clock, a future-dated record that passed validation or a partner changed while it was read can
    put a date beyond the read's start; a watermark there would make later incremental reads skip what
    changes until then. The next read starts `overlap_days` before the watermark.
    """
    started = read_started.astimezone(UTC).date()
    mark = min(high_water, started) if high_water else None
    if mark is None and since:
        mark = min(date.fromisoformat(since), started)
    return {"last_change_date": mark.isoformat()} if mark else {}


def _plan(connector: Connector, stream: Stream, cursor: Mapping[str, Any] | None, options: RunOptions) -> ReadPlan:
    return ReadPlan(
        position=connector.start(stream, cursor),
        mode="incremental" if cursor else "full",
        since=(cursor or {}).get("last_change_date"),
    )


def _connect(options: RunOptions) -> Connector:
    from hub.runtime.connections import build_sap_connector

    return build_sap_connector(page_size=options.page_size)


def _customers_table() -> Table:
    from hub.core.models import Customer

    table: Table = Customer.__table__  # type: ignore[assignment]
    return table


def _latest_change(valid: pd.DataFrame) -> date | None:
    dates = change_dates(valid).dropna()
    return None if dates.empty else dates.max()


CUSTOMERS = PullStream(
    integration="sap",
    dataset="customers",
    flow_name="sync-sap-customers",
    unit_kind=SAP_CUSTOMERS_BATCH,
    operation="sync_customers",
    # The partners with what the mapping reads: addresses (e-mail, phones), customer data, tax numbers.
    stream=dataclasses.replace(BUSINESS_PARTNERS, select=SOURCE_FIELDS, expand=source_expand()),
    connect=_connect,
    plan=_plan,
    next_cursor=lambda plan, high_water, started: next_cursor(high_water, plan.since, started),
    map=to_records,
    suite="customers",
    table=_customers_table,
    key=("customer_id",),
    high_water=_latest_change,
    newer_wins="sap_changed_at",
    count=True,
    # A unit recorded before keyset paging holds an offset position that cannot be trusted: read again.
    resumable=lambda position: "filter" in (position.state or {}),
    full_read_must_find=(
        "SAP returned no business partners for a full sync: check the communication user's authorisations "
        "and that API_BUSINESS_PARTNER serves data"
    ),
)

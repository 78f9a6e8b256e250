"""Declarations of pull-shaped datasets, as the sync engine (tasks/engine.py) runs them.

Prefect-free and cheap to import: a system's declarations (hub/systems/<system>.py) import these types
without loading the engine, and the registry (hub/datasets.py) names them by path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connectors.core.errors import ErrorCategory
from connectors.core.paging import PagePosition

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Connection, Table

    from connectors.core.base import Connector, Stream

ALL_BUT_VALIDATION = tuple(c.value for c in ErrorCategory if c is not ErrorCategory.DATA_VALIDATION_FAILED)


@dataclass
class ReadPlan:
    """Where a read starts and what it covers; `state` travels in the failed unit so a rerun reads the same."""

    position: PagePosition
    mode: str  # full | incremental | resume
    since: Any = None  # what the run reports as read from (a date, an epoch)
    state: dict[str, Any] = field(default_factory=dict)  # e.g. the cursor read with, a fixed time window


@dataclass(frozen=True)
class PullStream:
    """How the engine runs one pull-shaped dataset: the source stream, the mapping, the suite, the target, the cursor."""

    integration: str
    dataset: str
    flow_name: str
    unit_kind: str
    operation: str  # what a failure is classified under (sync_customers, reconcile_payments, ...)
    stream: Stream
    connect: Callable[[RunOptions], Connector]  # a connector for the run's options, settings and secrets handed in
    plan: Callable[[Connector, Stream, Mapping[str, Any] | None, RunOptions], ReadPlan]  # the read from the watermark
    # The watermark after a complete read, from the plan and the high water of rows that loaded (or, for
    # a source that hands its own cursor with the last page, that cursor).
    next_cursor: Callable[[ReadPlan, Any, datetime], dict[str, Any] | None]
    map: Callable[[list[dict[str, Any]]], pd.DataFrame] | None = None
    suite: str | None = None  # expectations/<suite>.py, validated by the one runner
    table: Callable[[], Table] | None = None  # lazy: the ERP table the mapped rows are upserted into
    key: tuple[str, ...] = ()
    high_water: Callable[[pd.DataFrame], Any] | None = None  # the cursor value of rows that will load
    newer_wins: str | None = None  # a replayed row never overwrites an ERP row changed later (by this column)
    # Records applied by a rule of their own, batch by batch, each with the cursor (on the last batch) in
    # one transaction: (conn, records, cursor or None, context) -> counts. Used instead of map/suite/table.
    apply: Callable[[Connection, list[dict[str, Any]], Mapping[str, Any] | None, ApplyContext], Mapping[str, int]] | None = None
    # The sync_state dataset of the watermark, when it is not `dataset` (one per calendar, say).
    cursor_key: Callable[[RunOptions], str] | None = None
    # The source can refuse a stale cursor (ResyncRequired: Google 410, Graph syncStateNotFound): then
    # the read starts again without it, as a full read; the old watermark stays until the new one commits.
    resync: bool = False
    count: bool = False  # ask the source how many records the read covers, and fail a short read
    resumable: Callable[[PagePosition], bool] = lambda position: True  # a recorded position to trust on a rerun
    keep_cursor_on_resume: bool = True  # a rerun writes the watermark only if no run moved it meanwhile
    full_read_must_find: str | None = None  # message when a full read found nothing (EMPTY_DATASET)
    resolve: tuple[str, ...] = ALL_BUT_VALIDATION  # error categories a successful run resolves
    batch_pages: int | None = None  # default: the dataset's configured batch_pages, else the integration's
    # The dataset's own configured pages per batch (SAP's sales orders: [sap.sales_orders] batch_pages), read at
    # run time; None leaves the integration's.
    configured_batch_pages: Callable[[], int | None] | None = None
    # Several mapped rows per source record (an order and its items): the frame column holding the record's
    # position in the batch. A row that fails validation, or that the database refuses, refuses every row of
    # its record; the record is quarantined once with all its rows' failed rules (each naming its row by
    # `row_label`). The run's extracted/valid/quarantined/upserted counts are in records.
    record_column: str | None = None
    row_label: str | None = None  # the frame column naming a row inside its record (the item number)
    # Writes a batch's valid rows instead of the upsert into `table` (a header and its items in two tables), in
    # the batch's transaction: (conn, rows, flow_run_id) -> counts, `upserted` and `unchanged` in records, any
    # other key the dataset's own (items deleted, ...).
    load: Callable[[Connection, pd.DataFrame, str | None], Mapping[str, int]] | None = None
    # After a complete, counted full read (never an incremental, resumed or short one), in the last batch's
    # transaction: (conn, every key the read found, flow_run_id) -> counts. Marks what the source no longer holds.
    reconcile: Callable[[Connection, frozenset[str], str | None], Mapping[str, int]] | None = None

    def __post_init__(self) -> None:
        if self.apply is None and (self.map is None or self.suite is None or self.table is None or not self.key):
            raise ValueError(f"{self.integration}.{self.dataset}: declare map, suite, table and key, or apply")
        if self.apply is None and self.cursor_key is not None:
            raise ValueError(f"{self.integration}.{self.dataset}: a mapped dataset keeps its watermark under its own name")
        if self.record_column is not None and self.load is None:
            raise ValueError(f"{self.integration}.{self.dataset}: several rows per record need their own `load`")
        if self.reconcile is not None and not self.count:
            raise ValueError(f"{self.integration}.{self.dataset}: `reconcile` needs a counted read (count=True)")


@dataclass(frozen=True)
class RunOptions:
    full_refresh: bool = False
    page_size: int | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)  # the flow's own knobs (an overlap, a calendar, ...)


@dataclass(frozen=True)
class ApplyContext:
    """What an `apply` needs beyond its records: where the watermark goes, the run, the read."""

    integration: str
    cursor_key: str  # sync_state dataset of the watermark
    flow_run_id: str | None
    plan: ReadPlan
    options: RunOptions

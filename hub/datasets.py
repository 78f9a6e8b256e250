"""The hub's datasets, declared once: every central list (the `drymix sync` and `drymix datasets` commands,
prefect.yaml (rendered by `drymix deploy render`), monitoring's integration list, smoke, the stack's simulators,
the rerun and replay checks) loops over `all_datasets()` instead of keeping its own: the product's `DATASETS`,
then any dataset declared elsewhere and registered (`register`, `registered`, DRYMIX_DATASETS; end of file).

A declaration says where a dataset comes from and goes to, and how the hub runs it: its flow and
deployment, the config key its schedule comes from (hub/operations/deploy.py `configured_schedules`), the table and
key it loads, the cursor it keeps in `sync_state`, the failed-unit kinds it records (hub/ledger/retry_units.py),
the quarantine replays that apply to it (hub/ledger/quarantine.py) and the simulator it is tested against.
Nothing here imports a flow or a connector: reading the registry is cheap (the CLI's `--help` stays fast).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from hub.ledger import retry_units


class Unit(NamedTuple):
    """A kind of failed unit a dataset records, and what rerunning one does (shown by `drymix errors show`)."""

    kind: str
    reruns: str


@dataclass(frozen=True)
class Dataset:
    """One dataset the hub moves, as every surface of the hub needs to know it."""

    name: str  # `<integration>.<dataset>`: the `drymix sync <name>` argument
    integration: str  # integration_errors.integration / sync_state.integration of its rows
    dataset: str  # integration_errors.dataset of its main rows
    description: str
    flow: str | None  # `flows/<file>.py:<function>`; None for a dataset only a command pushes
    deployment: str | None  # its prefect.yaml deployment
    schedule: str | None  # key of its cron in configured_schedules() (config/integrations.toml)
    table: str | None  # the ERP table it loads (or drains, for a push)
    key: tuple[str, ...]  # that table's natural key
    cursor: str  # what its watermark is ("none" when it keeps none)
    cursor_datasets: tuple[str, ...] = ()  # sync_state.dataset of its watermark(s); `x:` matches every `x:<...>`
    error_datasets: tuple[str, ...] = ()  # integration_errors.dataset values its failures are recorded under
    # Failed units it records, each rerun by its flow with `resume=<the unit>` (hub/ledger/retry_units.py)
    units: tuple[Unit, ...] = ()
    replays: tuple[str, ...] = ()  # datasets `drymix quarantine replay` handles for it (hub/ledger/quarantine.py)
    mapping: str | None = None  # data_mappings/<mapping>.py
    suite: str | None = None  # expectations/<suite>.py
    simulator: str | None = None  # `drymix sandbox <simulator>`
    full_refresh_parameter: str | None = None  # the flow parameter that ignores the watermark
    # Its flow splits a full read into key ranges run in parallel processes (`partitions`, `cluster`: tasks/partitions.py).
    partitioned: bool = False
    command: str = ""  # the older verb that runs it too (`drymix <command>`)
    monitored: tuple[str, ...] = ()  # integrations whose calls it makes, when not just `integration`
    concurrency_limit: int | None = None  # prefect.yaml: runs of its deployment at a time (None: no limit)

    stream: str | None = None  # `module:NAME` of its PullStream when the sync engine runs it (tasks/engine.py)

    @property
    def unit_kinds(self) -> tuple[str, ...]:
        return tuple(unit.kind for unit in self.units)

    @property
    def flow_module(self) -> str:
        """`flows.sync_sap_customers` for `flows/sync_sap_customers.py:sync_sap_customers`."""
        if self.flow is None:
            raise ValueError(f"{self.name} has no flow (it runs as `drymix {self.command}`)")
        return self.flow.partition(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def flow_function(self) -> str:
        if self.flow is None:
            raise ValueError(f"{self.name} has no flow (it runs as `drymix {self.command}`)")
        return self.flow.partition(":")[2]

    def load_stream(self) -> Any:
        """The sync engine's declaration of this dataset (tasks/streams.py `PullStream`; imports its system)."""
        if self.stream is None:
            raise ValueError(f"{self.name} is not run by the sync engine")
        module, _, name = self.stream.partition(":")
        return getattr(importlib.import_module(module), name)

    def load_flow(self) -> Callable[..., Any]:
        """The flow object (imports the flow module and with it Prefect)."""
        flow: Callable[..., Any] = getattr(importlib.import_module(self.flow_module), self.flow_function)
        return flow

    @property
    def integrations(self) -> tuple[str, ...]:
        """The integrations monitoring must list for this dataset."""
        return self.monitored or (self.integration,)


DATASETS: tuple[Dataset, ...] = (
    Dataset(
        name="sap.customers",
        integration="sap",
        dataset="customers",
        description="SAP S/4HANA business partners into the ERP customers table (incremental by LastChangeDate).",
        flow="flows/sync_sap_customers.py:sync_sap_customers",
        deployment="sync-sap-customers",
        schedule="sap",
        table="customers",
        key=("customer_id",),
        cursor="LastChangeDate (date, re-read overlap_days before it)",
        cursor_datasets=("customers",),
        error_datasets=("customers",),
        units=(
            Unit(retry_units.SAP_CUSTOMERS_BATCH, 'SAP customers: resume the read at the failed batch (its start position and filter) through the batches the failed run never reached; batches that committed are not read again'),
        ),
        replays=("customers",),
        mapping="customers",
        suite="customers",
        simulator="sap",
        full_refresh_parameter="full_refresh",
        command="sync sap-customers",
        stream="hub.systems.sap:CUSTOMERS",
        partitioned=True,
        concurrency_limit=1,  # two runs would read from the same watermark and race to move it
    ),
    Dataset(
        name="sap.sales_orders",
        integration="sap",
        dataset="sales_orders",
        description="SAP S/4HANA sales orders with their items into the ERP sales_orders and sales_order_items "
        "(incremental by LastChangeDateTime; a daily full read marks orders deleted in SAP).",
        flow="flows/sync_sap_sales_orders.py:sync_sap_sales_orders",
        deployment="sync-sap-sales-orders",
        schedule="sap_sales_orders",
        table="sales_orders",
        key=("sales_order",),
        cursor="LastChangeDateTime (timestamp, re-read overlap_s before it)",
        cursor_datasets=("sales_orders",),
        error_datasets=("sales_orders",),
        units=(
            Unit(retry_units.SAP_SALES_ORDERS_BATCH, "SAP sales orders: resume the read at the failed batch (its start position and filter) through the batches the failed run never reached; batches that committed are not read again"),
        ),
        replays=("sales_orders",),
        mapping="sales_orders",
        suite="sales_orders",
        simulator="sap",
        full_refresh_parameter="full_refresh",
        stream="hub.systems.sap:SALES_ORDERS",
        concurrency_limit=1,  # two runs would read from the same watermark and race to move it
    ),
    Dataset(
        name="razorpay.payments",
        integration="razorpay",
        dataset="payments",
        description="Poll Razorpay payments since the watermark and fill whatever the webhooks missed.",
        flow="flows/reconcile_razorpay.py:reconcile_razorpay",
        deployment="reconcile-razorpay",
        schedule="razorpay",
        table="payments",
        key=("order_id",),
        cursor="payment created_at (epoch seconds, re-read overlap_s before it)",
        cursor_datasets=("payments",),
        error_datasets=("payments",),
        units=(
            Unit(retry_units.RAZORPAY_PAYMENTS_PAGE, "Razorpay reconciliation: resume the failed run's fixed time window at the failed page through its last page (forward-only applies); the watermark moves only if no later run moved it"),
        ),
        mapping="payments",
        simulator="razorpay",
        stream="hub.systems.razorpay:RECONCILIATION",
        concurrency_limit=1,  # two runs would poll the same window from the same watermark
    ),
    Dataset(
        name="webhooks.events",
        integration="webhooks",
        dataset="webhook_events",
        description="Apply stored Razorpay and WhatsApp webhook events to payments and whatsapp_messages (exactly once, forward-only).",
        flow="flows/process_webhooks.py:process_webhooks",
        deployment="process-webhooks",
        schedule="whatsapp",  # WhatsApp has no pull sync: its data arrives as webhooks, applied on its schedule
        table="webhook_events",
        key=("provider", "event_id"),
        cursor="none (the inbox status of each event)",
        error_datasets=("webhook_events",),
        units=(
            Unit(retry_units.WEBHOOK_EVENT, 'Webhooks: apply the one stored event again (idempotent, forward-only)'),
        ),
        mapping=None,  # each provider's writer maps its own events (hub/systems/razorpay.py, hub/systems/whatsapp.py)
        command="webhooks process",
        monitored=("razorpay", "whatsapp"),
    ),
    Dataset(
        name="plant_opcua.plant",
        integration="plant_opcua",
        dataset="plant",
        description="Plant OPC UA status snapshot and completed batch records into plant_readings and production_batches.",
        flow="flows/collect_plant.py:collect_plant",
        deployment="collect-plant",
        schedule="plant_opcua",
        table="production_batches",
        key=("batch_id",),
        cursor="batch record seq (plant_readings: last collected at)",
        cursor_datasets=("production_batches", "plant_readings"),
        error_datasets=("plant_readings", "production_batches"),
        units=(
            Unit(retry_units.PLANT_BUFFER_FLUSH, 'Plant: load the buffered entries the failed flush left (up to its last seq), oldest first; nothing is read from the plant, and entries buffered after the failure wait for collect-plant'),
        ),
        replays=("plant_readings", "production_batches"),
        mapping="plant",
        suite="plant",
        simulator="plant",
        command="plant collect",
        concurrency_limit=1,  # the buffer is flushed in order by one writer
    ),
    Dataset(
        name="lab.lab_results",
        integration="lab",
        dataset="lab_results",
        description="Lab testing-machine exports (drop folder, results API) into lab_results, each export once.",
        flow="flows/collect_lab_results.py:collect_lab_results",
        deployment="collect-lab-results",
        schedule="lab",
        table="lab_results",
        key=("specimen_id",),
        cursor="content checksum per export file (lab_exports); results API: last seq read",
        cursor_datasets=("lab_results",),
        error_datasets=("lab_results",),
        units=(
            Unit(retry_units.LAB_EXPORT_FILE, 'Lab: process the one export file again from the drop folder (its checksum ledger makes a repeat a no-op); the other files wait for collect-lab-results'),
            Unit(retry_units.LAB_RESULTS_API, 'Lab: read the results API again from its committed cursor (each page commits with its cursor); the drop folder is not scanned'),
        ),
        replays=("lab_results",),
        mapping="lab",
        suite="lab",
        simulator="lab",
        command="lab collect",
        concurrency_limit=1,  # two runs would race for the same files (the checksum ledger decides, but wasted work)
    ),
    Dataset(
        name="microsoft365.documents",
        integration="microsoft365",
        dataset="documents",
        description="ERP document_outbox to SharePoint through Microsoft Graph (simple uploads, resumable sessions above 4 MB).",
        flow="flows/upload_documents.py:upload_documents",
        deployment="upload-documents",
        schedule="microsoft365_documents",
        table="document_outbox",
        key=("document_key",),
        cursor="none (the outbox status of each document)",
        error_datasets=("documents",),
        units=(
            Unit(retry_units.DOCUMENT_UPLOAD, 'Documents: upload the one outbox document again (an open upload session resumes where it stopped; an uploaded document is left alone)'),
            Unit(retry_units.DOCUMENTS_PAGE, 'Documents: extract, validate and upload the one outbox page (its id range) the run stopped in; rows after it wait for upload-documents'),
        ),
        mapping="documents",
        suite="documents",
        simulator="microsoft365",
        command="m365 upload",
    ),
    Dataset(
        name="sap.customer_push",
        integration="sap",
        dataset="customer_push",
        description="ERP customer creations and changes from customer_outbox to SAP business partners (deep insert; If-Match updates under the conflict rule).",
        flow="flows/push_sap_customers.py:push_sap_customers",
        deployment="push-sap-customers",
        schedule="sap_customer_push",
        table="customer_outbox",
        key=("id",),
        cursor="none (the outbox status of each customer change)",
        error_datasets=("customer_push",),
        units=(
            Unit(retry_units.SAP_CUSTOMER_PUSH, "SAP customer push: push the one outbox row again, whatever its retry time (a create looks its ERP reference up first, so it never makes a twin; after a conflict the ERP's owned fields are written over SAP's current version)"),
            Unit(retry_units.SAP_CUSTOMER_PUSH_PAGE, "SAP customer push: push the one outbox page (its id range) the run stopped in; rows after it wait for push-sap-customers"),
        ),
        mapping=None,  # the ERP's fields go to SAP as connectors/sap/partners_write.py builds them (FIELDS: who owns what)
        simulator="sap",
        command="sap customers push",
        concurrency_limit=1,  # two runs would claim the same rows and push the same change twice
    ),
    Dataset(
        name="microsoft365.calendar",
        integration="microsoft365",
        dataset="calendar_events",
        description="ERP schedules <-> Outlook calendar events through Microsoft Graph, both ways (calendarView delta).",
        flow="flows/sync_microsoft_calendar.py:sync_microsoft_calendar",
        deployment="sync-microsoft-calendar",
        schedule="microsoft365",
        table="schedules",
        key=("schedule_ref",),
        cursor="calendarView delta link, per mailbox",
        cursor_datasets=("events:",),
        error_datasets=("calendar_events", "schedules"),
        units=(
            Unit(retry_units.OUTLOOK_CALENDAR_PULL, "Outlook calendar: read people's changes again from the saved delta link and apply them (pages that committed apply again as no-ops); the ERP's changes are not pushed"),
            Unit(retry_units.OUTLOOK_SCHEDULES_PUSH, 'Outlook calendar: push the schedules whose push failed (all pending ones when the whole push stage failed); creates carry a transactionId, so a repeat creates nothing twice'),
        ),
        mapping="microsoft365_events",
        suite="schedules",
        simulator="microsoft365",
        full_refresh_parameter="full_resync",
        command="m365 sync-calendar",
        stream="hub.systems.microsoft365:CALENDAR_EVENTS",
        concurrency_limit=1,  # two runs would use the same delta link and push the same schedules twice
    ),
    Dataset(
        name="google_workspace.calendar",
        integration="google_workspace",
        dataset="calendar_events",
        description="ERP schedules <-> Google Workspace calendar events, both ways (syncToken incremental).",
        flow="flows/sync_google_calendar.py:sync_google_calendar",
        deployment="sync-google-calendar",
        schedule="google_workspace",
        table="schedules",
        key=("schedule_ref",),
        cursor="events.list syncToken, per calendar",
        cursor_datasets=("events:",),
        error_datasets=("calendar_events", "schedules"),
        units=(
            Unit(retry_units.GOOGLE_CALENDAR_PULL, "Google calendar: read the changes again from the saved sync token and apply them (pages that committed apply again as no-ops); the ERP's changes are not pushed"),
            Unit(retry_units.GOOGLE_SCHEDULES_PUSH, 'Google calendar: push the schedules whose push failed (all pending ones when the whole push stage failed); our deterministic event ids make a repeat create nothing twice'),
        ),
        mapping="google_events",
        suite="schedules",
        simulator="google",
        full_refresh_parameter="full_resync",
        command="google sync",
        stream="hub.systems.google:CALENDAR_EVENTS",
        concurrency_limit=1,  # two runs would use the same sync token and push the same schedules twice
    ),
    Dataset(
        name="whatsapp.messages",
        integration="whatsapp",
        dataset="whatsapp_messages",
        description="Texts and approved templates to customers from the business number (status webhooks move them on).",
        # Sent on demand: `drymix whatsapp send`, or queued (`--queue`) as a run of this deployment, never scheduled.
        flow="flows/send_whatsapp_messages.py:send_whatsapp_messages",
        deployment="send-whatsapp-messages",
        schedule=None,
        table="whatsapp_messages",
        key=("wamid",),
        cursor="none (sent on demand)",
        error_datasets=("whatsapp_messages",),
        mapping="whatsapp",
        simulator="whatsapp",
        command="whatsapp send",
    ),
)

# Deployments of prefect.yaml that run the hub itself rather than a dataset: deployment -> its schedule key,
# which also names its flow (`flows/<key>.py:<key>`). Each runs one at a time (two retry runs would claim the
# same units, two monitor runs would fire the same alert).
HUB_JOBS: dict[str, str] = {
    "retry-failed-units": "retry_failed_units",
    "monitor-integrations": "monitor_integrations",
}


def by_name(name: str) -> Dataset:
    """The dataset called `name` (`sap.customers`), or a KeyError listing the names there are."""
    known = all_datasets()
    for dataset in known:
        if dataset.name == name:
            return dataset
    raise KeyError(f"no dataset {name!r}: the hub has {', '.join(d.name for d in known)}")


def runnable() -> list[Dataset]:
    """The datasets with a flow (what `drymix sync <dataset>` runs)."""
    return [d for d in all_datasets() if d.flow is not None]


def monitored_integrations(extra: Iterable[str] = ()) -> list[str]:
    """Every integration a registered dataset calls, plus `extra` (config/monitoring.toml `integrations`)."""
    names = {name for d in all_datasets() for name in d.integrations}
    names.update(extra)
    return sorted(names)


def declared_unit_kinds() -> dict[str, str]:
    """Failed-unit kind -> the dataset that records it."""
    return {kind: d.name for d in all_datasets() for kind in d.unit_kinds}


# --- datasets declared outside the product's list: a test module, a system package ---------------------------

PLUGINS_ENV = "DRYMIX_DATASETS"  # `module:ATTRIBUTE` (a Dataset or an iterable of them) or `module`, comma-separated
_REGISTERED: dict[str, Dataset] = {}
_LOADED_PLUGINS: set[str] = set()


def all_datasets() -> tuple[Dataset, ...]:
    """Every dataset the hub knows: the product's `DATASETS`, then those registered, in registration order.

    Also loads the plug-ins DRYMIX_DATASETS names (once per process): how a dataset declared outside the
    product reaches a `drymix` process, as a test's subprocess or a worker with a system package installed."""
    _load_plugins()
    return (*DATASETS, *_REGISTERED.values())


def register(dataset: Dataset) -> Dataset:
    """Add `dataset` to the registry and return it; registering the same declaration again changes nothing.

    Names and deployments are unique: a clash with a declared or registered dataset (or a hub job) is a ValueError."""
    if _REGISTERED.get(dataset.name) == dataset:
        return dataset
    for other in (*DATASETS, *_REGISTERED.values()):
        where = "hub/datasets.py DATASETS" if other in DATASETS else "registered"
        if other.name == dataset.name:
            raise ValueError(f"a dataset named {dataset.name!r} is already {where}: dataset names are unique")
        if dataset.deployment is not None and other.deployment == dataset.deployment:
            raise ValueError(f"{dataset.name}: deployment {dataset.deployment!r} is {other.name}'s ({where}): deployments are unique")
    if dataset.deployment in HUB_JOBS:
        raise ValueError(f"{dataset.name}: deployment {dataset.deployment!r} is a hub job (HUB_JOBS)")
    _REGISTERED[dataset.name] = dataset
    return dataset


def unregister(name: str) -> Dataset:
    """Remove a registered dataset and return it; the product's `DATASETS` cannot be removed."""
    if any(d.name == name for d in DATASETS):
        raise ValueError(f"{name} is declared in hub/datasets.py DATASETS, not registered: it cannot be unregistered")
    try:
        return _REGISTERED.pop(name)
    except KeyError:
        raise KeyError(f"no registered dataset {name!r} (registered: {', '.join(_REGISTERED) or 'none'})") from None


@contextmanager
def registered(*datasets: Dataset) -> Iterator[tuple[Dataset, ...]]:
    """The datasets registered for the `with` block (a test's), unregistered after it even when it fails."""
    added: list[str] = []
    try:
        for dataset in datasets:
            if dataset.name not in _REGISTERED:
                added.append(dataset.name)
            register(dataset)
        yield datasets
    finally:
        for name in reversed(added):
            _REGISTERED.pop(name, None)


def _load_plugins() -> None:
    """Import what DRYMIX_DATASETS names and register the datasets it points at (each spec once)."""
    for spec in (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(",")):
        if not spec or spec in _LOADED_PLUGINS:
            continue
        _LOADED_PLUGINS.add(spec)  # first: the module may read the registry while it is imported
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            found: Any = getattr(module, attribute) if attribute else ()
        except (ImportError, AttributeError) as exc:
            _LOADED_PLUGINS.discard(spec)
            raise ImportError(f"{PLUGINS_ENV}: cannot load {spec!r}: {exc}") from exc
        for dataset in (found,) if isinstance(found, Dataset) else tuple(found):
            register(dataset)

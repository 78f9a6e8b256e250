"""Background jobs (issue 18, item 5): one way to queue work, a Prefect flow run of the job's deployment with an
idempotency key, offered by the integration base (hub/runtime/jobs.py, connectors/core/base.py).

The queueing runs against the session's Prefect test server with the deployment registered there and no
worker: the run waits Scheduled, as it does while every worker of the stack is stopped. That a worker which
starts later runs it is tests/hub/operations/deploy/test_queued_jobs.py (slow: `-m deploy`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from connectors.core.base import Connector, Integration, QueuedJob, install_job_queue, installed_job_queue
from connectors.core.errors import InvalidRequest, ServerError, SyncFailed
from connectors.lab.exports import LabDropFolder
from connectors.plant.connector import PlantConnector
from hub.core.settings import ROOT
from hub.operations.deploy import declared_deployments, ensure_work_pool
from hub.runtime import jobs
from hub.runtime.jobs import (
    JOBS,
    JobNotQueued,
    PrefectJobQueue,
    fingerprint,
    follow_up,
    outbox_key,
    queue_job,
)


class ListQueue:
    """A queue that keeps what it was given (the seam a test hands an integration instead of Prefect)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any], str]] = []

    def enqueue(self, job: str, parameters: Mapping[str, Any], *, key: str) -> QueuedJob:
        self.items.append((job, dict(parameters), key))
        return QueuedJob(job=job, key=key, run_id=str(len(self.items)), run_name=f"{job} {key}", state="SCHEDULED", created=True)


class Documents(Integration):
    integration = "microsoft365"


@pytest.fixture
def no_installed_queue() -> Iterator[None]:
    previous = install_job_queue(None)
    yield
    install_job_queue(previous)


# -- the integration base ------------------------------------------------------------------------------


def test_queue_job_goes_to_the_instance_queue_before_the_installed_one(no_installed_queue: None) -> None:
    installed, own = ListQueue(), ListQueue()
    install_job_queue(installed)
    documents = Documents()
    documents.queue_job("microsoft365.documents.upload", {"max_pages": 2}, key="k1")
    documents.job_queue = own
    documents.queue_job("microsoft365.documents.upload", None, key="k2")
    assert installed.items == [("microsoft365.documents.upload", {"max_pages": 2}, "k1")]
    assert own.items == [("microsoft365.documents.upload", {}, "k2")]


def test_an_integration_queues_only_its_own_jobs_with_a_key(no_installed_queue: None) -> None:
    documents = Documents()
    documents.job_queue = ListQueue()
    with pytest.raises(InvalidRequest, match="its jobs are named microsoft365"):
        documents.queue_job("sap.customers.push", key="k")
    with pytest.raises(InvalidRequest, match="non-empty idempotency key"):
        documents.queue_job("microsoft365.documents.upload", key=" ")


def test_without_a_queue_queue_job_says_so_instead_of_dropping_the_work(no_installed_queue: None) -> None:
    with pytest.raises(SyncFailed, match="no job queue is installed"):
        Documents().queue_job("microsoft365.documents.upload", key="k")


def test_the_hub_installs_the_prefect_queue_for_every_connector_it_builds() -> None:
    import hub.runtime.connections  # noqa: F401 - importing the connector factories installs it

    assert isinstance(installed_job_queue(), PrefectJobQueue)


def test_plant_and_lab_reader_implement_the_base_and_the_webhook_hook_is_gone() -> None:
    assert issubclass(PlantConnector, Integration) and PlantConnector.integration == "plant_opcua"
    assert issubclass(LabDropFolder, Integration) and LabDropFolder.integration == "lab"
    assert issubclass(Connector, Integration)
    # Webhooks are verified by the ingress (hub/ingress/security.py); the base's unused hook went.
    assert not hasattr(Connector, "handle_webhook")


def test_the_lab_reader_scans_reads_and_archives_its_folder(tmp_path: Path) -> None:
    (tmp_path / "run-1.csv").write_bytes(b"specimen_id;value\nS1;1\n")
    (tmp_path / "run-2.csv.part").write_bytes(b"half")
    folder = LabDropFolder(tmp_path, settle_s=0)
    ready, settling = folder.scan()
    assert [f.name for f in ready] == ["run-1.csv"] and settling == []
    assert folder.read(ready[0]) == b"specimen_id;value\nS1;1\n"
    archived = folder.archive(ready[0].path, "processed", "ab" * 32)
    assert archived == tmp_path / "processed" / "run-1.csv" and not ready[0].path.exists()
    assert folder.find_archived("0" * 64, "run-1.csv") is None  # another checksum is another file


# -- the job table ---------------------------------------------------------------------------------------


def test_every_job_names_a_deployment_of_prefect_yaml_whose_flow_takes_its_parameters() -> None:
    deployed = {d.name: d for d in declared_deployments()}
    for spec in JOBS.values():
        assert spec.deployment in deployed, f"{spec.name}: no deployment {spec.deployment}"
        file, _, func = deployed[spec.deployment].entrypoint.partition(":")
        flow_fn = getattr(importlib.import_module(file.removesuffix(".py").replace("/", ".")), func)
        taken = inspect.signature(flow_fn.fn).parameters
        assert set(spec.parameters) <= set(taken), f"{spec.name}: {flow_fn.name} does not take {spec.parameters}"
        # A queued job with no parameters must still run (the smoke check runs every deployment so).
        assert all(taken[name].default is not inspect.Parameter.empty for name in spec.parameters)


def test_queue_job_refuses_unknown_jobs_parameters_and_missing_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(JobNotQueued, match="no job 'sap.nothing'"):
        queue_job("sap.nothing", key="k")
    with pytest.raises(JobNotQueued, match="takes max_pages, not rows"):
        queue_job("sap.customers.push", {"rows": 5}, key="k")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(JobNotQueued, match="no Prefect server"):
        queue_job("sap.customers.push", key="k")


def test_fingerprint_is_stable_and_changes_with_any_row() -> None:
    rows = [(1, "pending", 0, "2026-12-01T00:00:00+00:00"), (2, "failed", 1, "2026-12-01T00:01:00+00:00")]
    assert fingerprint(rows) == fingerprint(list(rows))
    assert fingerprint(rows) != fingerprint([rows[0], (2, "failed", 2, "2026-12-01T00:01:00+00:00")])


def test_outbox_key_changes_when_pending_work_changes_and_ignores_done_rows(db: str) -> None:
    from hub.core.db import get_engine
    from hub.core.models import DocumentOutbox, DocumentStatus
    from hub.systems.documents import enqueue_document

    empty = outbox_key(DocumentOutbox, DocumentStatus.UPLOADED.value)
    first = enqueue_document("INV-1", "ERP/Invoices", "inv-1.pdf", content=b"%PDF-1", conflict_policy="rename")
    one = outbox_key(DocumentOutbox, DocumentStatus.UPLOADED.value)
    assert one != empty and one == outbox_key(DocumentOutbox, DocumentStatus.UPLOADED.value)
    with get_engine().begin() as conn:
        conn.execute(update(DocumentOutbox).where(DocumentOutbox.id == first).values(status=DocumentStatus.UPLOADED.value))
    assert outbox_key(DocumentOutbox, DocumentStatus.UPLOADED.value) == empty


# -- queued on the Prefect server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(prefect_harness: None) -> list[str]:
    """Every job's deployment registered on the test server, on a pool no worker polls (not the hub's: the
    worker of test_queued_jobs.py must not run these runs)."""
    from prefect.client.orchestration import get_client

    deployed = {d.name: d for d in declared_deployments()}
    with get_client(sync_client=True) as client:
        ensure_work_pool(client, "test-jobs-no-worker")
        for spec in JOBS.values():
            d = deployed[spec.deployment]
            client.create_deployment(flow_id=client.create_flow_from_name(d.flow_name), name=d.name, entrypoint=d.entrypoint,
                                     path=str(ROOT), work_pool_name="test-jobs-no-worker", concurrency_limit=d.concurrency_limit)
    return sorted(JOBS)


def _read_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)  # type: ignore[arg-type]


def test_a_queued_job_is_a_scheduled_flow_run_and_the_same_key_is_the_same_run(registered: list[str]) -> None:
    first = queue_job("hub.errors.retry", {"error_ids": [41]}, key="41/attempt-1")
    assert first.created and first.state == "SCHEDULED"
    again = queue_job("hub.errors.retry", {"error_ids": [41]}, key="41/attempt-1")
    assert (again.run_id, again.created, again.run_name) == (first.run_id, False, first.run_name)
    later = queue_job("hub.errors.retry", {"error_ids": [41]}, key="41/attempt-2")
    assert later.created and later.run_id != first.run_id
    run = _read_run(first.run_id)
    # In the UI: the deployment's run, tagged as background work, with the parameters the worker will pass.
    assert run.deployment_id is not None and run.parameters == {"error_ids": [41]}
    assert {"queued", "hub", "hub.errors.retry"} <= set(run.tags)
    assert run.state.type.value == "SCHEDULED"  # no worker polls this pool: it waits, it is not lost
    assert first.url is not None and first.url.endswith(f"/runs/flow-run/{first.run_id}")


def test_a_connector_queues_through_the_base_to_prefect(registered: list[str]) -> None:
    documents = Documents()
    documents.job_queue = PrefectJobQueue()
    queued = documents.queue_job("microsoft365.documents.upload", {"max_pages": 1}, key="outbox-1-abc")
    assert queued.created and _read_run(queued.run_id).parameters == {"max_pages": 1}


def test_a_bounded_flow_run_hands_the_rest_to_one_queued_run(registered: list[str]) -> None:
    documents = Documents()
    documents.job_queue = PrefectJobQueue()
    log = logging.getLogger("test-follow-up")
    first = follow_up(documents, "microsoft365.documents.upload", {"max_pages": 1}, "run-7", log)
    second = follow_up(documents, "microsoft365.documents.upload", {"max_pages": 1}, "run-7", log)  # the same run, retried
    assert first is not None and second is not None and second.run_id == first.run_id and not second.created


def test_a_follow_up_that_cannot_be_queued_is_logged_not_raised(no_installed_queue: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test-follow-up")
    assert follow_up(Documents(), "microsoft365.documents.upload", {}, "run-8", logging.getLogger("test-follow-up")) is None
    assert "left to the next scheduled run" in caplog.text


def test_queue_job_says_when_the_deployment_is_not_registered(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = jobs.JobSpec("sap.customers.elsewhere", "push-sap-customers", (), "a job whose deployment this server lacks")
    monkeypatch.setitem(JOBS, spec.name, spec)
    monkeypatch.setattr(jobs, "deployment_full_name", lambda _spec: "no-such-flow/no-such-deployment")
    with pytest.raises(JobNotQueued, match="is not registered"):
        queue_job(spec.name, key="k")



def test_cli_commands_queue_on_the_server_and_say_when_the_work_was_queued_before(
    registered: list[str], db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from hub.cli.main import app
    from hub.ledger.errors import get_error, record_error
    from hub.ledger.retry_units import WEBHOOK_EVENT
    from hub.runtime.jobs import retry_job_key
    from hub.systems.documents import enqueue_document

    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    error_id = record_error(ServerError("apply failed", integration="razorpay"), integration="razorpay",
                            dataset="webhook_events", unit={"kind": WEBHOOK_EVENT, "inbox_id": 5})
    runner = CliRunner()
    first = runner.invoke(app, ["errors", "retry", str(error_id), "--queue", "--json"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["errors", "retry", str(error_id), "--queue", "--json"])
    queued, repeated = json.loads(first.stdout), json.loads(again.stdout)
    assert queued["created"] and not repeated["created"] and repeated["run_id"] == queued["run_id"]
    assert queued["key"] == retry_job_key(error_id, get_error(error_id).created_at, 0)
    assert queued["key"].startswith(f"{error_id}@") and queued["key"].endswith("/attempt-1")
    assert _read_run(queued["run_id"]).parameters == {"error_ids": [error_id]}

    enqueue_document("INV-9", "ERP/Invoices", "inv-9.pdf", content=b"%PDF-9")
    upload = runner.invoke(app, ["m365", "upload", "--queue", "--json"])
    assert upload.exit_code == 0, upload.output
    assert json.loads(upload.stdout)["job"] == "microsoft365.documents.upload"
    send = runner.invoke(app, ["whatsapp", "send", "--to", "+919812345678", "--template", "order_ready", "--param", "SO-1", "--queue"])
    assert send.exit_code == 0 and "queued" in send.stdout, send.output
    [message] = _read_run(json.loads(runner.invoke(app, ["whatsapp", "send", "--to", "+919812345678", "--template", "order_ready",
                                                        "--param", "SO-1", "--queue", "--json"]).stdout)["run_id"]).parameters["messages"]
    assert message == {"to": "+919812345678", "text": None, "template": "order_ready", "lang": "en_US", "params": ["SO-1"]}

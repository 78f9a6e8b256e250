"""`drymix sap customers ...` as on-call runs it: a real process, a real database."""

from __future__ import annotations

import json
import subprocess

from hub.systems.sap_push import record_failed
from tests.hub.cli.test_cli import drymix as run_drymix

EXIT_USAGE = 2


def drymix(*args: str) -> subprocess.CompletedProcess[str]:
    return run_drymix(*args, env={"COLUMNS": "240"})


def test_queue_writes_an_outbox_row_the_list_shows(db: str) -> None:
    queued = drymix("sap", "customers", "queue", "ERP-000900", "--name", "Kaveri Cements", "--email", "buy@kaveri.in",
                    "--country", "IN", "--set", "postal_code=560001", "--set", "city=Bengaluru", "--sales-area", "1710/10/00/INR")
    assert queued.returncode == 0, queued.stderr
    listed = drymix("sap", "customers", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert len(rows) == 1
    row = rows[0]
    assert row["erp_ref"] == "ERP-000900" and row["operation"] == "create" and row["status"] == "pending"
    assert row["fields"]["name"] == "Kaveri Cements" and row["fields"]["postal_code"] == "560001" and row["fields"]["city"] == "Bengaluru"
    assert row["fields"]["sales_areas"] == [{"sales_org": "1710", "distribution_channel": "10", "division": "00", "currency": "INR"}]


def test_queue_refuses_unknown_fields_and_a_create_without_a_name(db: str) -> None:
    unknown = drymix("sap", "customers", "queue", "ERP-000901", "--name", "X", "--set", "credit_limit=5")
    assert unknown.returncode == EXIT_USAGE and "unknown customer field" in unknown.stderr
    nameless = drymix("sap", "customers", "queue", "ERP-000902", "--email", "a@b.in")
    assert nameless.returncode == EXIT_USAGE and "needs a name" in nameless.stderr


def test_requeue_puts_a_failed_row_back_with_the_chosen_values(db: str) -> None:
    assert drymix("sap", "customers", "queue", "ERP-000903", "--name", "Tunga Infra", "--set", "postal_code=5600").returncode == 0
    outbox_id = int(next(iter(json.loads(line) for line in drymix("sap", "customers", "list", "--json").stdout.splitlines()))["id"])
    record_failed(outbox_id, attempts=1, message="AM/175 Postal code '5600' must have 6 digits in country IN", error_id=None)
    requeued = drymix("sap", "customers", "requeue", str(outbox_id), "--set", "postal_code=560010")
    assert requeued.returncode == 0, requeued.stderr
    row = json.loads(drymix("sap", "customers", "list", "--json").stdout.splitlines()[0])
    assert row["status"] == "pending" and row["attempts"] == 0
    assert row["fields"]["postal_code"] == "560010" and row["fields"]["name"] == "Tunga Infra"

"""`drymix plant ...` and `drymix sandbox plant`: the OPC UA plant from the command line.

Heavy imports (asyncua, pandas, Prefect) happen inside the commands, so `drymix --help` stays instant.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.errors import where_the_failure_is

plant_app = typer.Typer(help="Plant automation over OPC UA: browse tags, read a snapshot, collect, inspect the buffer.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)
EXIT_FAILED = 1


def sandbox_plant(
    port: Annotated[int, typer.Option(help="TCP port")] = 4840,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    mixers: Annotated[int, typer.Option(help="mixers in the plant")] = 2,
    speed: Annotated[float, typer.Option(help="sandbox seconds per wall-clock second (50: a batch every ~2 s)")] = 50.0,
    secure: Annotated[bool, typer.Option("--secure", help="Basic256Sha256 SignAndEncrypt only, with a generated certificate")] = False,
    state_file: Annotated[str, typer.Option(help="batch ring and counter kept across restarts")] = "var/plant_sandbox_state.json",
    faults: Annotated[str | None, typer.Option(help='fault switches as JSON, e.g. \'{"bad_quality_ratio": 0.02, "stale_tags": ["Dryer/MoistureInPct"]}\'')] = None,
) -> None:
    """Serve the OPC UA dry-mix plant simulator until Ctrl-C."""
    from sandbox.plant import ENDPOINT_PATH, serve_plant

    security = "Basic256Sha256 SignAndEncrypt (certificate in var/plant_pki/)" if secure else "no security"
    console.print(f"plant sandbox on opc.tcp://{host}:{port}{ENDPOINT_PATH} ({mixers} mixers, x{speed}, {security})")
    serve_plant(
        host=host,
        port=port,
        mixers=mixers,
        speed=speed,
        secure=secure,
        state_file=state_file,
        faults=json.loads(faults) if faults else None,
    )


@plant_app.command("tags")
def plant_tags(as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False) -> None:
    """Browse the plant folder and list its tags (path, NodeId, unit)."""
    from hub.runtime.connections import build_plant_connector
    from hub.systems.plant import run_async

    async def _run() -> list[dict[str, str | None]]:
        async with build_plant_connector() as plant:
            return [{"tag": t.tag, "node_id": t.node_id, "unit": t.unit} for t in await plant.discover()]

    try:
        tags = run_async(_run())
    except Exception as exc:  # noqa: BLE001 - say what failed and exit non-zero
        err_console.print(f"[red]browsing the plant failed:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        for tag in tags:
            print(json.dumps(tag))
        return
    table = Table(title=f"plant tags ({len(tags)})")
    for col in ("tag", "node id", "unit"):
        table.add_column(col)
    for tag in tags:
        table.add_row(tag["tag"] or "", tag["node_id"] or "", tag["unit"] or "")
    console.print(table)


@plant_app.command("read")
def plant_read(as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False) -> None:
    """Read the status snapshot once (value, status code, source timestamp per tag); writes nothing."""
    from hub.runtime.connections import build_plant_connector
    from hub.systems.plant import run_async

    async def _run() -> list[dict[str, object]]:
        async with build_plant_connector() as plant:
            return [r.to_record() for r in await plant.read_snapshot()]

    try:
        readings = run_async(_run())
    except Exception as exc:  # noqa: BLE001 - say what failed and exit non-zero
        err_console.print(f"[red]reading the plant failed:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        for reading in readings:
            print(json.dumps(reading, default=str))
        return
    table = Table(title=f"plant snapshot ({len(readings)} tags)")
    for col in ("tag", "value", "unit", "status", "source timestamp"):
        table.add_column(col)
    for r in readings:
        table.add_row(str(r["tag"]), str(r["value"]), str(r["unit"] or ""), str(r["status_name"]), str(r["source_timestamp"] or ""))
    console.print(table)


@plant_app.command("collect")
def plant_collect(
    listen_seconds: Annotated[float, typer.Option(help="also collect data changes over a subscription for this long")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Run the collect-plant flow now: snapshot and new batch records -> buffer -> ERP."""
    from flows.collect_plant import collect_plant
    from hub.runtime.prefect_runtime import run_flow_quietly

    try:
        summary = run_flow_quietly(collect_plant, listen_seconds=listen_seconds)
    except Exception as exc:  # noqa: BLE001 - say what failed and exit non-zero
        err_console.print(f"[red]plant collection failed:[/red] {exc}")
        err_console.print(where_the_failure_is(exc, "See `drymix errors list --open --integration plant_opcua` for the recorded error."))
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        print(json.dumps(summary, default=str))
        return
    table = Table(title="plant collection")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("since", "watermark", "readings_read", "subscribed_changes", "batches_read", "buffered", "extracted",
                "valid", "quarantined", "flagged", "upserted", "unchanged", "buffer_pending", "seconds"):
        table.add_row(key, "" if summary.get(key) is None else str(summary.get(key)))
    console.print(table)


@plant_app.command("buffer")
def plant_buffer(as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
    """What waits in the local durable buffer for the database (entries by kind, oldest)."""
    from hub.core.settings import plant_opcua_config
    from hub.systems.plant import BATCH_SEQ_META, open_buffer

    buffer = open_buffer(plant_opcua_config())
    oldest = buffer.oldest_buffered_at()
    info = {
        "path": str(buffer.path),
        "pending": buffer.counts_by_kind(),
        "oldest_buffered_at": oldest.isoformat() if oldest else None,
        "last_batch_seq_buffered": buffer.get_meta(BATCH_SEQ_META),
    }
    if as_json:
        print(json.dumps(info))
        return
    console.print(info)

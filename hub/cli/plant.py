"""`drymix plant ...`, `drymix sandbox plant` and `drymix sandbox plant-vendor`: the OPC UA plant from the command line.

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


def sandbox_plant_vendor(
    layout: Annotated[str, typer.Option(help="kepware (Channel.Device.Tag, namespace KEPServerEX) or s7 (S7-1500 DataBlocksGlobal)")] = "kepware",
    port: Annotated[int | None, typer.Option(help="TCP port (default 49320 for kepware, 4841 for s7)")] = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    tags: Annotated[int, typer.Option(help="analog tags in the plain folder")] = 100,
    batches: Annotated[bool, typer.Option("--batches", help="s7 only: publish DB_Batch, the last completed batch")] = False,
    seed: Annotated[int, typer.Option(help="seed of the simulated values")] = 0,
    speed: Annotated[float, typer.Option(help="sandbox seconds per wall-clock second")] = 50.0,
) -> None:
    """Serve the plant in another vendor's shape (MaxNodesPerRead 50, at most 2 sessions) until Ctrl-C."""
    from sandbox.plant_vendor import DEFAULT_PORTS, LAYOUTS, NAMESPACE_URIS, serve_vendor_plant

    if layout not in LAYOUTS:
        err_console.print(f"[red]--layout must be one of {', '.join(LAYOUTS)}[/red]")
        raise typer.Exit(2)
    if batches and layout != "s7":
        err_console.print("[red]--batches needs --layout s7: the kepware layout has no batch records[/red]")
        raise typer.Exit(2)
    port = DEFAULT_PORTS[layout] if port is None else port
    extra = ", DB_Batch" if batches else ", no batch records"
    console.print(f"vendor plant sandbox ({layout}) on opc.tcp://{host}:{port} (namespace {NAMESPACE_URIS[layout]}, {tags} analog tags{extra})")
    serve_vendor_plant(layout=layout, host=host, port=port, tags=tags, batches=batches, seed=seed, speed=speed)


@plant_app.command("tags")
def plant_tags(
    check: Annotated[bool, typer.Option("--check", help="compare the tag map with the server: missing and unmapped tags (exit 1 when a mapped tag is missing)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False,
) -> None:
    """The site tag map resolved on the server: ERP tag, NodeId, unit, kind, sampling (and with --check, the drift)."""
    from hub.runtime.connections import build_plant_connector
    from hub.systems.plant import run_async

    async def _run() -> tuple[list[dict[str, str | None]], dict[str, object], str]:
        async with build_plant_connector() as plant:
            tags = [
                {"tag": t.tag, "node_id": t.node_id, "unit": t.unit, "equipment": t.equipment, "kind": t.kind,
                 "sampling": t.sampling if t.deadband == "none" else f"{t.sampling} ({t.deadband} {t.deadband_value:g})",
                 "browse_path": t.browse_path}
                for t in await plant.discover()
            ]
            return tags, plant.drift.as_dict(), f"{plant.tag_map.name} ({plant.tag_map.path})"

    try:
        tags, drift, map_name = run_async(_run())
    except Exception as exc:  # noqa: BLE001 - say what failed and exit non-zero
        err_console.print(f"[red]browsing the plant failed:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    missing = list(drift["missing"])  # type: ignore[call-overload]
    if as_json:
        if check:
            print(json.dumps(drift))
        else:
            for tag in tags:
                print(json.dumps(tag))
        if check and missing:
            raise typer.Exit(EXIT_FAILED)
        return
    if not check:
        table = Table(title=f"plant tags ({len(tags)}) mapped by {map_name}")
        for col in ("tag", "node id", "unit", "kind", "sampling"):
            table.add_column(col)
        for tag in tags:
            table.add_row(tag["tag"] or "", tag["node_id"] or "", tag["unit"] or "", tag["kind"] or "", tag["sampling"] or "")
        console.print(table)
        return
    _print_drift(drift, map_name, len(tags))
    if missing:
        raise typer.Exit(EXIT_FAILED)


def _print_drift(drift: dict[str, object], map_name: str, mapped: int) -> None:
    """Both lists of the check, and the unit disagreements, as tables."""
    missing = list(drift["missing"])  # type: ignore[call-overload]
    unmapped = list(drift["unmapped"])  # type: ignore[call-overload]
    units = list(drift["unit_mismatches"])  # type: ignore[call-overload]
    table = Table(title=f"tag map check: {map_name}: {mapped} mapped tags found, {len(missing)} missing, {len(unmapped)} unmapped")
    for col in ("drift", "map / server path", "detail"):
        table.add_column(col)
    for item in missing:
        table.add_row("[red]missing on the server[/red]", f"{item['mapped']} ({item['rule']})", item["reason"])
    for item in unmapped:
        table.add_row("[yellow]not in the map[/yellow]", item["path"], item["node_id"])
    for item in units:
        table.add_row("[yellow]unit differs[/yellow]", f"{item['tag']} ({item['rule']})", f"server {item['server']}, map {item['map']} (the server's is used)")
    if drift.get("batches"):
        table.add_row("[red]batch records[/red]", str(drift["batches"]), "")
    console.print(table)
    if not (missing or unmapped or units or drift.get("batches")):
        console.print("[green]the tag map and the server agree[/green]")


@plant_app.command("read")
def plant_read(as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False) -> None:
    """Read the mapped tags once (value, status code, source timestamp per tag); writes nothing."""
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
    if summary.get("batches_note"):
        console.print(f"[cyan]{summary['batches_note']}[/cyan]")
    if summary.get("drift_warning"):
        console.print(f"[yellow]warning: {summary['drift_warning']}[/yellow] (drymix plant tags --check lists it)")


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

"""Lab testing-machine exports -> ERP `lab_results`: scan the drop folder, then per export file
extract (read + parse), map, validate and load, exactly once.

One task per file (`process_lab_export`), never per row: an export is one transaction holding its
rows, its quarantined lines and its `lab_exports` ledger row (see hub/systems/lab.py), so a file either
counts as processed with everything it carried, or not at all and is read again next run. A file
that fails (database down, ...) is recorded in `integration_errors` with the file as the unit, and
the other files go on; the file stays in the drop folder, so the next run retries exactly it.
Each dropped file is read with the first instrument profile (config/lab/*.toml, `[lab] profiles`) whose name
pattern matches and whose header fits; the summary counts files per profile and files no profile fits (those
are quarantined whole with every profile's reason, never half-loaded). With a results API configured (`LAB_API_URL`), its pages since the `after` cursor are read too, by the sync
engine (tasks/engine.py `run_pull` on hub/systems/lab.py `RESULTS_API`): each page processed as an export of
its own with the cursor in the same transaction; its figures join the drop folder's in one summary.
After that, results whose batch has since reached `production_batches` get `batch_known`.

Failed units are queued for a rerun: a file (`lab.lab_results.file`) and the API read (`lab.lab_results.api`),
both declared in the registry (hub/datasets.py), so `drymix errors retry <id>` reruns them through this flow
with `resume=`: exactly that unit, the one file from the drop folder or the API from its committed cursor,
and nothing else. The run logic every flow shares (error rows, the rerun's `UnitFailed`, Data Docs, the
validation-failure row, resolving earlier errors, the summary artifact) is the engine's (tasks/engine.py `DatasetRun`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from connectors.core.debug import DebugLog
from connectors.core.errors import ErrorCategory, InvalidRequest, SyncFailed
from connectors.lab.exports import DropFile, LabDropFolder
from connectors.lab.profiles import ProfileError
from hub.core.db import get_engine
from hub.core.models import IntegrationErrorRow
from hub.core.settings import LabConfig, debug_log_path, lab_config
from hub.ledger.loading import read_cursor
from hub.ledger.retry_units import LAB_EXPORT_FILE, LAB_RESULTS_API, UnitFailed
from hub.systems.lab import (
    DATASET,
    INTEGRATION,
    REFUSED_BY,
    RESULTS_API,
    api_quarantine_sample,
    process_export,
    processed_under_name,
    refresh_batch_flags,
    site_profiles,
)
from tasks.engine import SAMPLE_SIZE, DatasetRun, run_pull
from tasks.retry import retry_transient_only
from tasks.streams import ALL_BUT_VALIDATION

ARCHIVE_FOR = {"processed": "processed", "duplicate": "duplicates", "rejected": "rejected"}


@dataclass
class CollectSummary:
    """What a run did; published as a Prefect table artifact and printed by `drymix lab collect`."""

    integration: str = INTEGRATION
    dataset: str = DATASET
    mode: str = "drop-folder"
    flow_run_id: str | None = None
    drop_dir: str | None = None
    files_ready: int = 0
    files_settling: int = 0
    exports_processed: int = 0
    exports_rejected: int = 0
    duplicates_skipped: int = 0
    files_by_profile: dict[str, int] = field(default_factory=dict)  # instrument profile -> files it read this run
    files_unmatched: int = 0  # files no profile fits: quarantined whole (rejected/)
    files_failed: int = 0
    api_pages: int = 0
    extracted: int = 0
    valid: int = 0
    quarantined: int = 0
    upserted: int = 0
    unchanged: int = 0
    batch_unknown: int = 0
    batch_flags_set: int = 0
    retries: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    error_ids: list[int] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@task(
    name="process_lab_export",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=1,
    retry_delay_seconds=[2.0],
    retry_condition_fn=retry_transient_only,
    task_run_name="lab-export-{found.path.name}",
)
def process_lab_export(found: DropFile, config: LabConfig, run_id: str | None) -> dict[str, Any]:
    """Read one settled export, load it in one transaction, then archive the file."""
    folder = LabDropFolder(config.drop_dir, settle_s=config.settle_s)
    content = folder.read(found)
    if content is None:
        return {"name": found.name, "status": "settling"}  # it changed since the scan: still being written
    mtime = datetime.fromtimestamp(found.mtime_ns / 1e9, UTC)
    outcome = process_export(content, found.name, engine=get_engine(), config=config, run_id=run_id, file_mtime=mtime)
    result = outcome.as_dict()
    if config.archive:
        try:
            result["archived_to"] = str(folder.archive(found.path, ARCHIVE_FOR[outcome.status], outcome.sha256))
        except OSError as exc:
            # The ledger already marks the content processed: the next scan skips it by checksum.
            logging.getLogger(__name__).warning("could not move %s to the archive: %s", found.path, exc)
    return result


@flow(name="collect-lab-results", description="Lab testing-machine exports (drop folder) into the ERP lab_results table.")
def collect_lab_results(
    drop_dir: str | None = None, settle_s: float | None = None, max_files: int | None = None, resume: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Process every settled export in the drop folder once; quarantine what cannot be trusted. With `resume`,
    only the failed unit: one file, or the results API."""
    run = DatasetRun(INTEGRATION, DATASET, "collect-lab-results", resume=resume)
    logger = run.logger
    config = lab_config()
    updates: dict[str, Any] = {}
    if drop_dir is not None:
        updates["drop_dir"] = Path(drop_dir)
    if settle_s is not None:
        updates["settle_s"] = settle_s
    if resume is not None and resume.get("drop_dir"):
        updates["drop_dir"] = Path(resume["drop_dir"])  # the folder the failed run read
    if resume is not None and resume.get("api"):
        updates["api_url"] = resume["api"]
    config = config.model_copy(update=updates)
    run_id = run.run_id
    summary = CollectSummary(flow_run_id=run_id, drop_dir=str(config.drop_dir))
    kind = resume.get("kind") if resume is not None else None
    if resume is not None:
        summary.mode = f"rerun of integration_errors #{resume.get('error_id')}"
        logger.info("lab: %s: %s", summary.mode, f"the export {resume.get('file')}" if kind == LAB_EXPORT_FILE else "the results API")

    # --- extract: which exports are complete, and the profiles that read them -----------------
    ready: list[DropFile] = []
    if kind in (None, LAB_EXPORT_FILE):
        try:
            profiles = site_profiles(config)
        except ProfileError as exc:  # a site's profile file is wrong: no file is read until it is fixed
            run.fail(InvalidRequest(f"lab instrument profiles are invalid:\n{exc}", code="LAB_PROFILES_INVALID"), operation="load_profiles")
        logger.info("instrument profiles, in the order tried: %s", ", ".join(p.name for p in profiles) or "none")
        ready, settling = LabDropFolder(config.drop_dir, settle_s=config.settle_s).scan()
        if resume is not None:
            ready = _resumed_file(run, resume, ready, settling, config)
            settling = []
        summary.files_ready, summary.files_settling = len(ready), len(settling)
        if settling:
            logger.info("%d file(s) still being written (changed in the last %.0f s): next run", len(settling), config.settle_s)
    limit = max_files or config.max_files_per_run
    debug_path = debug_log_path(INTEGRATION)
    debug = DebugLog(debug_path) if debug_path is not None else None  # debug mode for the lab only: every pickup

    # --- per export: parse, map, validate, load (one transaction each) -----------------------
    for found in ready[:limit]:
        try:
            result = process_lab_export(found, config, run_id)
        except Exception as exc:  # noqa: BLE001 - one failed file must not stop the others (a rerun of it fails)
            if debug is not None:
                _debug_pickup(debug, found, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
            unit = {"kind": LAB_EXPORT_FILE, "file": found.name, "size": found.size, "drop_dir": str(config.drop_dir)}
            # Its retry count (the engine's): the file task's Prefect retry and any HTTP retries of the run (lab API).
            summary.error_ids.append(run.unit_failed(exc, operation="process_export", what=f"lab export {found.name}", unit=unit,
                                                     max_retries=1, then="the file stays and is retried next run"))
            summary.files_failed += 1
            continue
        if debug is not None:
            _debug_pickup(debug, found, result)
        status = result["status"]
        if status == "settling":
            if resume is not None:
                run.fail(SyncFailed(f"{found.name} changed while it was read: it is still being written", code="EXPORT_SETTLING"),
                         operation="process_export")
            summary.files_settling += 1
            continue
        summary.exports.append({k: result.get(k) for k in ("name", "sha256", "status", "profile", "rows_total", "valid", "quarantined", "written", "reason")})
        if status == "duplicate":
            summary.duplicates_skipped += 1
            logger.info("%s: same content as an export already processed, skipped", found.name)
            continue
        summary.exports_processed += status == "processed"
        summary.exports_rejected += status == "rejected"
        if result.get("profile"):
            summary.files_by_profile[result["profile"]] = summary.files_by_profile.get(result["profile"], 0) + 1
        summary.files_unmatched += bool(result.get("unmatched"))
        _count(run, summary, result)
        logger.info(
            "%s: %s%s, %d rows, %d loaded (%d new or changed), %d quarantined%s",
            found.name, status, f" by profile {result['profile']}" if result.get("profile") else "", result["rows_total"], result["valid"],
            result["written"], result["quarantined"], f" ({result['reason']})" if result.get("reason") else "",
        )
    if summary.files_unmatched:
        logger.warning("%d file(s) matched no instrument profile: quarantined whole, moved to %s/rejected (`drymix lab check <file>`)",
                       summary.files_unmatched, config.drop_dir)

    if config.api_url and kind in (None, LAB_RESULTS_API):
        _collect_api(run, summary, config, resume)

    # --- batches that arrived since: flag their results ----------------------------------------
    with get_engine().begin() as conn:
        summary.batch_flags_set = refresh_batch_flags(conn)

    outcome = run.finish(
        summary,
        rows_checked=summary.extracted + summary.exports_rejected,
        report=bool(summary.exports_processed or summary.api_pages),
        resolve=ALL_BUT_VALIDATION if not summary.files_failed and resume is None else (),
        note=f"a later run ({run_id}) processed the drop folder",
    )
    if summary.files_failed:
        raise SyncFailed(
            f"{summary.files_failed} lab export(s) failed and stay in {config.drop_dir} for the next run "
            f"(integration_errors {summary.error_ids})",
            code="LAB_EXPORTS_FAILED",
            operation="collect_lab_results",
        )
    return outcome


def _debug_pickup(debug: DebugLog, found: DropFile, result: dict[str, Any]) -> None:
    """Debug mode: one entry per export picked up: where, how big, what became of it and which profile read it."""
    debug.event(INTEGRATION, "lab_file", {
        "path": str(found.path), "size": found.size, "mtime": datetime.fromtimestamp(found.mtime_ns / 1e9, UTC).isoformat(),
        "status": result.get("status"), "profile": result.get("profile"), "unmatched": bool(result.get("unmatched")),
        "sha256": result.get("sha256"), "rows": result.get("rows_total"), "reason": result.get("reason"), "error": result.get("error"),
    })


def _resumed_file(run: DatasetRun, resume: dict[str, Any], ready: list[DropFile], settling: list[DropFile], config: LabConfig) -> list[DropFile]:
    """The failed export, if it still waits in the drop folder; [] when a later run already processed it."""
    name = str(resume["file"])
    if any(f.name == name for f in settling):
        run.fail(SyncFailed(f"{name} is being written again (changed in the last {config.settle_s:.0f} s): retried later",
                            code="EXPORT_SETTLING"), operation="process_export")
    found = [f for f in ready if f.name == name]
    if found:
        return found
    with get_engine().connect() as conn:
        done = processed_under_name(conn, name)
    if not done:
        run.fail(InvalidRequest(
            f"{name} is no longer in {config.drop_dir} and no export of that name was processed: it was moved or deleted "
            "by hand; drop it again (it is then processed once) or resolve this error",
            code="EXPORT_GONE",
        ), operation="process_export")
    return []  # a later run processed it (and archived it): nothing left to do


def _collect_api(run: DatasetRun, summary: CollectSummary, config: LabConfig, resume: dict[str, Any] | None) -> None:
    """The results API on the sync engine; its figures join the run's. A failed read is the engine's one error row
    (its unit reruns the API read); the drop folder's work stands and the run fails at the end."""
    if resume is not None:
        # Each page committed with its cursor: the rerun reads on from the committed one, whatever the unit recorded.
        with get_engine().connect() as conn:
            resume = {**resume, "position": None, "cursor": read_cursor(conn, INTEGRATION, DATASET)}
    try:
        api = run_pull(RESULTS_API, resume=resume, api_url=config.api_url)
    except UnitFailed:
        raise
    except Exception:  # noqa: BLE001 - recorded by run_pull like a failed file; the cursor stays at the last committed page
        summary.files_failed += 1
        with get_engine().connect() as conn:
            summary.error_ids += [i for i in _error_ids(conn, run.run_id) if i not in summary.error_ids]
        return
    summary.api_pages += api.get("api_pages", 0)
    summary.extracted += api.get("rows_total", 0)
    summary.valid += api.get("rows_loaded", 0)
    summary.quarantined += api.get("rows_quarantined", 0)
    summary.upserted += api.get("rows_written", 0)
    summary.unchanged += api.get("rows_unchanged", 0)
    summary.batch_unknown += api.get("batch_unknown", 0)
    for key, n in api.items():
        if key.startswith(REFUSED_BY):
            name = key.removeprefix(REFUSED_BY)
            run.failures[name] = run.failures.get(name, 0) + n
    if api.get("rows_quarantined"):
        with get_engine().connect() as conn:
            run.sample.extend(api_quarantine_sample(conn, run.run_id, SAMPLE_SIZE - len(run.sample)))


def _error_ids(conn: Any, run_id: str | None) -> list[int]:
    """The error rows this run recorded (the engine's row for a failed API read among them)."""
    query = select(IntegrationErrorRow.id).where(
        IntegrationErrorRow.integration == INTEGRATION, IntegrationErrorRow.flow_run_id == run_id,
        IntegrationErrorRow.error_type != ErrorCategory.DATA_VALIDATION_FAILED.value,
    )
    return list(conn.execute(query).scalars()) if run_id else []


def _count(run: DatasetRun, summary: CollectSummary, result: dict[str, Any]) -> None:
    summary.extracted += result["rows_total"]
    summary.valid += result["valid"]
    summary.quarantined += result["quarantined"]
    summary.upserted += result["written"]
    summary.unchanged += result["unchanged"]
    summary.batch_unknown += result["batch_unknown"]
    for name, count in result["failures_by_expectation"].items():
        run.failures[name] = run.failures.get(name, 0) + count
    run.sample.extend(result["sample"][: max(0, SAMPLE_SIZE - len(run.sample))])

"""Benchmark part: read, map, validate and load a 1,000-row lab export into DATABASE_URL (plan: under 1 s).

Imported by bench/plant_lab.py (`lab_1000_rows_seconds()`); also runnable on its own:

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test .venv/bin/python bench/_lab.py

What is timed is `hub.systems.lab.process_export` on the bytes of a sandbox export: checksum and ledger
lookup, CSV parsing, the pandas mapping, the Great Expectations suite (through expectations/runner.py)
and the one-transaction load of rows + ledger row. Not timed: the one-off warm-up (importing GX and
building its context, about 3-5 s per process) and the scheduler around it (Prefect's task run costs
~10 ms per file). Each measured export has fresh specimen ids, so every row is a real insert; the
median of `repeats` runs is returned. The bench rows are deleted afterwards. The baseline in the same
run is the floor of the same work without validation: pandas.read_csv of the bytes plus the same upsert.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = 1000
_PREFIX = "B-BENCH"


def _export(rows: int, token: str) -> bytes:
    from sandbox.lab import LabMachine, render_export

    machine = LabMachine(seed=17)
    batch_ids = [f"{_PREFIX}{token}-{i:04d}" for i in range(-(-rows // 9))]
    return render_export(machine.records_for_rows(rows, batch_ids=batch_ids))


def _cleanup() -> None:
    from sqlalchemy import delete

    from hub.core.db import get_engine
    from hub.core.models import LabExport, LabResult

    with get_engine().begin() as conn:
        conn.execute(delete(LabResult).where(LabResult.batch_id.like(f"{_PREFIX}%")))
        conn.execute(delete(LabExport).where(LabExport.file_name.like("bench-%")))


def _run(rows: int, repeats: int) -> dict[str, Any]:
    from hub.core.db import get_engine, upgrade
    from hub.core.settings import lab_config
    from hub.systems.lab import process_export

    upgrade()
    engine = get_engine()
    config = lab_config()
    try:
        process_export(_export(50, uuid.uuid4().hex[:8]), "bench-warmup.csv", engine=engine, config=config)
        times: list[float] = []
        stages: list[dict[str, float]] = []
        baseline: list[float] = []
        for i in range(repeats):
            content = _export(rows, uuid.uuid4().hex[:8])
            started = time.perf_counter()
            outcome = process_export(content, f"bench-{i}.csv", engine=engine, config=config)
            times.append(time.perf_counter() - started)
            if (outcome.status, outcome.valid, outcome.written) != ("processed", rows, rows):
                raise RuntimeError(f"bench export not fully loaded: {outcome.as_dict()}")
            stages.append(outcome.stage_seconds)
            baseline.append(_baseline(_export(rows, uuid.uuid4().hex[:8])))
    finally:
        _cleanup()
    median = statistics.median(times)
    return {
        "lab_1000_rows_s": round(median, 3),
        "rows": rows,
        "runs_s": [round(t, 3) for t in times],
        "stage_s": {k: round(statistics.median(s[k] for s in stages), 4) for k in stages[0]},
        "baseline_read_csv_and_upsert_s": round(statistics.median(baseline), 3),
        "database": engine.dialect.name,
    }


def _baseline(content: bytes) -> float:
    """pandas.read_csv + the same upsert, no mapping or validation: the floor of this work."""
    import io
    from typing import cast

    import pandas as pd
    from sqlalchemy import Table

    from hub.core.db import get_engine
    from hub.core.models import LabResult
    from hub.ledger.loading import upsert_rows

    started = time.perf_counter()
    frame = pd.read_csv(io.BytesIO(content))
    frame["tested_at"] = pd.to_datetime(frame["tested_at"], utc=True)
    frame = frame.assign(batch_known=False, export_sha256="0" * 64, row_hash="baseline", source_line=range(2, len(frame) + 2))
    with get_engine().begin() as conn:
        upsert_rows(conn, cast(Table, LabResult.__table__), frame, ["specimen_id"])
    return time.perf_counter() - started


def lab_1000_rows_seconds(repeats: int = 3) -> float:
    """Median seconds to read + map + validate + load a 1,000-row export into DATABASE_URL (warm process)."""
    return float(_run(ROWS, repeats)["lab_1000_rows_s"])


def main() -> int:
    result = _run(ROWS, 3)
    print(f"1,000-row lab export: {result['lab_1000_rows_s']} s (median of {result['runs_s']}), stages {result['stage_s']}, "
          f"baseline read_csv + upsert {result['baseline_read_csv_and_upsert_s']} s, on {result['database']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: SAP customer sync of 100,000 partners over real HTTP into PostgreSQL, against the source's own
speed (a pull-only client) and a COPY floor.

Run: DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test .venv/bin/python bench/sap_sync.py

1. The SAP sandbox is served over real HTTP by a separate process (as SAP would be).
2. A child process runs the real flow (`sync_sap_customers`, full refresh) into an empty `customers`
   table and reports its seconds, CPU and peak RSS. The run reads in an extract process of its own
   (tasks/extract_process.py, `[sap] extract_process = true`): `cpu_seconds` is the run's process's CPU,
   `cpu_seconds_extract` the extract process's, `peak_rss_mb` the run's process's peak and `peak_rss_mb_extract`
   the extract process's (which counts the pages it shares with its parent since the fork); `peak_pss_mb`, the
   largest sum of both processes' PSS sampled every 0.1 s, is what they hold together. As a deployment's run on a worker does, it reports to a
   Prefect server, which the bench starts as its own process (`prefect server start`, a temporary database);
   a warm-up flow runs first. `--ephemeral` runs it under Prefect's temporary server instead, as `drymix sync`
   without PREFECT_API_URL does: that process also imports the server's modules (~65 MB more before the first
   page; `rss_before_mb` shows the base either way). With `--large` it runs again at 1,000,000 partners (not in CI: the
   simulator keeps its partners in memory, ~4.8 GB at 1M, and the whole bench then takes ~4 minutes) to show
   that peak memory does not grow with the number of partners (`peak_rss_mb_large` against `peak_rss_mb`).
3. The ceiling: a pull-only client, in a fresh process, reads the same simulator (the 100k run's sandbox)
   with what the sync asks for: the CUSTOMERS dataset's `$select` and `$expand`, the same page size,
   keyset pages built by the connector's own `first_url` and paginator, bodies parsed with orjson as the
   connector parses them, the cyclic garbage collector paused around each parse as the connector pauses it
   (without that pause, collections walking each page's ~400,000 new containers made this client ~30 %
   slower than the connector's own reads: the ceiling stood too low before 2026-12-05). It keeps nothing,
   maps nothing and skips the connector's rate budget and metrics: `ratio_to_pull` is the sync's
   partners/s over this client's.
4. The floor: the same rows, read back from `customers`, loaded straight with psycopg COPY into a
   staging table plus `INSERT ... ON CONFLICT` into an empty `customers`.
5. Scale-out: the same full sync split into `--partitions` key ranges (default 2) run by the engine's
   process-based task runner (tasks/partitions.py), into an empty table: `rows_per_s_partitioned`.
   On this 2-core machine the simulator takes one core, so it shows the mechanism and its overhead more
   than the gain a cluster gives (docs/scaling.md).
Page size and pages per batch default to the SAP integration's (config/integrations.toml), as a scheduled
sync reads. `stage_seconds` is the sync's own per-stage clock (tasks/engine.py `RunSummary.timed`): the
extract runs beside the other stages, so `extract_wait` is only the time the run waited for a batch, and a stage's
clock also holds the time it waited for the GIL while the other thread ran. `stage_cpu_seconds` is each stage's own
CPU (the thread's `time.thread_time()`), `cpu_seconds` the whole sync process's during the run: `validate_share` is
the validate clock over the run's seconds, `validate_cpu_share` validation's CPU over the process's.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sandbox(partners: int, page_size: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "sandbox",
            "sap",
            "--port",
            str(port),
            "--partners",
            str(partners),
            "--page-size",
            str(page_size),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/_sandbox/faults", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the SAP sandbox did not start")


def start_prefect_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server in its own process, with a temporary database, as the workers of a deployment report to."""
    import httpx

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            healthy = httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            healthy = False  # not listening yet
        if healthy:
            return proc, url
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the Prefect server did not start")


def reset_tables() -> None:
    from hub.core.db import get_engine, upgrade

    upgrade()
    with get_engine().begin() as conn:
        conn.exec_driver_sql("TRUNCATE customers, quarantined_records, sync_state, integration_errors CASCADE")


def child(page_size: int, batch_pages: int, partitions: int = 1) -> None:
    """Runs inside a fresh process: warm Prefect up, then time the real flow."""
    from prefect import flow

    import hub.runtime.prefect_runtime  # noqa: F401 - Prefect environment defaults before Prefect loads
    from flows.sync_sap_customers import sync_sap_customers
    from hub.runtime.prefect_runtime import install_log_filters

    install_log_filters()

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    warm_up()
    # The runner imports Great Expectations lazily: its ~4 s import falls in the first batch's validate
    # stage, as in a scheduled run's fresh process (docs/performance.md).
    from expectations.runner import validate_frame  # noqa: F401

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with PssPeak() as pss:
        summary = sync_sap_customers(full_refresh=True, page_size=page_size, batch_pages=batch_pages, partitions=partitions)
    seconds = time.perf_counter() - started
    after, after_children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    cpu_children = after_children.ru_utime + after_children.ru_stime - children.ru_utime - children.ru_stime
    peak = after.ru_maxrss / 1024
    workers = after_children.ru_maxrss / 1024  # the extract process, or the largest partition process
    print(json.dumps({"summary": summary, "seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": rss_before,
                      "peak_rss_mb_worker": workers, "cpu_seconds": cpu_seconds, "cpu_seconds_children": cpu_children,
                      "peak_pss_mb": pss.peak_mb}))


class PssPeak:
    """The largest sum of PSS of this process and the processes forked from it, sampled every 0.1 s while the block runs.

    With the run's extract process (tasks/extract_process.py) the sync is two processes, and the child's RSS
    counts the pages it shares with its parent since the fork: RSS summed would count them twice. PSS
    (/proc/<pid>/smaps_rollup) gives each shared page to its processes in equal parts, so the sum is what the
    run's processes hold together. A peak shorter than the interval can be missed.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        import threading

        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pss-peak", daemon=True)

    def __enter__(self) -> PssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _forked(pid: int, cmdline: bytes) -> list[int]:
        """`pid` and the processes forked from it (same command line): not a process it started afresh, such as
        the temporary Prefect server of `--ephemeral`, which is Prefect's, not the sync's."""
        found = [pid]
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                for child in task.read_text().split():
                    if Path(f"/proc/{child}/cmdline").read_bytes() == cmdline:
                        found.extend(PssPeak._forked(int(child), cmdline))
            except OSError:
                continue  # the thread or process ended meanwhile
        return found

    def _sample(self) -> None:
        cmdline = Path("/proc/self/cmdline").read_bytes()
        while not self._stop.wait(self.interval_s):
            total = 0
            for pid in self._forked(os.getpid(), cmdline):
                try:
                    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
                except OSError:
                    continue
                total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
            self.peak_mb = max(self.peak_mb, total / 1024)


def pull_child(page_size: int) -> None:
    """Runs inside a fresh process: read every page the sync would read, parse it, keep nothing."""
    import orjson

    from connectors.core.gcpause import paused_gc
    from connectors.core.paging import PagePosition, dig
    from hub.runtime.connections import build_sap_connector
    from hub.systems.sap import CUSTOMERS

    stream = CUSTOMERS.stream
    connector = build_sap_connector(page_size=page_size)
    http = connector.client.http  # the connector's pooled client (basic auth, base URL), without budget or metrics
    try:
        position: PagePosition | None = connector.start(stream, None)  # a full read: the first URL and keyset state as the sync's
        rows = pages = 0
        started = time.perf_counter()
        while position is not None:
            response = http.get(position.url)
            response.raise_for_status()
            with paused_gc():  # as the connector parses a body (connectors/core/client.py `get_json`)
                body = orjson.loads(response.content)
            records = dig(body, stream.record_path)
            if not isinstance(records, list):
                raise SystemExit(f"page {pages + 1} has no record list at {'/'.join(stream.record_path)}")
            rows += len(records)
            pages += 1
            position = stream.paginator.next_position(position, body, records)
        seconds = time.perf_counter() - started
    finally:
        connector.close()
    print(json.dumps({"rows": rows, "pages": pages, "seconds": seconds}))


PREFECT_API: dict[str, str] = {}  # PREFECT_API_URL of the bench's Prefect server; empty with --ephemeral


def child_env(base: str) -> dict[str, str]:
    env = {**os.environ, **PREFECT_API}
    env["SAP_BASE_URL"] = f"{base}/sap/opu/odata/sap/API_BUSINESS_PARTNER/"
    env["SAP_USERNAME"] = "DRYMIX_INT"
    env["SAP_PASSWORD"] = "sandbox-secret"
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    return env


def run_child(args: list[str], base: str, what: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], cwd=ROOT, env=child_env(base), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"the {what} failed (exit {out.returncode})")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_sync(partners: int, page_size: int, batch_pages: int, *, pull: bool = False, partitions: int = 0) -> dict:
    """The sync in a fresh process against a fresh sandbox; with `pull`, then the pull-only client on the same one;
    then the COPY floor of what it loaded; with `partitions`, then the partitioned sync on the same sandbox."""
    proc, base = start_sandbox(partners, page_size)
    sync = ["--child", "--page-size", str(page_size), "--batch-pages", str(batch_pages)]
    try:
        reset_tables()
        result = run_child([*sync, "--partitions", "0"], base, "sync")
        if pull:
            result["pull"] = run_child(["--pull-child", "--page-size", str(page_size)], base, "pull-only read")
            result["floor"] = floor()
        if partitions > 1:
            reset_tables()
            result["partitioned"] = run_child([*sync, "--partitions", str(partitions)], base, "partitioned sync")
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def floor() -> tuple[int, float]:
    """COPY into staging + INSERT ... ON CONFLICT of the rows the sync loaded, into an empty table."""
    import psycopg

    from hub.core.settings import get_settings

    url = get_settings().database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM customers")
            columns = [d.name for d in cur.description or []]
            rows = cur.fetchall()
            cur.execute("TRUNCATE customers")
        conn.commit()
        cols = ", ".join(f'"{c}"' for c in columns)
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c != "customer_id")
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE floor_stage (LIKE customers INCLUDING DEFAULTS) ON COMMIT DROP")
            with cur.copy(f"COPY floor_stage ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO customers ({cols}) SELECT {cols} FROM floor_stage "
                f"ON CONFLICT (customer_id) DO UPDATE SET {updates}"
            )
        conn.commit()
        return len(rows), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pull-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--partners", type=int, default=100_000)
    parser.add_argument("--large", action="store_true", help="also sync 1,000,000 partners: peak_rss_mb_large (not in CI: ~4 minutes, the simulator holds ~4.8 GB)")
    parser.add_argument("--partitions", type=int, default=2, help="key ranges of the partitioned run (0: no partitioned run)")
    parser.add_argument("--page-size", type=int, default=None, help="$top per request (default: the SAP integration's)")
    parser.add_argument("--batch-pages", type=int, default=None, help="pages per batch (default: the SAP integration's)")
    parser.add_argument("--ephemeral", action="store_true",
                        help="run the syncs under Prefect's temporary server instead of a Prefect server process")
    args = parser.parse_args()
    if args.child:
        child(args.page_size, args.batch_pages, args.partitions if args.partitions > 1 else 1)
        return
    if args.pull_child:
        pull_child(args.page_size)
        return

    from hub.core.settings import get_settings, integration_config

    if not get_settings().is_postgres:
        raise SystemExit("set DATABASE_URL=postgresql+psycopg://... : the benchmark measures PostgreSQL loads")
    config = integration_config("sap")
    args.page_size = args.page_size or config.page_size
    args.batch_pages = args.batch_pages or config.batch_pages

    server = None
    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as home:
        if not args.ephemeral:
            server, PREFECT_API["PREFECT_API_URL"] = start_prefect_server(Path(home))
        try:
            big = run_sync(args.partners, args.page_size, args.batch_pages, pull=True, partitions=args.partitions)
            large = run_sync(1_000_000, args.page_size, args.batch_pages) if args.large else None
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    loaded, floor_seconds = big["floor"]
    rows = int(big["summary"]["extracted"])
    rows_per_s = rows / big["seconds"]
    pull = big["pull"]
    if pull["rows"] != rows:
        raise SystemExit(f"the pull-only client read {pull['rows']} partners, the sync {rows}: not the same read")
    pull_rows_per_s = pull["rows"] / pull["seconds"]
    floor_rows_per_s = loaded / floor_seconds
    stages = {name: round(float(s), 3) for name, s in big["summary"]["stage_seconds"].items()}
    stage_cpu = {name: round(float(s), 3) for name, s in big["summary"]["stage_cpu_seconds"].items()}
    cpu_seconds = float(big["cpu_seconds"])
    cpu_extract = float(big["cpu_seconds_children"])  # the run's extract process (tasks/extract_process.py), if any
    print(
        f"sync: {rows} partners in {big['seconds']:.2f}s ({rows_per_s:,.0f} rows/s), "
        f"{big['summary']['valid']} loaded, {big['summary']['quarantined']} quarantined; "
        f"pull-only: {pull['pages']} pages in {pull['seconds']:.2f}s ({pull_rows_per_s:,.0f} rows/s); "
        f"floor: {loaded} rows in {floor_seconds:.2f}s ({floor_rows_per_s:,.0f} rows/s)"
    )
    print("stages: " + ", ".join(f"{name} {s:.2f}s" for name, s in stages.items()))
    print(f"stage CPU: {', '.join(f'{name} {s:.2f}s' for name, s in stage_cpu.items())} of {cpu_seconds + cpu_extract:.2f}s "
          f"the sync used ({cpu_seconds:.2f}s in the run's process, {cpu_extract:.2f}s in its extract process)")
    figures: dict = {}
    if "partitioned" in big:
        parted = big["partitioned"]
        if int(parted["summary"]["extracted"]) != rows:
            raise SystemExit(f"the partitioned sync read {parted['summary']['extracted']} partners, the sync {rows}")
        figures |= {
            "partitions": int(parted["summary"]["partitions"]),
            "rows_per_s_partitioned": round(rows / parted["seconds"], 1),
            "ratio_to_pull_partitioned": round(rows / parted["seconds"] / pull_rows_per_s, 3),
            "peak_rss_mb_partition_worker": round(parted["peak_rss_mb_worker"], 1),
        }
        print(f"partitioned: {figures['partitions']} partitions, {rows} partners in {parted['seconds']:.2f}s "
              f"({figures['rows_per_s_partitioned']:,.0f} rows/s)")
    if large is not None:
        figures |= {
            "rows_large": int(large["summary"]["extracted"]),
            "rows_per_s_large": round(int(large["summary"]["extracted"]) / large["seconds"], 1),
            "peak_rss_mb_large": round(large["peak_rss_mb"], 1),
            "ratio_rss_large": round(large["peak_rss_mb"] / big["peak_rss_mb"], 3),
            "peak_pss_mb_large": round(large["peak_pss_mb"], 1),
            "ratio_pss_large": round(large["peak_pss_mb"] / big["peak_pss_mb"], 3),
        }
    print(f"peak RSS: {big['peak_rss_mb']:.0f} MB at {args.partners} partners"
          + (f", {large['peak_rss_mb']:.0f} MB at 1,000,000" if large is not None else ""))
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": round(big["seconds"], 3),
                "rows_per_s": round(rows_per_s, 1),
                "pull_rows_per_s": round(pull_rows_per_s, 1),
                "ratio_to_pull": round(rows_per_s / pull_rows_per_s, 3),
                "stage_seconds": stages,
                "stage_cpu_seconds": stage_cpu,
                "cpu_seconds": round(cpu_seconds, 3),
                "cpu_seconds_extract": round(cpu_extract, 3),
                "validate_share": round(stages.get("validate", 0.0) / big["seconds"], 3),
                "validate_cpu_share": round(stage_cpu.get("validate", 0.0) / (cpu_seconds + cpu_extract), 3),
                "floor_rows_per_s": round(floor_rows_per_s, 1),
                "ratio_to_floor": round(rows_per_s / floor_rows_per_s, 3),
                "peak_rss_mb": round(big["peak_rss_mb"], 1),
                "peak_rss_mb_extract": round(big["peak_rss_mb_worker"], 1) if cpu_extract else None,
                "peak_pss_mb": round(big["peak_pss_mb"], 1),
                "rss_before_mb": round(big["rss_before_mb"], 1),
                "run_rss_mb": round(big["peak_rss_mb"] - big["rss_before_mb"], 1),  # what the run added to the base
                "prefect_api": "temporary server" if args.ephemeral else "server",
                **figures,
                "meets": {
                    "ratio_to_pull": rows_per_s / pull_rows_per_s >= 0.5,
                    "peak_rss_mb": big["peak_rss_mb"] <= 400,
                    "peak_pss_mb": big["peak_pss_mb"] <= 400,
                    "validate_share": stages.get("validate", 0.0) <= 0.35 * big["seconds"],
                    "validate_cpu_share": stage_cpu.get("validate", 0.0) <= 0.35 * (cpu_seconds + cpu_extract),
                    **({"peak_rss_mb_large": large["peak_rss_mb"] <= 1.2 * big["peak_rss_mb"]} if large is not None else {}),
                },
                "page_size": args.page_size,
                "batch_pages": args.batch_pages,
            }
        )
    )


if __name__ == "__main__":
    main()

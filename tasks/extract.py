"""Generic extract task: a batch of pages from any connector stream, resumable from its position.

A mapped dataset's pages are mapped as they arrive (`read_batch(..., mapper=...)`): the decoded OData
records of a page (9.5 KB a partner as Python dicts, 1.4 KB mapped) live only until their page is mapped.
What a batch keeps of each record is its mapped rows, its key and its source bytes (orjson, packed and
compressed per page: `RawRecords`), the last only for the rows validation or the database will refuse (their
quarantine row holds the record as the source sent it) and to tell a record served twice to the letter.
Memory then depends on the batch's size, not on the number of records read (docs/performance.md).
"""

from __future__ import annotations

import contextvars
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lz4.block
import orjson
from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.core.base import Connector, Stream
from connectors.core.gcpause import paused_gc
from connectors.core.paging import Page, PagePosition
from tasks.retry import retry_transient_only

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tasks.extract_process import ExtractProcess

Mapper = Callable[[list[dict[str, Any]]], "pd.DataFrame"]


@dataclass
class PackedPage:
    """One page's source bytes as `RawRecords` keeps them: an LZ4 block and each record's end offset in it."""

    blob: bytes
    ends: np.ndarray


@dataclass
class MappedPage:
    """One page read and mapped, before its place in a batch is known (`ExtractedBatch.add_page` gives it one)."""

    frame: pd.DataFrame
    keys: list[str | None]
    raw: PackedPage
    next: PagePosition | None  # where the read goes on (None at the end)
    end_cursor: dict[str, Any] | None
    seconds: float
    cpu_seconds: float

    @property
    def read(self) -> int:
        return len(self.keys)


class RawRecords:
    """Each record's source bytes by position in the batch, packed in one compressed blob per page.

    orjson hands each `dumps` result back in a buffer of about twice its length (8 KB for a 3.2 KB partner,
    measured with tracemalloc): kept one by one, two batches of 10,000 partners held 146 MB at the sync's peak.
    Joined per page and compressed they hold ~8 MB. LZ4 (block format), not zlib: on 20 pages of expanded
    partners zlib level 1 took 0.21 s to compress and 0.12 s to decompress (9.8x smaller), LZ4 0.04 s and
    0.013 s (7.7x): with a refused row on most pages, every page is decompressed once, and zlib cost the sync
    ~2 s of CPU per 100k partners. A page is decompressed when one of its records is asked for (a refused
    row, a repeated key), and the last one is kept for the next ask: refused rows are asked for in order.
    """

    def __init__(self) -> None:
        self._blobs: list[bytes] = []
        self._ends: list[Any] = []  # per page: the end offset of each record in its blob (numpy int64)
        self._firsts: list[int] = []  # per page: the batch position of its first record
        self._count = 0
        self._open: tuple[int, bytes] | None = None  # the last page decompressed

    @staticmethod
    def pack(records: list[dict[str, Any]]) -> PackedPage:
        """A page's records as one compressed blob and each record's end offset in it."""
        import numpy as np

        # Appended one by one: each orjson buffer (twice its record's length) is freed at once, so a page costs
        # its bytes once while it is packed, not a list of 1,000 buffers (~8 MB) at the sync's peak.
        joined = bytearray()
        ends = np.empty(len(records), dtype=np.int64)
        for i, record in enumerate(records):
            joined += orjson.dumps(record)
            ends[i] = len(joined)
        return PackedPage(lz4.block.compress(joined), ends)

    def add_page(self, records: list[dict[str, Any]]) -> None:
        self.add_packed(self.pack(records))

    def add_packed(self, page: PackedPage) -> None:
        self._ends.append(page.ends)
        self._blobs.append(page.blob)
        self._firsts.append(self._count)
        self._count += len(page.ends)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, position: int) -> bytes:
        if not 0 <= position < self._count:
            raise IndexError(position)
        page = bisect_right(self._firsts, position) - 1
        i = position - self._firsts[page]
        ends = self._ends[page]
        if self._open is None or self._open[0] != page:
            self._open = (page, lz4.block.decompress(self._blobs[page]))
        return self._open[1][int(ends[i - 1]) if i else 0 : int(ends[i])]

    def close_page(self) -> None:
        """Drop the page kept decompressed (~3 MB): asked for again, it is decompressed again."""
        self._open = None

    def clear(self) -> None:
        self._blobs.clear()
        self._ends.clear()
        self._firsts.clear()
        self._count = 0
        self._open = None


@dataclass
class ExtractedBatch:
    """Up to `max_pages` pages, where the batch started and where the next one starts.

    Read as records (`records`), or, with a mapper, mapped page by page: `frame` (its index the record's
    position in the batch, or `record_column` holding it), `raw` (each record's source bytes by position)
    and `keys` (each record's key by position, None when it has none).
    """

    start: PagePosition
    records: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    read: int = 0  # records the pages held
    next: PagePosition | None = None
    end_cursor: dict[str, Any] | None = None  # the source's cursor for the next read, with a read's last page
    frame: pd.DataFrame | None = None
    raw: RawRecords = field(default_factory=RawRecords)
    keys: list[str | None] = field(default_factory=list)
    rows: int = 0  # mapped rows (several per record with a record column)
    map_seconds: float = 0.0
    map_cpu_seconds: float = 0.0  # of the extract thread

    def add_page(self, page: MappedPage, record_column: str | None) -> pd.DataFrame:
        """Place a mapped page after the batch's earlier records: its frame's index (or record column) is the
        records' positions in the batch; its keys and source bytes are kept. The frame is returned."""
        frame = page.frame
        offset = self.read
        if record_column is not None:
            frame[record_column] = frame[record_column] + offset
            frame.index = range(self.rows, self.rows + len(frame))
        else:
            frame.index = range(offset, offset + len(frame))
        self.keys.extend(page.keys)
        self.raw.add_packed(page.raw)
        self.rows += len(frame)
        self.read += page.read
        self.pages += 1
        self.next, self.end_cursor = page.next, page.end_cursor
        self.map_seconds += page.seconds
        self.map_cpu_seconds += page.cpu_seconds
        return frame

    def source_record(self, position: int) -> dict[str, Any]:
        """The record at `position` as the source sent it (decoded again from its bytes)."""
        record: dict[str, Any] = orjson.loads(self.raw[position])
        return record

    def release(self) -> None:
        """Drop what the batch holds, in place: the extract task's future still refers to this object."""
        self.records.clear()
        self.raw.clear()
        self.keys.clear()
        self.frame = None


def _key(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return str(value) if isinstance(value, str | int) and value != "" else None


def read_batch(
    connector: Connector, stream: Stream, start: PagePosition, max_pages: int, mapper: Mapper | None = None,
    record_column: str | None = None,
) -> ExtractedBatch:
    """Up to `max_pages` pages from `start`. With a mapper, the next page is fetched while this one is mapped."""
    batch = ExtractedBatch(start=start)
    if mapper is None:
        position: PagePosition | None = start
        while position is not None and batch.pages < max_pages:
            page = connector.fetch_page(stream, position)
            batch.records.extend(page.records)
            batch.read += len(page.records)
            batch.pages += 1
            position = page.next
            batch.end_cursor = page.end_cursor
            del page
        batch.next = position
        return batch
    frames = [batch.add_page(page, record_column) for page in mapped_pages(connector, stream, start, max_pages, mapper, record_column)]
    return finish_batch(batch, frames, mapper)


def finish_batch(batch: ExtractedBatch, frames: list[pd.DataFrame], mapper: Mapper) -> ExtractedBatch:
    """The batch's frame: its pages' frames in order (the mapping of no record for a batch of none)."""
    import pandas as pd

    batch.frame = pd.concat(frames) if len(frames) > 1 else frames[0] if frames else mapper([])
    return batch


def mapped_pages(
    connector: Connector, stream: Stream, start: PagePosition, max_pages: int, mapper: Mapper, record_column: str | None
) -> Iterator[MappedPage]:
    """Up to `max_pages` pages from `start`, each mapped as it comes; the next page is fetched meanwhile."""
    # The source's time to answer a page (SAP building 1,000 expanded partners) passes while the page before is
    # mapped: one request in flight at a time, in the order the pages come, so paging, retries, the rate budget
    # and the failed unit are those of a plain loop. Keyset paging knows the next page once this one is parsed.
    # The collector stays paused for the whole read, not page by page: each pause's end made the next collection
    # walk the page parsed meanwhile (~400,000 containers), ~2 s of collections per 100k partners, halved so.
    # Nothing here is cyclic: the pages' objects go with their last reference (httpx's responses too, since
    # connectors/core/client.py breaks their cycle; before that, this longer pause held ~15 MB of dead bodies).
    # The pause is the process's: the cyclic garbage of the batch validated meanwhile waits for the batch's end,
    # which left the sync's peak where it was (326 against 328 MB, bench/sap_sync.py's child run).
    with paused_gc(), ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prefetch-{stream.name}") as prefetch:
        fetched = 0

        def fetch(at: PagePosition | None) -> Future[Page] | None:
            nonlocal fetched
            if at is None or fetched >= max_pages:
                return None
            fetched += 1
            return prefetch.submit(contextvars.copy_context().run, connector.fetch_page, stream, at)

        pending = fetch(start)
        while pending is not None:
            page = pending.result()
            pending = fetch(page.next)
            mapped = map_page(stream, page, mapper, record_column)
            del page  # the decoded records (~9.5 KB a partner) go before the mapped page is handed on
            yield mapped


def map_page(stream: Stream, page: Page, mapper: Mapper, record_column: str | None) -> MappedPage:
    """One page's records mapped, with their keys and packed source bytes (no place in a batch yet)."""
    clock, cpu = time.perf_counter(), time.thread_time()
    records = page.records
    # The collector is paused already, for the whole read (mapped_pages).
    frame = mapper(records)
    if record_column is not None:
        positions = set(frame[record_column].tolist())
        if positions != set(range(len(records))):
            raise ValueError(f"mapping of {stream.name} returned rows for {len(positions)} of {len(records)} records")
    elif len(frame) != len(records):
        raise ValueError(f"mapping of {stream.name} returned {len(frame)} rows for {len(records)} records")
    keys = [_key(r, stream.primary_key) for r in records]
    raw = RawRecords.pack(records)
    return MappedPage(frame, keys, raw, page.next, page.end_cursor, time.perf_counter() - clock, time.thread_time() - cpu)


def drop_exact_duplicates(records: list[dict[str, Any]], key: str) -> tuple[list[dict[str, Any]], int]:
    """The batch without records served twice to the letter (first copy kept), and how many were dropped.

    A source that serves the same record twice (a page repeated by a retried request, a join fan-out)
    must not make the suite's uniqueness rule refuse both copies. Records that share a key but differ
    are kept: which one is right is for a person to decide, so validation refuses both.
    """
    seen: dict[Any, dict[str, Any]] = {}
    repeated: set[Any] = set()
    for record in records:
        k = record.get(key)
        if k in seen:
            repeated.add(k)
        else:
            seen[k] = record
    if not repeated:
        return records, 0
    kept: list[dict[str, Any]] = []
    copies: dict[Any, list[dict[str, Any]]] = {}
    for record in records:
        k = record.get(key)
        if k in repeated:
            if any(record == other for other in copies.setdefault(k, [])):
                continue
            copies[k].append(record)
        kept.append(record)
    return kept, len(records) - len(kept)


def drop_mapped_duplicates(batch: ExtractedBatch, record_column: str | None = None) -> int:
    """`drop_exact_duplicates` for a mapped batch: the rows of a record whose key and source bytes repeat an
    earlier record's are dropped from `batch.frame` (first copy kept); how many records were dropped."""
    first: dict[str | None, int] = {}
    repeats: list[int] = []
    for position, k in enumerate(batch.keys):
        if k in first:
            repeats.append(position)
        else:
            first[k] = position
    if not repeats:
        return 0
    dropped: set[int] = set()
    kept: dict[str | None, list[dict[str, Any]]] = {}
    for position in repeats:
        k = batch.keys[position]
        copies = kept.setdefault(k, [batch.source_record(first[k])])
        record = batch.source_record(position)
        if record in copies:  # equal as records: the same fields and values, in whatever order
            dropped.add(position)
        else:
            copies.append(record)
    if dropped and batch.frame is not None:
        frame = batch.frame
        positions = frame[record_column] if record_column is not None else frame.index.to_series()
        batch.frame = frame[~positions.isin(dropped).to_numpy()]
    return len(dropped)


class ReadKeys:
    """The distinct keys a read found, for its shortfall check (`$count`) and a full read's reconcile.

    Compact on purpose: a 1M-record read held as a Python set of str costs ~100 MB; as one sorted numpy
    array of UTF-8 bytes per batch it costs ~10 MB. A read paged by key meets its keys in order, so each
    batch's keys come after the last batch's: then the parts are the distinct keys already, counted by adding
    their sizes. Only parts that overlap (a source that served a record twice, or pages not in key order) are
    merged, once, when counted: merging a million keys took 0.7 s and 68 MB more at the sync's peak, at its end.
    """

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._in_order = True  # every part's keys come after the part before's

    def add(self, keys: Iterable[str | None]) -> None:
        import numpy as np

        part = np.array([k.encode() for k in keys if k is not None], dtype=bytes)
        if not part.size:
            return
        part = np.unique(part)
        if self._parts and not self._parts[-1][-1] < part[0]:
            self._in_order = False
        self._parts.append(part)

    def _merged(self) -> np.ndarray:
        import numpy as np

        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts) if self._in_order else np.unique(np.concatenate(self._parts))]
            self._in_order = True
        return self._parts[0] if self._parts else np.array([], dtype=bytes)

    def array(self) -> np.ndarray:
        """The distinct keys as one sorted array of UTF-8 bytes (what a partition hands back to its run)."""
        return self._merged()

    def __len__(self) -> int:
        if self._in_order:
            return sum(int(part.size) for part in self._parts)
        return int(self._merged().size)

    def as_frozenset(self) -> frozenset[str]:
        return frozenset(k.decode() for part in self._parts for k in part.tolist())


@task(
    name="extract_batch",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=1,
    retry_delay_seconds=[2.0],
    retry_condition_fn=retry_transient_only,
    task_run_name="extract-{stream.name}",
)
def extract_batch(
    connector: Connector, stream: Stream, start: PagePosition, max_pages: int, mapper: Mapper | None = None,
    record_column: str | None = None, process: ExtractProcess | None = None,
) -> ExtractedBatch:
    """Fetch up to `max_pages` pages, mapped page by page with `mapper`; transient HTTP failures were already
    retried inside the connector. With the run's extract `process`, that process reads the batch
    (tasks/extract_process.py) with its copy of the connector, the same way."""
    if process is not None:
        return process.read(start, max_pages)
    return read_batch(connector, stream, start, max_pages, mapper, record_column)

"""Generic map and validate tasks: a batch in, a frame or a validation outcome out."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.core.gcpause import paused_gc

if TYPE_CHECKING:
    from expectations.runner import ValidationOutcome


@task(name="map_batch", cache_policy=NO_CACHE, persist_result=False, task_run_name="map-{dataset}")
def map_batch(
    dataset: str, mapper: Callable[[list[dict[str, Any]]], pd.DataFrame], records: list[dict[str, Any]], record_column: str | None = None
) -> pd.DataFrame:
    """Run a pure mapping; the frame's index is the record's position in the batch (or, with `record_column`,
    several rows per record, that column holding the position: every record must have a row)."""
    with paused_gc():
        frame = mapper(records)
    if record_column is not None:
        positions = set(frame[record_column].tolist())
        if positions != set(range(len(records))):
            raise ValueError(f"mapping of {dataset} returned rows for {len(positions)} of {len(records)} records")
    elif len(frame) != len(records):
        raise ValueError(f"mapping of {dataset} returned {len(frame)} rows for {len(records)} records")
    return frame


@task(name="validate_batch", cache_policy=NO_CACHE, persist_result=False, task_run_name="validate-{dataset}")
def validate_batch(dataset: str, frame: pd.DataFrame, run_name: str | None = None) -> ValidationOutcome:
    """Check a batch with the dataset's expectation suite and split passing from failing rows."""
    from expectations.runner import validate_frame

    with paused_gc():
        return validate_frame(dataset, frame, run_name=run_name)

"""Where a validated dataset's refused rows are quarantined, read from the dataset registry, for the run report.

The validation runner (expectations/runner.py) cannot import the registry (the `expectations-offline` contract:
the registry reaches flows through the rerun handlers), so the sync engine hands this resolver to
`build_data_docs`: the report then keys its failing rows like `quarantined_records.record_key` and prints the
`drymix quarantine list` filters that find them.
"""

from __future__ import annotations

from expectations.runner import QuarantineTarget
from hub.datasets import all_datasets


def quarantine_target(validated: str) -> QuarantineTarget | None:
    """Quarantine filters and key columns of what `validate_frame` was called with; None when nothing declares it.

    Validation names a dataset (`customers`, `plant_readings`) or a suite several datasets share (`lab`,
    `schedules`); quarantined_records names the dataset a row was refused for, under the integration that read
    it. Several integrations on one dataset (both calendars): its filter leaves the integration out.
    """
    declared = list(all_datasets())
    direct = [d for d in declared if validated in (d.dataset, *d.replays)]
    matches = direct or [d for d in declared if d.suite == validated]
    if not matches:
        return None
    pairs = (
        [(d.integration, validated) for d in direct]
        if direct
        # A shared suite: the datasets its rows are quarantined under (replayable ones, else where errors go).
        else [(d.integration, name) for d in matches for name in (d.replays or d.error_datasets or (d.dataset,))]
    )
    integrations: dict[str, set[str]] = {}
    for integration, name in pairs:
        integrations.setdefault(name, set()).add(integration)
    filters = tuple((min(found) if len(found) == 1 else None, name) for name, found in integrations.items())
    return QuarantineTarget(key=tuple(matches[0].key), filters=filters)

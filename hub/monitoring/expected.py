"""Expected activity: when each integration is due, from the schedules of the registered datasets.

Silence is an outage only where activity was expected. A registered dataset with a schedule and a
watermark is a pull: every run of its deployment reads its source, so every run makes connector calls.
Each such dataset makes its integration *due* at every time of its cron (config/integrations.toml,
through hub/operations/deploy.py `configured_schedules`, in the zone prefect.yaml schedules run in).
Pushes and outboxes (a document upload, a customer push, webhook processing) call only when there is
work, and on-demand sends have no schedule: they never make an integration due. `[silence] idle_ok`
names other datasets whose runs may rightly make no call.

Success is a successful connector call of the integration (call_metrics): the only run-level signal the
hub records for every integration (a watermark moves only when a run read something).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from hub.datasets import Dataset, all_datasets
from hub.monitoring.config import MonitoringConfig


@dataclass(frozen=True)
class DueSchedule:
    """One dataset's schedule that makes its integration due."""

    dataset: str  # `sap.customers`
    deployment: str | None
    cron: str

    @property
    def label(self) -> str:
        return f"{self.deployment or self.dataset}, cron {self.cron!r}"


@dataclass(frozen=True)
class DueTime:
    """A time an integration was due, and which schedule made it so."""

    at: datetime  # UTC
    schedule: DueSchedule

    def describe(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} UTC ({self.schedule.label})"


def makes_due(dataset: Dataset, idle_ok: Iterable[str] = ()) -> bool:
    """A scheduled pull that keeps a watermark reads its source on every run (see the module docstring)."""
    return (
        dataset.flow is not None
        and dataset.schedule is not None
        and bool(dataset.cursor_datasets)
        and dataset.name not in set(idle_ok)
    )


def due_schedules(config: MonitoringConfig, *, schedules: dict[str, str] | None = None) -> dict[str, list[DueSchedule]]:
    """Integration -> the schedules that make it due (integrations without any are never due)."""
    from hub.operations.deploy import configured_schedules

    crons = configured_schedules() if schedules is None else schedules
    out: dict[str, list[DueSchedule]] = {}
    for dataset in all_datasets():
        if not makes_due(dataset, config.silence.idle_ok) or dataset.schedule not in crons:
            continue
        out.setdefault(dataset.integration, []).append(DueSchedule(dataset.name, dataset.deployment, crons[dataset.schedule]))
    return out


class DueTimeline:
    """Every due time of one integration's schedules over a span, for "the latest due time before t"."""

    def __init__(self, schedules: Sequence[DueSchedule], start: datetime, end: datetime, tz: str) -> None:
        zone = ZoneInfo(tz)
        times: dict[datetime, DueTime] = {}
        for schedule in schedules:
            # cronsim yields times strictly after its start: begin a minute early so `start` itself counts.
            for tick in CronSim(schedule.cron, (start - timedelta(minutes=1)).astimezone(zone)):
                at = tick.astimezone(UTC)
                if at > end:
                    break
                times.setdefault(at, DueTime(at, schedule))
        self._times = sorted(times)
        self._due = [times[t] for t in self._times]

    def latest_at_or_before(self, moment: datetime) -> DueTime | None:
        index = bisect_right(self._times, moment)
        return self._due[index - 1] if index else None

    def __len__(self) -> int:
        return len(self._times)


def latest_due(schedules: Sequence[DueSchedule], moment: datetime, tz: str) -> DueTime | None:
    """The latest time at or before `moment` that any of `schedules` made the integration due."""
    zone = ZoneInfo(tz)
    best: DueTime | None = None
    for schedule in schedules:
        # Reversed, cronsim yields times strictly before its start: a microsecond on makes `moment` itself count.
        tick = next(CronSim(schedule.cron, (moment + timedelta(microseconds=1)).astimezone(zone), reverse=True), None)
        if tick is not None and (best is None or tick.astimezone(UTC) > best.at):
            best = DueTime(tick.astimezone(UTC), schedule)
    return best


def first_due_after(schedules: Sequence[DueSchedule], moment: datetime, tz: str) -> DueTime | None:
    """The first time strictly after `moment` that any of `schedules` makes the integration due."""
    zone = ZoneInfo(tz)
    best: DueTime | None = None
    for schedule in schedules:
        tick = next(CronSim(schedule.cron, moment.astimezone(zone)), None)
        if tick is not None and (best is None or tick.astimezone(UTC) < best.at):
            best = DueTime(tick.astimezone(UTC), schedule)
    return best


def is_overdue(due: DueTime | None, *, last_success: datetime | None, seen_at: datetime | None) -> bool:
    """`due` (the latest due time whose grace has run out) passed with no success since it.

    Only due times after the integration was first seen count: before its first call the hub cannot tell
    an integration not yet deployed from one that stopped."""
    if due is None or seen_at is None or due.at < seen_at:
        return False
    return last_success is None or last_success < due.at

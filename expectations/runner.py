"""Validation runner: the project's single gateway to Great Expectations (GX 1.x).

Every dataset has a suite module ``expectations/<dataset>.py`` with
``build_suite() -> gx.ExpectationSuite`` and, optionally,
``suite_parameters(now: datetime) -> dict`` for values that must be computed
per validation (e.g. "not in the future"). Nothing outside this package
imports ``great_expectations``; importing this module does not import it
either (GX costs ~3 s to import, the CLI must start instantly), nor pandas.

API
===

``validate_frame(dataset, frame, *, suite=None, build_docs=False,
docs_dir=None, run_name=None, parameters=None) -> ValidationOutcome``
    Validate one in-memory batch (whole-dataframe batch definition) against
    the dataset's suite and split it into ``valid`` and ``invalid`` rows.

    * A row is **invalid** (quarantined) when it violates at least one
      row-level expectation of severity ``critical`` (GX's default).
      Row-level means a map expectation that reports ``unexpected_index_list``;
      ``mostly`` does not protect the violating rows themselves.
    * ``warning``/``info`` expectations never quarantine; their row hits are
      still listed in ``failures`` (with ``RowFailure.severity``).
    * Table-level/aggregate expectations (column set, row count, ...) never
      quarantine rows; a failing critical one makes ``outcome.success`` False.
    * ``valid``/``invalid`` keep the caller's index labels; ``failures`` is
      keyed by those labels. The index must be unique.
    * An expectation that *errors* (e.g. a missing column) raises
      :class:`ValidationRunError`: no row can be vouched for.
    * ``run_name`` groups batches of one sync run for the per-run Data Docs
      report (see below). Without it nothing is retained after the call.
    * ``build_docs=True`` validates through a GX ``Checkpoint`` with an
      ``UpdateDataDocsAction`` and sets ``data_docs_path`` to this
      validation's HTML page. It renders HTML and is slow: use it for one-off
      validations, not per batch.
    * ``parameters`` are extra GX suite parameters (``{"$PARAMETER": name}``);
      ``now_utc`` is always supplied.

``build_data_docs(docs_dir=None, *, run_name=None, keep_runs=None) -> str``
    Render the Data Docs report of one run (default: the most recently used
    run name) and return the path of its ``index.html``. ``keep_runs`` prunes
    older run sites under ``docs_dir``.

``preload(dataset) -> None``
    Import GX and register the dataset's suite ahead of the first batch (the
    engine runs it in a background thread while the first pages are fetched).

``cache_info() -> dict`` / ``reset() -> None``
    Introspection and teardown of the per-process GX state (tests, forks).

Data Docs, once per run
=======================
The hot path (``build_docs=False``) keeps, for every batch validated with a
``run_name``, a *compact* copy of GX's validation result (the per-row
``unexpected_index_list``/``unexpected_list`` stripped; counts, percentages
and GX's 20-item partial samples kept) in process memory.
``build_data_docs(run_name=...)`` writes those results into the ephemeral
context's validation results store and builds a filesystem Data Docs site
registered with ``context.add_data_docs_site`` at ``<docs_dir>/<run_name>/``
(``docs_dir`` defaults to ``var/data_docs``; the run name is slugified). That
site contains only this
run: one validation page per batch plus the suite pages (rules with their
analyst notes), and the returned ``index.html`` lists exactly those. Separate
sites per run mean neither several runs in one process nor runs of other
processes (GX's index builder prunes pages it has no result for) mix up each
other's reports. Retained results are capped (``MAX_RETAINED_RESULTS``,
oldest dropped first) so a long-lived worker does not grow without bound.
Every site carries its own copy of GX's static assets (~4 MB) and of the
CSS/JS/fonts GX's pages would load from CDNs (~3.5 MB, ``expectations/assets/``,
links rewritten by ``expectations/offline_assets.py``: the site reads offline),
hence the ``keep_runs`` retention knob.

Next to GX's ``index.html`` the runner writes ``report.html``, the page a run
summary links: per failed rule the rows it refused, a sample of
``REPORT_SAMPLE_SIZE`` failing values with their record keys (taken from the
batch while it is at hand; key columns and quarantine filters come from the
caller's ``quarantine`` resolver, the hub's from its dataset registry), and the
``drymix quarantine list`` command for the rest (docs/validation-reports.md).

Typical flow::

    for batch in batches:
        outcome = validate_frame("customers", batch, run_name=flow_run_id)
        write(outcome.valid); quarantine(outcome.invalid, outcome.failures)
    report = build_data_docs(settings.data_docs_dir, run_name=flow_run_id, keep_runs=30)

Performance
===========
The context, pandas datasource, dataframe assets, suites and validation
definitions are built once per process and cached per dataset. Per call the
hot path runs GX's validator for the registered ``ValidationDefinition``
directly instead of ``ValidationDefinition.run()``: the latter also
JSON-serialises the COMPLETE result into the in-memory results store on every
call (~100 ms per 20k-row batch, and memory that is never released). GX calls
are serialised by one process-wide lock.

Only COMPLETE returns every failing row's index (BASIC returns none, SUMMARY
the first ``partial_unexpected_count``; the runner checks the count), but most
expectations refuse no row, so a batch is validated in two passes:

1. The whole suite with BASIC: counts and GX's partial samples (what Data
   Docs render), without the row-index metrics. A map expectation that found
   no unexpected value is complete already: COMPLETE would add only empty
   lists, which the runner adds itself.
2. COMPLETE only for the rest (map expectations that found rows, table-level
   ones), on the same GX validator as pass 1, whose metric cache still holds
   pass 1's conditions and counts, so it computes little beyond the row indices.

The merged result (and the retained Data Docs copy) equals one COMPLETE run;
``tests/expectations/test_runner_two_pass.py`` checks it against GX. Any
evaluation error, or a dataset whose previous batch re-ran more than 40 % of
its suite (two passes would then cost more), takes one COMPLETE pass.

Both passes run per column group, in GX's own order (grouped by column), each
on a frame of just the columns it reads (its column plus row-condition
columns; table-level and multi-column rules get the whole frame): GX's pandas
helpers filter the whole batch with a row mask once per expectation and
metric, and copying 1-3 columns instead of 29 is most of the saving. On 100k
mapped SAP partners in 10k batches this takes ~17 % less CPU than one
COMPLETE pass (``time.process_time``, both runners in one process, batches
alternating). What remains is mostly GX's fixed cost per expectation (metric
graphs, pydantic ``.dict()`` of each configuration, ~1/3 of the CPU), paid per
batch. The batch's data fingerprint (GX's batch marker) is ours, ``_content_fingerprint``.
``cache_info()`` counts the evaluations of each pass.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import gc
import hashlib
import importlib
import json
import logging
import math
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import unquote, urlparse

from expectations import deferred
from expectations.offline_assets import make_site_offline

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite, ValidationDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.data_context.store.store import DataDocsSiteConfigTypedDict
    from great_expectations.data_context.types.resource_identifiers import (
        ValidationResultIdentifier,
    )
    from great_expectations.datasource.fluent import PandasDatasource

__all__ = [
    "DEFAULT_DOCS_DIR",
    "QuarantineTarget",
    "RowFailure",
    "ValidationOutcome",
    "ValidationRunError",
    "build_data_docs",
    "cache_info",
    "preload",
    "reset",
    "validate_frame",
]

logger = logging.getLogger(__name__)

DEFAULT_DOCS_DIR: Final = Path("var/data_docs")
#: Upper bound on compact per-batch results kept for Data Docs (all runs).
MAX_RETAINED_RESULTS: Final = 1000
#: Failing rows (record key and value) the run report shows per failed rule; `drymix quarantine list` has the rest.
REPORT_SAMPLE_SIZE: Final = 10

CRITICAL: Final = "critical"
DATASOURCE_NAME: Final = "drymix"
BATCH_DEFINITION_NAME: Final = "whole_dataframe"

# COMPLETE is the only format whose unexpected_index_list is uncapped. The
# index query string is dropped from the result: nobody reads it.
_RESULT_FORMAT: Final[dict[str, Any]] = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}
# Pass 1: BASIC still reports counts and percentages (what Data Docs render) but
# skips the row-index metrics and GX's whole-frame filtering behind them.
# BOOLEAN_ONLY would be cheaper still, yet drops the counts Data Docs show.
_CHEAP_RESULT_FORMAT: Final[dict[str, Any]] = {**_RESULT_FORMAT, "result_format": "BASIC"}
# What COMPLETE adds to a map result over BASIC (GX's _format_map_output). With
# no unexpected value each of them is an empty list, so pass 1 can complete a
# clean map result itself instead of re-running it.
_COMPLETE_ONLY_KEYS: Final = (
    "partial_unexpected_counts",
    "partial_unexpected_index_list",
    "unexpected_list",
    "unexpected_index_list",
)
# Two passes pay BASIC for the whole suite plus COMPLETE for the re-run part.
# On the customers suite (10k rows) pass 1 costs ~60 % of one COMPLETE pass and
# each re-run expectation ~80 % of its share of it, so past about half the suite
# re-run one COMPLETE pass is cheaper. When the previous batch of a dataset
# crossed this share, the next one runs a single pass.
_TWO_PASS_MAX_RERUN_SHARE: Final = 0.4
# Per-row payloads removed before a result is retained for Data Docs.
_HEAVY_RESULT_KEYS: Final = frozenset(
    {"unexpected_list", "unexpected_index_list", "unexpected_index_query", "unexpected_rows"}
)
# Expectation kwargs that are plumbing, or the domain itself (reported apart).
_NON_RULE_KWARGS: Final = frozenset(
    {"batch_id", "result_format", "catch_exceptions", "column", "column_A", "column_B", "column_list"}
)
_DATASET_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
# Marks directories under docs_dir that build_data_docs may prune.
_SITE_MARKER: Final = ".drymix-data-docs.json"

_LOCK = threading.RLock()
# Expectation -> its configuration, for the expectation objects of one validation call (_memoised_configurations).
_CONFIGURATIONS: ContextVar[dict[int, tuple[Any, Any, Any]] | None] = ContextVar("gx_configurations", default=None)
# Metric kwargs (by their values' identities) -> GX's id for them, in the same call (_install_configuration_memo).
_METRIC_IDS: ContextVar[dict[tuple[Any, ...], tuple[Any, Any]] | None] = ContextVar("gx_metric_ids", default=None)
# An object column's null mask by its buffer, in the same call (_install_configuration_memo).
_NULL_MASKS: ContextVar[dict[tuple[Any, ...], tuple[Any, Any]] | None] = ContextVar("gx_null_masks", default=None)
# Set while a column group's own frame is validated: GX need not fingerprint that frame (_install_configuration_memo).
_GROUP_FRAME: ContextVar[bool] = ContextVar("gx_group_frame", default=False)
# ExpectationConfiguration -> the expectation object GX builds from it, in the same call (_install_configuration_memo).
_DOMAIN_OBJECTS: ContextVar[dict[int, tuple[Any, Any, Any]] | None] = ContextVar("gx_domain_objects", default=None)


class ValidationRunError(RuntimeError):
    """GX could not evaluate some expectations (e.g. a column is missing)."""

    def __init__(self, dataset: str, errors: list[str]) -> None:
        self.dataset = dataset
        self.errors = errors
        super().__init__(f"validation of {dataset!r} could not run: " + "; ".join(errors))


@dataclass(slots=True)
class RowFailure:
    """One failed expectation for one row."""

    expectation: str  # e.g. "expect_column_values_to_match_regex"
    column: str | None  # None for multi-column expectations (value is then a dict)
    kwargs: dict[str, Any]  # JSON-safe rule kwargs without the column; shared, do not mutate
    value: Any  # the offending value, JSON-safe
    severity: str = CRITICAL  # "critical" quarantines; "warning"/"info" only report
    rule_id: str | None = None  # the expectation's meta["rule_id"], if the suite sets one


@dataclass(frozen=True, slots=True)
class QuarantineTarget:
    """Where a validated dataset's refused rows land in quarantined_records, and which columns key them.

    The run report prints one `drymix quarantine list` command per filter. The hub derives it from its
    dataset registry (hub/ledger/report_targets.py) and hands it to :func:`build_data_docs`.
    """

    key: tuple[str, ...]  # frame columns holding the record key (the quarantine `record_key`)
    filters: tuple[tuple[str | None, str], ...]  # (integration, or None when several share it; dataset)


@dataclass(slots=True)
class ValidationOutcome:
    """Result of :func:`validate_frame` for one batch."""

    dataset: str
    valid: pd.DataFrame  # rows passing every critical row-level expectation
    invalid: pd.DataFrame  # rows failing at least one critical row-level expectation
    failures: dict[Any, list[RowFailure]]  # index label -> failures (critical and warnings)
    statistics: dict[str, Any]
    expectation_results: list[dict[str, Any]]
    data_docs_path: str | None = None
    success: bool = True  # every critical expectation (row- or table-level) passed
    run_name: str | None = None

    @property
    def warnings(self) -> dict[Any, list[RowFailure]]:
        """Non-critical row failures, by index label (rows stay in ``valid``)."""
        found: dict[Any, list[RowFailure]] = {}
        for label, items in self.failures.items():
            soft = [item for item in items if item.severity != CRITICAL]
            if soft:
                found[label] = soft
        return found

    @property
    def failed_table_expectations(self) -> list[dict[str, Any]]:
        """Failed expectations that are not row-level (they never quarantine)."""
        return [r for r in self.expectation_results if not r["success"] and not r["row_level"]]


@dataclass(slots=True)
class _Registration:
    """GX objects for one dataset, built once and reused across calls."""

    dataset: str
    suite: ExpectationSuite
    validation_definition: ValidationDefinition
    fingerprint: str
    from_module: bool  # built by expectations.<dataset>.build_suite()
    source: object  # the suite object it was built from (identity shortcut)
    parameters_hook: Callable[[dt.datetime], Mapping[str, Any]] | None
    map_ids: frozenset[str]  # ids of the suite's map (row-level) expectations
    groups: tuple[_Group, ...]  # the suite as GX orders it, by column
    empty_suite: ExpectationSuite  # same name, no expectations: the suite-level result shell
    rerun_share: float = 0.0  # share of the last batch's expectations that needed COMPLETE


@dataclass(frozen=True, slots=True)
class _Group:
    """Expectations GX evaluates together (one column), with the frame columns they read."""

    columns: tuple[str, ...] | None  # None: the whole frame (table-level, multi-column, unknown)
    expectations: tuple[Any, ...]


# A failing row for the run report: its index label, the failing value, the row (its key is picked at build time).
_Sample = tuple[str, Any, dict[str, Any]]


@dataclass(slots=True)
class _RetainedResult:
    key: ValidationResultIdentifier
    result: ExpectationSuiteValidationResult
    stored: bool  # already written to the context's validation results store
    # results[i] of a failed row-level expectation -> its first failing rows (REPORT_SAMPLE_SIZE per rule and run)
    samples: dict[int, list[_Sample]] = field(default_factory=dict)
    dataset: str | None = None  # the dataset validate_frame was called for (the suite may be shared)


@dataclass(slots=True)
class _RunRecord:
    run_name: str
    suites: set[str] = field(default_factory=set)
    results: list[_RetainedResult] = field(default_factory=list)
    truncated: bool = False  # some results were evicted (warned once)
    sampled: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, rule) -> failing rows kept


@dataclass(slots=True)
class _State:
    context: EphemeralDataContext | None = None
    datasource: PandasDatasource | None = None
    registrations: dict[str, _Registration] = field(default_factory=dict)
    runs: OrderedDict[str, _RunRecord] = field(default_factory=OrderedDict)
    retained: int = 0
    last_run_time: dt.datetime | None = None
    context_builds: int = 0
    suite_registrations: int = 0
    cheap_evaluations: int = 0  # expectations evaluated in pass 1 (BASIC)
    complete_evaluations: int = 0  # expectations evaluated with COMPLETE (pass 2 or fallback)


_state = _State()


# --------------------------------------------------------------------------- API


def validate_frame(
    dataset: str,
    frame: pd.DataFrame,
    *,
    suite: ExpectationSuite | None = None,
    build_docs: bool = False,
    docs_dir: str | Path | None = None,
    run_name: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> ValidationOutcome:
    """Validate ``frame`` against the ``dataset`` suite and split valid/invalid rows."""
    import pandas as pd

    _check_dataset_name(dataset)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if not frame.index.is_unique:
        # Failures are reported per label; duplicates would merge rows' failures.
        raise ValueError(f"frame index for {dataset!r} must be unique")
    if run_name is not None and not run_name.strip():
        raise ValueError("run_name must not be blank")

    # GX reports positions when the frame has a 0..n-1 RangeIndex; translating
    # positions back to labels keeps any caller index (and is cheap: the
    # reset shares data under pandas copy-on-write).
    gx_frame = frame if _is_positional(frame.index) else frame.reset_index(drop=True)
    now = dt.datetime.now(dt.UTC)
    docs_path: str | None = None

    with _LOCK:
        registration = _registration(dataset, suite)
        suite_parameters: dict[str, Any] = {"now_utc": now}
        if registration.parameters_hook is not None:
            suite_parameters.update(registration.parameters_hook(now))
        if parameters:
            suite_parameters.update(parameters)
        if build_docs and run_name is None:
            run_name = f"{dataset}-{now:%Y%m%dT%H%M%S%fZ}"
        run_id = _next_run_id(run_name, now)
        if build_docs:
            assert run_name is not None  # defaulted above
            result, key, compact, docs_path = _validate_with_docs(
                registration, gx_frame, suite_parameters, run_id, _docs_root(docs_dir)
            )
            _retain(run_name, registration.suite.name, key, compact, stored=True, dataset=dataset)
            _sample_failures(run_name, dataset, frame, gx_frame, result)
        else:
            result = _validate_fast(registration, gx_frame, suite_parameters, run_id)
            if run_name is not None:
                key = _result_key(registration.suite.name, run_id, result.batch_id)
                _retain(run_name, registration.suite.name, key, _compact(result), stored=False, dataset=dataset)
                _sample_failures(run_name, dataset, frame, gx_frame, result)
        # Inside the lock so the GC pause in _split is never interleaved.
        outcome = _split(dataset, frame, gx_frame, result)
    outcome.data_docs_path = docs_path
    outcome.run_name = run_name
    return outcome


def build_data_docs(
    docs_dir: str | Path | None = None,
    *,
    run_name: str | None = None,
    keep_runs: int | None = None,
    quarantine: Callable[[str], QuarantineTarget | None] | None = None,
) -> str:
    """Render the Data Docs site of one run and return the path of its offline ``report.html``.

    ``run_name`` defaults to the run most recently passed to :func:`validate_frame`.
    A run without retained results still gets a site (suite pages only), so a
    sync that validated nothing has a report too. ``keep_runs`` deletes all but
    the newest ``keep_runs`` run sites under ``docs_dir`` (only directories this
    runner created); each site carries ~7.5 MB of static assets (GX's and the vendored CDN files).
    ``quarantine(dataset)`` says where a validated dataset's refused rows are quarantined and what keys
    them: the report's failing rows then show record keys and exact ``drymix quarantine list`` commands.
    """
    if keep_runs is not None and keep_runs < 1:
        raise ValueError("keep_runs must be at least 1")
    with _LOCK:
        context = _context()
        if run_name is None:
            if not _state.runs:
                raise LookupError("no validation run recorded in this process; pass run_name")
            run_name = next(reversed(_state.runs))
        record = _state.runs.get(run_name) or _RunRecord(run_name=run_name)

        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        store = context.validation_results_store
        result_keys: list[Any] = []  # GX types this as a list of one key class
        for retained in record.results:
            if not retained.stored:
                store.set(retained.key, retained.result)
                retained.stored = True
            result_keys.append(retained.key)
        suite_names = record.suites or {r.suite.name for r in _state.registrations.values()}
        suite_keys = [ExpectationSuiteIdentifier(name=name) for name in sorted(suite_names)]

        site_name, site_dir = _site_for(run_name, _docs_root(docs_dir))
        context.add_data_docs_site(site_name=site_name, site_config=_site_config(site_dir))
        try:
            # An empty identifier list would make GX render every stored result.
            context.build_data_docs(
                site_names=[site_name], resource_identifiers=[*result_keys, *suite_keys] or None
            )
        finally:
            context.delete_data_docs_site(site_name)
        index = site_dir / "index.html"
        if not index.is_file():
            raise RuntimeError(f"GX did not write the Data Docs index {index}")
        # GX's pages load their styles and scripts from CDNs: point them at the copies shipped with the repo.
        make_site_offline(site_dir)
        report = _write_run_report(site_dir, run_name, record, sorted(suite_names), _target_resolver(quarantine))
        _mark_site(site_dir, run_name)
        if keep_runs is not None:
            _prune_sites(site_dir.parent, keep_runs, current=site_dir)
    return str(report)


_REPORT_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin:1rem 0}"
    "td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}th{background:#f3f3f3}"
    ".fail{color:#a40000;font-weight:600}.ok{color:#176b2c;font-weight:600}.warn{color:#8a5300;font-weight:600}"
    "code{background:#f6f6f6;padding:0 .2rem}section.rule{border-left:4px solid #a40000;padding-left:1rem;margin:1.5rem 0}"
    "section.rule.warning{border-left-color:#c98a00}pre.command{background:#f6f6f6;padding:.5rem;white-space:pre-wrap}"
)


@dataclass(slots=True)
class _RuleFailures:
    """One failed rule of one dataset across a run's batches, as the run report shows it."""

    dataset: str
    name: str  # `expect_...(column)`, what the Data Docs pages call it
    rule_id: str | None
    severity: str
    row_level: bool
    rows: int = 0
    batches: int = 0
    samples: list[tuple[str, Any]] = field(default_factory=list)  # (record key, failing value)
    observed: list[Any] = field(default_factory=list)  # table-level rules: what GX observed, per batch


def _write_run_report(
    site_dir: Path, run_name: str, record: _RunRecord, suite_names: list[str], target_of: Callable[[str], QuarantineTarget]
) -> Path:
    """`report.html`: one self-contained page per run: what failed, a sample of the failing rows with their
    record keys, the `drymix quarantine list` command for the rest, and links to GX's pages (offline too)."""
    from html import escape

    rows: list[str] = []
    rules: dict[tuple[str, str], _RuleFailures] = {}
    for number, retained in enumerate(record.results, start=1):
        result = retained.result
        dataset = retained.dataset or result.suite_name
        stats = result.statistics or {}
        parts = retained.key.to_tuple()
        page = Path("validations", *[str(p) for p in parts]).with_suffix(".html")
        if not (site_dir / page).is_file():  # GX's layout changed: fall back to a search by run time
            found = sorted(site_dir.glob(f"validations/**/{parts[-2]}/*.html")) if len(parts) >= 2 else []
            page = found[0].relative_to(site_dir) if found else page
        failed = []
        for index, exp in enumerate(result.results):
            cfg = exp.expectation_config
            if exp.success or cfg is None:
                continue
            details = exp.result or {}
            name = _rule_name(cfg)
            rule = rules.get((dataset, name))
            if rule is None:
                rule = rules[(dataset, name)] = _RuleFailures(
                    dataset, name, (cfg.meta or {}).get("rule_id"), _severity_of(cfg), "unexpected_count" in details
                )
            count = int(details.get("unexpected_count") or 0)
            rule.rows += count
            rule.batches += 1
            if not rule.row_level:
                rule.observed.append(_json_safe(details.get("observed_value")))
            room = REPORT_SAMPLE_SIZE - len(rule.samples)
            if room > 0:
                kept = retained.samples.get(index)
                key_columns = target_of(dataset).key
                rule.samples += (
                    [(_record_key(row, key_columns) or f"batch {number}, row {label}", value) for label, value, row in kept[:room]]
                    if kept
                    else _partial_sample(details, number)[:room]
                )
            failed.append(f'<a href="#{escape(_rule_anchor(dataset, name))}"><code>{escape(name)}</code></a>: {count}')
        status = '<span class="ok">passed</span>' if result.success else '<span class="fail">failed</span>'
        rows.append(
            f"<tr><td>{number}</td><td>{escape(dataset)}</td><td>{status}</td><td>{stats.get('evaluated_expectations', '')}</td>"
            f"<td>{stats.get('unsuccessful_expectations', '')}</td><td>{'<br>'.join(failed) or '-'}</td>"
            f'<td><a href="{escape(page.as_posix())}">details</a></td></tr>'
        )
    refused: dict[str, int] = {}  # dataset -> rows refused by its critical rules (a row failing two rules counts twice)
    for rule in rules.values():
        if rule.severity == CRITICAL and rule.row_level:
            refused[rule.dataset] = refused.get(rule.dataset, 0) + rule.rows
    sections = "".join(
        _rule_section(rule, refused.get(rule.dataset, 0), target_of(rule.dataset))
        for rule in sorted(rules.values(), key=lambda r: (r.dataset, r.severity != CRITICAL, -r.rows, r.name))
    )
    suites = "".join(
        f'<li><a href="expectations/{escape(name)}.html">{escape(name)}</a> (rules and the reason for each)</li>'
        for name in suite_names
    )
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Validation report {escape(run_name)}</title>"
        f"<style>{_REPORT_STYLE}</style></head><body><h1>Validation report</h1>"
        f"<p>Run <code>{escape(run_name)}</code>: {len(record.results)} batch(es) validated"
        + (", some results were dropped (retention cap): the figures are incomplete" if record.truncated else "")
        + ".</p>"
        + (f"<h2>Rule failures</h2>{sections}" if sections else "<h2>Rule failures</h2><p>None: every rule passed.</p>")
        + "<h2>Batches</h2><table><tr><th>#</th><th>dataset</th><th>status</th><th>rules</th><th>failed rules</th>"
        f"<th>rows failing, by rule</th><th>Great Expectations page</th></tr>{''.join(rows)}</table>"
        f"<h2>Suites</h2><ul>{suites or '<li>none</li>'}</ul>"
        '<p>Full Great Expectations site: <a href="index.html">index.html</a> (its styles and scripts are shipped '
        "with this report: it reads offline).</p></body></html>"
    )
    report = site_dir / "report.html"
    report.write_text(html, encoding="utf-8")
    return report


def _rule_section(rule: _RuleFailures, refused: int, target: QuarantineTarget) -> str:
    """One failed rule: how many rows, a sample with record keys, and the command that lists the rest."""
    from html import escape

    title = f"<code>{escape(rule.rule_id)}</code>: " if rule.rule_id else ""
    head = (
        f'<section class="rule{"" if rule.severity == CRITICAL else " warning"}" id="{escape(_rule_anchor(rule.dataset, rule.name))}">'
        f"<h3>{title}<code>{escape(rule.name)}</code> on {escape(rule.dataset)}</h3>"
    )
    if not rule.row_level:
        observed = "; ".join(escape(_display(v)) for v in rule.observed[:REPORT_SAMPLE_SIZE])
        what = "fails the run" if rule.severity == CRITICAL else f"{rule.severity}: reported only"
        return (f"{head}<p>A table-level rule ({what}; it refuses no row) failed in {rule.batches} batch(es). "
                f"Observed: <code>{observed or '-'}</code>.</p></section>")
    if rule.severity == CRITICAL:
        verdict = f'<span class="fail">{rule.rows} row(s) refused</span> (quarantined, not loaded)'
    else:
        verdict = (f'<span class="warn">{rule.rows} row(s) flagged</span> ({escape(rule.severity)}: reported, '
                   "rows loaded, not quarantined)")
    sample = "".join(
        f"<tr><td><code>{escape(key)}</code></td><td><code>{escape(_display(value))}</code></td></tr>"
        for key, value in rule.samples
    )
    shown = len(rule.samples)
    body = (
        f"{head}<p>{verdict} in {rule.batches} batch(es).</p>"
        f"<table><tr><th>record key</th><th>failing value</th></tr>{sample}</table>"
        f"<p>{shown} of {rule.rows} shown."
    )
    if rule.severity != CRITICAL:
        return body + " The rows were loaded: the Great Expectations pages show GX's own sample of the rest.</p></section>"
    filters = target.filters
    listing = "\n".join(_quarantine_command("list", integration, dataset, refused) for integration, dataset in filters)
    replay = "\n".join(_quarantine_command("replay", integration, dataset, 0) for integration, dataset in filters)
    return (
        f"{body} Every refused row, with the rules it failed (newest first), its source record and what the mapping "
        f'made of it:</p><pre class="command">{escape(listing)}</pre>'
        "<p>One row: <code>drymix quarantine show &lt;id&gt;</code>. After a fix of the source, mapping or suite:</p>"
        f'<pre class="command">{escape(replay)}</pre></section>'
    )


def _quarantine_command(verb: str, integration: str | None, dataset: str, rows: int) -> str:
    """`drymix quarantine list|replay` (hub/cli/errors.py) on a dataset's open rows; `--limit` covers the run's rows."""
    command = f"drymix quarantine {verb}" + (f" --integration {integration}" if integration else "") + f" --dataset {dataset}"
    return command + (f" --limit {rows}" if verb == "list" and rows > 50 else "")  # 50: the list's default limit


def _rule_anchor(dataset: str, name: str) -> str:
    return "rule-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{dataset}-{name}").strip("-")


def _display(value: Any) -> str:
    """A failing value as an analyst reads it: strings bare, missing values named, the rest as JSON."""
    if value is None:
        return "(missing)"
    if isinstance(value, str):
        return value if value.strip() else repr(value)  # a blank string must not look like an empty cell
    return json.dumps(value, default=str, ensure_ascii=False)


def _partial_sample(details: Mapping[str, Any], batch: int) -> list[tuple[str, Any]]:
    """GX's own partial sample, for a result retained without ours (imported from another process)."""
    values = list(details.get("partial_unexpected_list") or [])[:REPORT_SAMPLE_SIZE]
    positions = list(details.get("partial_unexpected_index_list") or [])
    return [
        (f"batch {batch}, row {positions[i]}" if i < len(positions) else f"batch {batch}", _json_safe(value))
        for i, value in enumerate(values)
    ]


def _rule_name(config: Any) -> str:
    """`expect_...(column)`: what the report and GX's pages call a rule."""
    return f"{config.type}({(config.kwargs or {}).get('column', '')})"


def _sample_failures(
    run_name: str, dataset: str, frame: pd.DataFrame, gx_frame: pd.DataFrame, result: ExpectationSuiteValidationResult
) -> None:
    """Keep the first failing rows of each failed row-level rule of the run (REPORT_SAMPLE_SIZE per rule) on the
    result just retained: label, value and the whole row, whose key columns the report picks (build time).

    Taken while the batch is at hand: the retained result has no row lists. Bounded per run and rule, so a
    long run keeps at most a few hundred rows; a clean batch costs one loop over its results.
    """
    record = _state.runs.get(run_name)
    if record is None or not record.results:  # evicted at once (a cap below one batch)
        return
    retained = record.results[-1]
    for number, res in enumerate(result.results):
        config = res.expectation_config
        positions = (res.result or {}).get("unexpected_index_list")
        if res.success or not positions or config is None:
            continue
        rule = (dataset, _rule_name(config))
        room = REPORT_SAMPLE_SIZE - record.sampled.get(rule, 0)
        if room <= 0:
            continue
        head = [int(p) for p in positions[:room]]
        kwargs = config.kwargs or {}
        columns = _domain_columns(kwargs)
        values = _row_values(gx_frame, columns, head, single=len(columns) == 1 and "column" in kwargs)
        labels = [str(label) for label in frame.index[head].tolist()]
        rows = gx_frame.iloc[head].to_dict("records")
        retained.samples[number] = list(zip(labels, values, rows, strict=True))
        record.sampled[rule] = record.sampled.get(rule, 0) + len(head)


def _record_key(row: Mapping[Any, Any], key_columns: tuple[str, ...]) -> str | None:
    """The row's record key (`a/b` for a composite one); None without a declared key or when the row lacks it
    (a missing key is often the very failure): the report then names the row by its batch and label."""
    if not key_columns or any(column not in row for column in key_columns):
        return None
    parts = [_json_safe(row[column]) for column in key_columns]
    return "/".join(str(p) for p in parts) if all(p not in (None, "") for p in parts) else None


def _target_resolver(quarantine: Callable[[str], QuarantineTarget | None] | None) -> Callable[[str], QuarantineTarget]:
    """`quarantine`, asked once per dataset; a dataset it does not know (or no resolver) is named bare."""
    targets: dict[str, QuarantineTarget] = {}

    def target_of(dataset: str) -> QuarantineTarget:
        if dataset not in targets:
            try:
                found = quarantine(dataset) if quarantine is not None else None
            except Exception:  # a broken registry entry must not cost the run its report
                logger.warning("Data Docs: no quarantine target for %r; the command names the dataset only", dataset, exc_info=True)
                found = None
            targets[dataset] = found or QuarantineTarget(key=(), filters=((None, dataset),))
        return targets[dataset]

    return target_of


def preload(dataset: str) -> None:
    """Import GX and register ``dataset``'s suite now, so the first batch does not pay for it.

    Meant for a background thread started while the first pages are fetched:
    it holds the runner's lock, so a :func:`validate_frame` call meanwhile
    waits for it instead of doing the work twice. Idempotent and cheap once done.
    """
    _check_dataset_name(dataset)
    with _LOCK:
        _registration(dataset, None)


def cache_info() -> dict[str, int]:
    """Counters of the cached GX state (contexts built, suites registered, retained results).

    ``cheap_evaluations``/``complete_evaluations`` count expectation evaluations
    in the BASIC first pass and with COMPLETE (second pass, or the fallback).
    """
    with _LOCK:
        return {
            "context_builds": _state.context_builds,
            "suite_registrations": _state.suite_registrations,
            "cheap_evaluations": _state.cheap_evaluations,
            "complete_evaluations": _state.complete_evaluations,
            "datasets": len(_state.registrations),
            "runs": len(_state.runs),
            "retained_results": _state.retained,
        }


def reset() -> None:
    """Drop the cached context, registrations and retained results."""
    global _state
    with _LOCK:
        _state = _State(
            context_builds=_state.context_builds,
            suite_registrations=_state.suite_registrations,
            cheap_evaluations=_state.cheap_evaluations,
            complete_evaluations=_state.complete_evaluations,
        )


# ----------------------------------------------------------------- GX plumbing


def _context() -> EphemeralDataContext:
    """The per-process ephemeral context, built on first use."""
    if _state.context is not None:
        return _state.context
    deferred.defer()  # GX's import without SciPy's stats and Altair until something uses them (~86 MB)
    # Usage statistics are off in config; the variable also covers GX versions
    # that read only the environment.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        # GX logs routine INFO chatter; keep its warnings and errors.
        gx_logger.setLevel(logging.WARNING)
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        # No implicit temp-dir "local_site": sites are added per run.
        data_docs_sites={},
        # tqdm bars per metric graph would spam worker logs.
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    _install_configuration_memo()
    _state.datasource = context.data_sources.add_pandas(DATASOURCE_NAME)
    _state.context = context
    _state.context_builds += 1
    return context


def _registration(dataset: str, suite: ExpectationSuite | None) -> _Registration:
    """Cached GX objects for ``dataset``; (re)registers when the suite changed."""
    deferred.defer()  # before build_suite() imports GX (see expectations/deferred.py)
    current = _state.registrations.get(dataset)
    if suite is None:
        if current is not None and current.from_module:
            return current
        module = importlib.import_module(f"{__package__}.{dataset}")
        hook = getattr(module, "suite_parameters", None)
        return _register(dataset, module.build_suite(), from_module=True, hook=hook)
    if current is not None and not current.from_module and current.source is suite:
        return current
    # Callers may rebuild an identical suite per call: compare content, not identity.
    fingerprint = _fingerprint(suite)
    if current is not None and not current.from_module and current.fingerprint == fingerprint:
        current.source = suite
        return current
    return _register(dataset, suite, from_module=False, hook=None, fingerprint=fingerprint)


def _register(
    dataset: str,
    suite: ExpectationSuite,
    *,
    from_module: bool,
    hook: Callable[[dt.datetime], Mapping[str, Any]] | None,
    fingerprint: str | None = None,
) -> _Registration:
    """Add (or replace) the suite, asset and validation definition for ``dataset``."""
    import great_expectations as gx

    context = _context()
    for other in _state.registrations.values():
        if other.dataset != dataset and other.suite.name == suite.name:
            raise ValueError(f"suite name {suite.name!r} is already used by dataset {other.dataset!r}")
    previous = _state.registrations.pop(dataset, None)
    if previous is not None:
        context.validation_definitions.delete(previous.validation_definition.name)
        context.suites.delete(previous.suite.name)

    datasource = _state.datasource
    assert datasource is not None  # created with the context
    try:
        asset = datasource.get_asset(dataset)
    except LookupError:
        asset = datasource.add_dataframe_asset(dataset)
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION_NAME)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)

    # Register a copy: the context assigns ids and binds the suite to itself,
    # and the caller's object must stay reusable (e.g. after reset()).
    registered = context.suites.add(
        gx.ExpectationSuite(
            name=suite.name,
            expectations=[e.copy(update={"id": None}, deep=True) for e in suite.expectations],
            meta=copy.deepcopy(suite.meta),
            notes=suite.notes,
        )
    )
    validation_definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=dataset, data=batch_definition, suite=registered)
    )
    registration = _Registration(
        dataset=dataset,
        suite=registered,
        validation_definition=validation_definition,
        fingerprint=fingerprint or _fingerprint(suite),
        from_module=from_module,
        source=suite,
        parameters_hook=hook,
        map_ids=frozenset(e.id for e in registered.expectations if e.id and isinstance(e, _map_classes())),
        groups=_column_groups(registered),
        empty_suite=gx.ExpectationSuite(name=registered.name),
    )
    _state.registrations[dataset] = registration
    _state.suite_registrations += 1
    return registration


def _validate_fast(
    registration: _Registration,
    gx_frame: pd.DataFrame,
    suite_parameters: dict[str, Any],
    run_id: RunIdentifier,
) -> ExpectationSuiteValidationResult:
    """What ``ValidationDefinition.run`` does with COMPLETE, minus storing the result.

    Two passes per column group (:func:`_validate_two_passes`) unless the
    previous batch of this dataset needed COMPLETE for too many expectations
    or an evaluation errored: then one COMPLETE pass over the whole frame, as
    before the two passes, so errors read as they always did.
    """
    definition = registration.validation_definition
    with _memoised_configurations():
        result = _validate_fast_passes(registration, gx_frame, suite_parameters, definition)
    # Same meta as ValidationDefinition.run, so Data Docs pages look identical.
    result.meta["validation_id"] = definition.id
    result.meta["checkpoint_id"] = None
    result.meta["run_id"] = run_id
    result.meta["validation_time"] = run_id.run_time
    result.meta["batch_parameters"] = {"dataframe": "<DATAFRAME>"}
    return result


def _validate_fast_passes(
    registration: _Registration,
    gx_frame: pd.DataFrame,
    suite_parameters: dict[str, Any],
    definition: ValidationDefinition,
) -> ExpectationSuiteValidationResult:
    from great_expectations.validator.v1_validator import Validator

    def validator_for(frame: pd.DataFrame, result_format: dict[str, Any]) -> Validator:
        return Validator(
            batch_definition=definition.batch_definition,
            batch_parameters={"dataframe": frame},
            result_format=result_format,
        )

    result = None
    if registration.rerun_share <= _TWO_PASS_MAX_RERUN_SHARE:
        result = _validate_two_passes(registration, gx_frame, suite_parameters, validator_for)
    if result is None:
        result = validator_for(gx_frame, _RESULT_FORMAT).validate_expectation_suite(
            definition.suite, suite_parameters
        )
        _state.complete_evaluations += len(result.results)
        needed = sum(_needs_complete(registration, r) for r in result.results)
        registration.rerun_share = needed / len(result.results) if result.results else 0.0
    return result


def _install_configuration_memo() -> None:
    """Let GX do its per-expectation bookkeeping once per validation call, not once per use.

    What GX repeats within one call, measured on the customers suite (10k-row batches, cProfile):

    * ``Expectation.configuration`` is a property that rebuilds an ``ExpectationConfiguration`` from a
      pydantic ``.dict()`` on every access, read ~30 times per expectation (dependencies, metric kwargs,
      result format, the result) on the objects GX makes for that call with ``to_domain_obj()``: ~38 % of
      the CPU. Inside :func:`_memoised_configurations` an expectation object returns the configuration it
      built first.
    * ``IDDict.to_id`` serialises a metric's kwargs to JSON and hashes them each time a
      ``MetricConfiguration`` is made (the 249 country codes of one rule, every time): ~18 % of what was
      left. Inside the same scope kwargs holding the very same value objects get the id computed first.
    * ``ExpectationConfiguration.to_domain_obj`` builds a new pydantic expectation object each time GX asks
      (``get_metric_kwargs`` asks once per metric of an expectation: ~500 objects per call for the customers
      suite), and each new object then rebuilds its configuration once more, which the memo above cannot
      share across objects: ~28 % of a call's fixed cost (cProfile, 200-row batches). Inside the same scope a
      configuration object gives the expectation it built first while its kwargs are unchanged (GX copies a
      configuration before it adds the batch id, and GX's uses only read the object).
    * Each column group's validator fingerprints its frame (``hash_pandas_dataframe``), ~10 % of what was
      left, though only the whole batch's fingerprint reaches a result (its meta, the "Batch Markers" of
      Data Docs): the groups' frames are not fingerprinted (:data:`_GROUP_FRAME`), and the whole batch's is
      :func:`_content_fingerprint`, an MD5 of each column's values as they are, not of
      ``hash_pandas_object`` (which factorizes every text column first: 1.2 s of CPU per 100k partners,
      a tenth of the sync's validation).

    * GX's map metrics ask pandas for the same column's nulls again and again (``isnull``/``notnull`` in the
      condition, the unexpected count, the values and the index list: 121 times for the customers suite's 27
      columns). For an object column pandas looks at every value's type each time, ~100 ns a value on a mapped
      batch (the strings lie all over the heap): ~1.2 s of CPU per 100k partners. Inside the same scope an
      object column's null mask is computed once per column buffer (``_isna_string_dtype``, pandas' own, kept
      with the array it was computed from, so the buffer cannot be reused meanwhile; the frames are not
      written during a call, and pandas' copy-on-write would give a written column a new buffer) and each
      caller gets its own copy.

    No GX setting does any of this, hence the wrappers. Outside our validation passes GX's own code runs as
    before. GX changes neither an expectation object nor a metric's kwargs within a call (its parameter
    substitution works on deep copies), and ``tests/expectations/test_runner_two_pass.py`` checks the result
    against GX's own, unmemoised run.
    """
    from great_expectations.core.id_dict import IDDict
    from great_expectations.execution_engine import pandas_execution_engine
    from great_expectations.expectations.expectation import Expectation

    original = Expectation.__dict__["configuration"]
    if getattr(original.fget, "memoised_by_drymix", False):
        return
    build = original.fget

    def configuration(self: Any) -> Any:
        memo = _CONFIGURATIONS.get()
        return build(self) if memo is None else _once_per_object(memo, self, build)

    configuration.memoised_by_drymix = True  # type: ignore[attr-defined]
    Expectation.configuration = property(configuration, doc=original.__doc__)  # type: ignore[method-assign,assignment]

    compute_id = IDDict.to_id

    def to_id(self: Any, id_keys: Any = None, id_ignore_keys: Any = None) -> Any:
        memo = _METRIC_IDS.get()
        if memo is None or id_keys is not None or id_ignore_keys is not None:
            return compute_id(self, id_keys, id_ignore_keys)
        key = (type(self), *((k, id(v)) for k, v in self.items()))
        hit = memo.get(key)
        if hit is not None:
            return hit[1]
        value = compute_id(self)
        memo[key] = (list(self.values()), value)  # holding the values keeps their ids theirs within the call
        return value

    IDDict.to_id = to_id  # type: ignore[method-assign]

    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    build_expectation = ExpectationConfiguration.to_domain_obj

    def to_domain_obj(self: Any) -> Any:
        memo = _DOMAIN_OBJECTS.get()
        return build_expectation(self) if memo is None else _once_per_object(memo, self, build_expectation, dict(self.kwargs))

    ExpectationConfiguration.to_domain_obj = to_domain_obj  # type: ignore[method-assign]

    fingerprint = pandas_execution_engine.hash_pandas_dataframe

    def hash_pandas_dataframe(df: Any) -> Any:
        if _CONFIGURATIONS.get() is None:
            return fingerprint(df)  # outside our validation passes GX's own
        if _GROUP_FRAME.get():
            return None
        try:
            return _content_fingerprint(df)
        except (TypeError, ValueError):  # values neither text nor plain arrays: GX's own way
            return fingerprint(df)

    pandas_execution_engine.hash_pandas_dataframe = hash_pandas_dataframe

    from pandas.core.dtypes import missing as pandas_missing

    null_mask = getattr(pandas_missing, "_isna_string_dtype", None)
    if null_mask is None:  # another pandas: its own way, unmemoised
        return

    def _isna_string_dtype(values: Any) -> Any:
        memo = _NULL_MASKS.get()
        if memo is None or values.ndim != 1 or values.dtype != object:
            return null_mask(values)
        key = (values.__array_interface__["data"][0], values.shape, values.strides)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = (values, null_mask(values))  # holding the array keeps its buffer from being reused
        return hit[1].copy()

    pandas_missing._isna_string_dtype = _isna_string_dtype


def _once_per_object(memo: dict[int, tuple[Any, Any, Any]], obj: Any, build: Callable[[Any], Any], state: Any = None) -> Any:
    """`build(obj)` once per object within a call, again if its `state` (a copy, compared by value) changed."""
    hit = memo.get(id(obj))
    if hit is not None and hit[0] is obj and hit[1] == state:
        return hit[2]
    value = build(obj)
    memo[id(obj)] = (obj, state, value)  # holding obj keeps its id from being reused within the call
    return value


def _content_fingerprint(df: pd.DataFrame) -> str:
    """A batch's data fingerprint for GX's batch markers: MD5 over its labels and each column's values.

    Text columns are joined as they are (anything else by its `repr`, a 0x1F between values), other columns
    go by their bytes. TypeError or ValueError for values that cannot be read that way.
    """
    import numpy as np

    digest = hashlib.md5(usedforsecurity=False)
    digest.update(repr((list(df.columns), df.shape)).encode())
    for values in (df.index.to_numpy(), *(df[c].array for c in df.columns)):
        raw = values._ndarray if hasattr(values, "_ndarray") else np.asarray(values)
        if raw.dtype == object:
            text = "\x1f".join([v if v.__class__ is str else repr(v) for v in raw.tolist()])
            digest.update(text.encode("utf-8", "surrogatepass"))
        else:
            digest.update(np.ascontiguousarray(raw).view(np.uint8).tobytes())
        digest.update(b"\x1e")
    return digest.hexdigest()


@contextmanager
def _memoised_configurations() -> Iterator[None]:
    token, ids, masks = _CONFIGURATIONS.set({}), _METRIC_IDS.set({}), _NULL_MASKS.set({})
    objects = _DOMAIN_OBJECTS.set({})
    try:
        yield
    finally:
        _DOMAIN_OBJECTS.reset(objects)
        _NULL_MASKS.reset(masks)
        _METRIC_IDS.reset(ids)
        _CONFIGURATIONS.reset(token)


@contextmanager
def _group_frame() -> Iterator[None]:
    token = _GROUP_FRAME.set(True)
    try:
        yield
    finally:
        _GROUP_FRAME.reset(token)


def _validate_two_passes(
    registration: _Registration,
    gx_frame: pd.DataFrame,
    suite_parameters: dict[str, Any],
    validator_for: Callable[[pd.DataFrame, dict[str, Any]], Any],
) -> ExpectationSuiteValidationResult | None:
    """The suite with BASIC, then COMPLETE only where BASIC is not already complete.

    Each column group runs on a frame of just the columns it reads: GX's
    pandas helpers filter the whole batch with a row mask per expectation and
    metric, so a 1-3 column frame instead of the 29-column one saves most of
    that copying (about a fifth of the customers suite's CPU before). Pass 2
    runs on the group's validator, whose metric cache still holds pass 1's
    conditions and counts, so it computes little beyond the row indices.
    Results come back in GX's order (grouped by column, in suite order).
    ``None`` when a column is missing or an expectation errored.
    """
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    present = set(gx_frame.columns)
    if not all(group.columns is None or present.issuperset(group.columns) for group in registration.groups):
        return None  # a missing column: GX reports it from the whole frame
    whole = validator_for(gx_frame, _CHEAP_RESULT_FORMAT)
    # GX's suite-level result for the whole batch (meta, batch id), evaluating nothing.
    result: ExpectationSuiteValidationResult = whole.validate_expectation_suite(
        registration.empty_suite, suite_parameters
    )
    results: list[Any] = []
    reruns = 0
    for group in registration.groups:
        validator = (
            whole
            if group.columns is None
            else validator_for(gx_frame[list(group.columns)], _CHEAP_RESULT_FORMAT)
        )
        # GX's public API validates one expectation or a whole suite; the method
        # both use takes a list, so a group runs as one metric graph. A group's own
        # frame is not fingerprinted (its batch is built here, on first use).
        with _group_frame() if validator is not whole else nullcontext():
            found = validator._validate_expectation_configs(
                expectation_configs=[e.configuration for e in group.expectations],
                expectation_parameters=suite_parameters,
            )
        _state.cheap_evaluations += len(found)
        rerun = _complete_clean_results(registration, found)
        if rerun is None:
            return None
        if rerun:
            reruns += len(rerun)
            validator.result_format = _RESULT_FORMAT
            complete = validator._validate_expectation_configs(
                expectation_configs=[e.configuration for e in group.expectations if e.id in rerun],
                expectation_parameters=suite_parameters,
            )
            validator.result_format = _CHEAP_RESULT_FORMAT
            _state.complete_evaluations += len(complete)
            found = _merged(found, complete)
        results.extend(found)
    registration.rerun_share = reruns / len(results) if results else 0.0
    statistics = calc_validation_statistics(results)
    result.results = results
    result.success = statistics.success
    result.statistics = {
        "evaluated_expectations": statistics.evaluated_expectations,
        "successful_expectations": statistics.successful_expectations,
        "unsuccessful_expectations": statistics.unsuccessful_expectations,
        "success_percent": statistics.success_percent,
    }
    return result


def _needs_complete(registration: _Registration, res: Any) -> bool:
    """Whether a result is more than a clean map result, which COMPLETE differs from only by empty lists."""
    config = res.expectation_config
    details = res.result
    return not (
        config is not None
        and config.id in registration.map_ids
        and res.success
        and details
        and details.get("unexpected_count") == 0
        and not _exception_messages(res.exception_info)
    )


def _complete_clean_results(registration: _Registration, results: list[Any]) -> set[str] | None:
    """Turn pass 1's clean map results into COMPLETE ones; return the ids pass 2 must run.

    ``None`` when an expectation errored.
    """
    rerun: set[str] = set()
    for res in results:
        config = res.expectation_config
        if config is None or config.id is None or _exception_messages(res.exception_info):
            return None
        if _needs_complete(registration, res):
            rerun.add(config.id)
        else:
            for key in _COMPLETE_ONLY_KEYS:
                res.result.setdefault(key, [])
    return rerun


def _merged(found: list[Any], complete: list[Any]) -> list[Any]:
    """Pass 1's results with pass 2's COMPLETE ones in their places."""
    by_id = {r.expectation_config.id: r for r in complete if r.expectation_config is not None}
    expected = {r.expectation_config.id for r in found if r.expectation_config is not None}
    if len(by_id) != len(complete) or not by_id.keys() <= expected:
        raise RuntimeError("GX returned results that do not match the expectations re-run with COMPLETE")
    return [by_id.get(r.expectation_config.id, r) if r.expectation_config is not None else r for r in found]


def _column_groups(suite: ExpectationSuite) -> tuple[_Group, ...]:
    """The suite's expectations grouped by column in first-seen order, as GX orders its results.

    GX's ``Validator.process_expectations_for_validation`` groups by the
    ``column`` kwarg (everything else in one group); keeping that order keeps
    the merged result identical to a whole-suite run. A group's frame holds its
    column and the columns its row conditions read; an unreadable condition
    gives the group the whole frame.
    """
    grouped: dict[str | None, list[Any]] = {}
    for expectation in suite.expectations:
        column = expectation.configuration.kwargs.get("column")
        grouped.setdefault(column if isinstance(column, str) else None, []).append(expectation)
    groups = []
    for column, members in grouped.items():
        columns: set[str] | None = {column} if column is not None else None
        for expectation in members:
            condition = _condition_columns(expectation.configuration.kwargs.get("row_condition"))
            columns = None if columns is None or condition is None else columns | condition
        groups.append(_Group(tuple(sorted(columns)) if columns is not None else None, tuple(members)))
    return tuple(groups)


def _condition_columns(condition: Any) -> set[str] | None:
    """Columns a GX row condition reads; ``None`` when it cannot tell (query strings, new kinds)."""
    if condition is None:
        return set()
    if not isinstance(condition, Mapping):
        as_dict = getattr(condition, "dict", None)  # a Condition model rather than its dict form
        if not callable(as_dict):
            return None
        condition = as_dict()
    kind = condition.get("type")
    if kind in ("comparison", "nullity"):
        name = (condition.get("column") or {}).get("name")
        return {name} if isinstance(name, str) else None
    if kind in ("and", "or"):
        columns: set[str] = set()
        for part in condition.get("conditions") or ():
            found = _condition_columns(part)
            if found is None:
                return None
            columns |= found
        return columns
    return None


def _map_classes() -> tuple[type, ...]:
    """GX's map expectation bases: their results carry per-row lists."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    return (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)


def _validate_with_docs(
    registration: _Registration,
    gx_frame: pd.DataFrame,
    suite_parameters: dict[str, Any],
    run_id: RunIdentifier,
    docs_root: Path,
) -> tuple[
    ExpectationSuiteValidationResult,
    ValidationResultIdentifier,
    ExpectationSuiteValidationResult,
    str,
]:
    """Validate through a Checkpoint whose UpdateDataDocsAction renders this result.

    Returns the full result, its store key, the compact copy now stored under
    that key, and the path of the rendered validation page.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    context = _context()
    assert run_id.run_name is not None
    site_name, site_dir = _site_for(run_id.run_name, docs_root)
    context.add_data_docs_site(site_name=site_name, site_config=_site_config(site_dir))
    try:
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{registration.dataset}-docs-{uuid.uuid4().hex}",
                validation_definitions=[registration.validation_definition],
                actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[site_name])],
                result_format=_RESULT_FORMAT,
            )
        )
        try:
            checkpoint_result = checkpoint.run(
                batch_parameters={"dataframe": gx_frame},
                expectation_parameters=suite_parameters,
                run_id=run_id,
            )
        finally:
            context.checkpoints.delete(checkpoint.name)
        key, result = next(iter(checkpoint_result.run_results.items()))
        urls = context.get_docs_sites_urls(resource_identifier=key, site_names=[site_name])
    finally:
        context.delete_data_docs_site(site_name)
    # The checkpoint stored the COMPLETE result; keep only the compact copy.
    compact = _compact(result)
    context.validation_results_store.set(key, compact)
    page = Path(unquote(urlparse(urls[0]["site_url"]).path))
    if not page.is_file():
        raise RuntimeError(f"GX did not write the Data Docs page {page}")
    make_site_offline(site_dir)
    _mark_site(site_dir, run_id.run_name)
    return result, key, compact, str(page)


def _compact(result: ExpectationSuiteValidationResult) -> ExpectationSuiteValidationResult:
    """Copy of ``result`` without per-row lists (for retention and Data Docs)."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )

    results = [
        ExpectationValidationResult(
            success=r.success,
            expectation_config=r.expectation_config,
            result={k: v for k, v in (r.result or {}).items() if k not in _HEAVY_RESULT_KEYS},
            meta=r.meta,
            exception_info=r.exception_info,
        )
        for r in result.results
    ]
    return ExpectationSuiteValidationResult(
        success=result.success,
        results=results,
        suite_name=result.suite_name,
        suite_parameters=result.suite_parameters,
        statistics=dict(result.statistics),
        meta=dict(result.meta),
        batch_id=result.batch_id,
    )


def _retain(
    run_name: str,
    suite_name: str,
    key: ValidationResultIdentifier,
    result: ExpectationSuiteValidationResult,
    *,
    stored: bool,
    dataset: str | None = None,
    samples: dict[int, list[_Sample]] | None = None,
) -> None:
    """Keep a compact result for the run's Data Docs (with failing rows already sampled from it, `samples`), evicting
    the oldest over the cap."""
    record = _state.runs.get(run_name)
    if record is None:
        record = _state.runs[run_name] = _RunRecord(run_name=run_name)
    _state.runs.move_to_end(run_name)
    record.suites.add(suite_name)
    record.results.append(_RetainedResult(key=key, result=result, stored=stored, samples=dict(samples or {}), dataset=dataset))
    _state.retained += 1
    while _state.retained > MAX_RETAINED_RESULTS:
        oldest_name, oldest = next(iter(_state.runs.items()))
        dropped = oldest.results.pop(0)
        _state.retained -= 1
        if dropped.stored and _state.context is not None:
            _state.context.validation_results_store.remove_key(dropped.key)
        if not oldest.results:
            del _state.runs[oldest_name]
        if not oldest.truncated:
            oldest.truncated = True
            logger.warning(
                "Data Docs: dropping retained results of run %r (cap %d reached); "
                "its report will be incomplete",
                oldest_name,
                MAX_RETAINED_RESULTS,
            )


def _result_key(suite_name: str, run_id: RunIdentifier, batch_id: str | None) -> ValidationResultIdentifier:
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    return ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
        run_id=run_id,
        batch_identifier=batch_id or "batch",
    )


def _next_run_id(run_name: str | None, now: dt.datetime) -> RunIdentifier:
    """RunIdentifier with a run_time strictly increasing in this process.

    Result keys are (suite, run name, run time, batch id) and the batch id of
    a dataframe asset is constant, so equal times would overwrite results.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    run_time = now
    if _state.last_run_time is not None and run_time <= _state.last_run_time:
        run_time = _state.last_run_time + dt.timedelta(microseconds=1)
    _state.last_run_time = run_time
    return RunIdentifier(run_name=run_name, run_time=run_time)


def _site_for(run_name: str, docs_root: Path) -> tuple[str, Path]:
    """Site name and directory of one run's Data Docs site."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip(".-") or "run"
    site_dir = docs_root / slug
    digest = hashlib.sha1(str(site_dir).encode()).hexdigest()[:10]
    return f"drymix-{slug}-{digest}", site_dir


def _site_config(site_dir: Path) -> DataDocsSiteConfigTypedDict:
    config = {
        "class_name": "SiteBuilder",
        # Analysts read these pages; GX's "how to" call-to-action buttons are noise.
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(site_dir),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    # GX's TypedDict omits the (supported) show_how_to_buttons key.
    return cast("DataDocsSiteConfigTypedDict", config)


def _mark_site(site_dir: Path, run_name: str) -> None:
    """Tag a site directory as ours (for pruning) and record when it was built."""
    (site_dir / _SITE_MARKER).write_text(json.dumps({"run_name": run_name}) + "\n")


def _prune_sites(docs_root: Path, keep: int, *, current: Path) -> None:
    """Delete run sites beyond the newest ``keep`` (never ``current``)."""
    sites = [d for d in docs_root.iterdir() if d.is_dir() and (d / _SITE_MARKER).is_file()]
    sites.sort(key=lambda d: (d == current, (d / _SITE_MARKER).stat().st_mtime), reverse=True)
    for stale in sites[keep:]:
        shutil.rmtree(stale, ignore_errors=True)
        logger.info("Data Docs: pruned run site %s", stale)


def _docs_root(docs_dir: str | Path | None) -> Path:
    # Absolute: the ephemeral context has no root directory to resolve against.
    return Path(docs_dir if docs_dir is not None else DEFAULT_DOCS_DIR).resolve()


def _fingerprint(suite: ExpectationSuite) -> str:
    """Content hash of a suite (ids excluded) to detect a changed suite."""
    payload = {
        "name": suite.name,
        "expectations": [
            {k: v for k, v in e.configuration.to_json_dict().items() if k != "id"} for e in suite.expectations
        ],
        "meta": suite.meta,
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def _check_dataset_name(dataset: str) -> None:
    # The name becomes a module path (expectations.<dataset>), so keep it tame.
    if not _DATASET_NAME.match(dataset) or dataset == "runner":
        raise ValueError(f"invalid dataset name {dataset!r}")


def _is_positional(index: pd.Index) -> bool:
    import pandas as pd

    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


# ------------------------------------------------------------ result → outcome


def _split(
    dataset: str,
    frame: pd.DataFrame,
    gx_frame: pd.DataFrame,
    result: ExpectationSuiteValidationResult,
) -> ValidationOutcome:
    """Turn a COMPLETE suite result into the valid/invalid split and reports."""
    # A bad batch allocates ~10^5 RowFailures; with GX's ~350k live objects
    # each triggered full collection costs ~100 ms, so pause the cyclic GC
    # (nothing here creates cycles) and let it run afterwards.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _split_rows(dataset, frame, gx_frame, result)
    finally:
        if gc_was_enabled:
            gc.enable()


def _split_rows(
    dataset: str,
    frame: pd.DataFrame,
    gx_frame: pd.DataFrame,
    result: ExpectationSuiteValidationResult,
) -> ValidationOutcome:
    """Body of :func:`_split`."""
    import numpy as np

    errors: list[str] = []
    rows = len(frame)
    critical = np.zeros(rows, dtype=bool)
    flagged = np.zeros(rows, dtype=bool)  # any failure, warnings included
    by_position: dict[int, list[RowFailure]] = {}
    expectation_results: list[dict[str, Any]] = []
    success = True

    for res in result.results:
        config = res.expectation_config
        if config is None:  # GX always attaches it; guard for the type checker
            errors.append("a result without expectation configuration")
            continue
        kwargs = dict(config.kwargs)
        severity = _severity_of(config)
        rule_id = (config.meta or {}).get("rule_id")
        columns = _domain_columns(kwargs)
        column = columns[0] if len(columns) == 1 and "column" in kwargs else None
        messages = _exception_messages(res.exception_info)
        if messages:
            errors.extend(f"{config.type}({', '.join(columns) or 'table'}): {m}" for m in messages)
        details = res.result or {}
        index_list = details.get("unexpected_index_list")
        row_level = "unexpected_index_list" in details
        unexpected_count = details.get("unexpected_count")
        expectation_results.append(
            {
                "type": config.type,
                "column": column,
                "columns": columns,
                "severity": severity,
                "rule_id": rule_id,
                "success": bool(res.success),
                "row_level": row_level,
                "element_count": details.get("element_count"),
                "unexpected_count": unexpected_count,
                "unexpected_percent": _json_safe(details.get("unexpected_percent")),
                "observed_value": _json_safe(details.get("observed_value")),
                "exception": "; ".join(messages) or None,
            }
        )
        if not res.success and severity == CRITICAL:
            success = False
        if not index_list:
            continue
        positions = np.asarray(index_list, dtype=np.int64)
        if unexpected_count is not None and len(positions) != unexpected_count:
            # GX truncated the list: splitting would let failing rows through.
            errors.append(
                f"{config.type}({', '.join(columns)}): {len(positions)} row indices "
                f"for {unexpected_count} unexpected values"
            )
            continue
        rule_kwargs = _json_safe({k: v for k, v in kwargs.items() if k not in _NON_RULE_KWARGS})
        values = _row_values(gx_frame, columns, positions, single=column is not None)
        expectation_type = config.type
        # Tight loop: a bad batch can yield 10^5 failures, so no per-row lookups.
        for position, value in zip(positions.tolist(), values, strict=True):
            failure = RowFailure(expectation_type, column, rule_kwargs, value, severity, rule_id)
            bucket = by_position.get(position)
            if bucket is None:
                by_position[position] = [failure]
            else:
                bucket.append(failure)
        flagged[positions] = True
        if severity == CRITICAL:
            critical[positions] = True

    if errors:
        # One missing column fails several metrics per expectation: dedupe.
        raise ValidationRunError(dataset, list(dict.fromkeys(errors)))

    # Positional order, labels looked up in one vectorised step.
    flagged_positions = np.flatnonzero(flagged)
    labels = frame.index[flagged_positions].tolist()
    failures = {
        label: by_position[position]
        for label, position in zip(labels, flagged_positions.tolist(), strict=True)
    }
    invalid_rows = int(critical.sum())
    stats = dict(result.statistics)
    statistics = {
        "evaluated_expectations": stats.get("evaluated_expectations"),
        "successful_expectations": stats.get("successful_expectations"),
        "unsuccessful_expectations": stats.get("unsuccessful_expectations"),
        "success_percent": _json_safe(stats.get("success_percent")),
        "rows": rows,
        "valid_rows": rows - invalid_rows,
        "invalid_rows": invalid_rows,
        "warning_rows": int((flagged & ~critical).sum()),
        "valid_percent": 100.0 if rows == 0 else 100.0 * (rows - invalid_rows) / rows,
    }
    return ValidationOutcome(
        dataset=dataset,
        valid=frame[~critical],
        invalid=frame[critical],
        failures=failures,
        statistics=statistics,
        expectation_results=expectation_results,
        success=success,
    )


def _row_values(gx_frame: pd.DataFrame, columns: list[str], positions: Any, *, single: bool) -> list[Any]:
    """JSON-safe offending values at ``positions`` (dicts for multi-column rules)."""
    if not columns:
        return [None] * len(positions)
    if single:
        return [_json_safe(v) for v in gx_frame[columns[0]].iloc[positions].tolist()]
    picked = gx_frame[columns].iloc[positions]
    return [
        {c: _json_safe(v) for c, v in zip(columns, row, strict=True)}
        for row in picked.itertuples(index=False, name=None)
    ]


def _domain_columns(kwargs: Mapping[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs and "column_B" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    return list(kwargs.get("column_list") or [])


def _severity_of(config: Any) -> str:
    severity = getattr(config, "severity", None)
    if severity is None:
        return CRITICAL
    return str(getattr(severity, "value", severity)).lower()


def _exception_messages(info: Any) -> list[str]:
    """Messages of raised exceptions in GX's various exception_info shapes."""
    if not info:
        return []
    if hasattr(info, "raised_exception"):  # ExceptionInfo
        return [str(info.exception_message)] if info.raised_exception else []
    if isinstance(info, Mapping):
        if "raised_exception" in info:
            return [str(info.get("exception_message"))] if info["raised_exception"] else []
        messages: list[str] = []
        for nested in info.values():  # keyed by metric id
            messages.extend(_exception_messages(nested))
        return messages
    return []


def _json_safe(value: Any) -> Any:
    """Convert numpy/pandas/datetime/GX values into JSON-serialisable Python."""
    if value is None or type(value) in (str, bool, int):  # the common case, first
        return value
    if isinstance(value, float):  # includes numpy.float64
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, Enum):
        return int(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        # pandas NaT is a datetime subclass whose isoformat() is "NaT".
        return None if value != value else value.isoformat()
    if isinstance(value, dt.timedelta):
        return None if value != value else value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return _json_safe(value.value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_json_safe(v) for v in items]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_safe(dataclasses.asdict(value))
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _json_safe(item())
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return _json_safe(tolist())
    as_dict = getattr(value, "dict", None)  # pydantic models, e.g. GX row conditions
    if callable(as_dict):
        try:
            return _json_safe(as_dict())
        except TypeError:
            pass
    import pandas as pd

    if value is pd.NA:
        return None
    return str(value)


def export_run(run_name: str | None) -> list[tuple[Any, ...]]:
    """This process's retained results of `run_name` (suite, run time, batch id, compact result, the first failing
    rows sampled per rule, dataset), to hand to the process that builds the run's Data Docs: a run whose batches were
    validated in several processes (the sync engine's partitions, tasks/partitions.py) still gets ONE report naming
    every failing row, by its record key as a one-process run names it."""
    record = _state.runs.get(run_name) if run_name else None
    if record is None:
        return []
    return [
        (str(r.key.expectation_suite_identifier.name), r.key.run_id.run_time, r.key.batch_identifier, r.result,
         dict(r.samples), r.dataset)
        for r in record.results
    ]


def import_run(run_name: str, exported: list[tuple[Any, ...]]) -> int:
    """Retain results another process exported (`export_run`) under `run_name`, each under a fresh key of this process
    (run times of two processes can be equal, and equal keys would overwrite each other's pages); how many.
    An export of four fields (no samples, no dataset) is still read: its report rows fall back to GX's own sample."""
    for suite_name, run_time, batch_id, result, *rest in exported:
        samples, dataset = (*rest, {}, None)[:2]
        key = _result_key(suite_name, _next_run_id(run_name, run_time), batch_id)
        _retain(run_name, suite_name, key, result, stored=False, dataset=dataset, samples=samples)
    return len(exported)

"""The validation runner: splitting, reporting, caching and Data Docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from expectations import runner
from expectations.runner import RowFailure, ValidationRunError, build_data_docs, validate_frame
from tests.expectations.conftest import make_customer_frame

if TYPE_CHECKING:
    import great_expectations as gx

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _custom_suite(name: str, *, extra: list[Any] | None = None) -> gx.ExpectationSuite:
    """A small ad-hoc suite (tests may import GX; project code goes through the runner)."""
    import great_expectations as gx

    gxe = gx.expectations
    expectations = [
        gxe.ExpectColumnValuesToNotBeNull(column="code"),
        gxe.ExpectColumnValuesToMatchRegex(column="code", regex=r"^[A-Z]{3}\Z"),
        *(extra or []),
    ]
    return gx.ExpectationSuite(name=name, expectations=expectations)


def test_importing_the_runner_does_not_import_great_expectations() -> None:
    code = (
        "import sys, expectations.runner, expectations.customers\n"
        "assert 'great_expectations' not in sys.modules, 'GX imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr


def test_context_and_suite_are_built_once_and_reused() -> None:
    runner.reset()
    before = runner.cache_info()

    for start in (0, 100, 200, 300):
        outcome = validate_frame("customers", make_customer_frame(50, start=start))
        assert outcome.invalid.empty

    after = runner.cache_info()
    assert after["context_builds"] - before["context_builds"] == 1
    assert after["suite_registrations"] - before["suite_registrations"] == 1


def test_equal_custom_suite_is_reused_and_changed_one_re_registered() -> None:
    frame = pd.DataFrame({"code": ["ABC", "abc", None]})
    validate_frame("codes", frame, suite=_custom_suite("codes"))
    registrations = runner.cache_info()["suite_registrations"]

    again = validate_frame("codes", frame, suite=_custom_suite("codes"))  # rebuilt, same content
    assert runner.cache_info()["suite_registrations"] == registrations
    assert sorted(again.invalid.index) == [1, 2]

    import great_expectations as gx

    stricter = _custom_suite(
        "codes",
        extra=[gx.expectations.ExpectColumnValuesToBeInSet(column="code", value_set=["XYZ"])],
    )
    changed = validate_frame("codes", frame, suite=stricter)
    assert runner.cache_info()["suite_registrations"] == registrations + 1
    assert sorted(changed.invalid.index) == [0, 1, 2]


def test_more_than_a_thousand_failures_are_all_split_exactly() -> None:
    frame = make_customer_frame(6000)
    rng = np.random.default_rng(7)
    bad_email = np.sort(rng.choice(6000, size=2500, replace=False))
    bad_country = np.arange(0, 6000, 4)  # 1500 rows, overlapping the emails
    frame.loc[bad_email, "email"] = "broken-address"
    frame.loc[bad_country, "country"] = "QQ"

    outcome = validate_frame("customers", frame)

    expected = set(bad_email.tolist()) | set(bad_country.tolist())
    assert len(expected) > 1000
    assert set(outcome.invalid.index) == expected
    assert set(outcome.valid.index) == set(range(6000)) - expected
    assert len(outcome.valid) + len(outcome.invalid) == 6000
    for row in bad_email:
        assert ("expect_column_values_to_match_regex", "email") in {
            (f.expectation, f.column) for f in outcome.failures[row]
        }
    by_column = {r["column"]: r for r in outcome.expectation_results if not r["success"]}
    assert by_column["email"]["unexpected_count"] == 2500
    assert by_column["country"]["unexpected_count"] == 1500
    assert outcome.statistics["invalid_rows"] == len(expected)


def test_every_row_failing_a_large_batch_is_split() -> None:
    frame = make_customer_frame(20_000)
    frame["mapping_errors"] = "postal_code: unparsable"

    outcome = validate_frame("customers", frame)

    assert outcome.valid.empty
    assert len(outcome.invalid) == 20_000
    assert len(outcome.failures) == 20_000


def test_index_labels_are_kept_for_any_integer_index() -> None:
    frame = make_customer_frame(30)
    frame.index = pd.Index(np.arange(30)[::-1] * 10 + 5_000)  # descending, offset, gaps
    bad = [frame.index[3], frame.index[17]]
    frame.loc[bad[0], "email"] = "no-at-sign"
    frame.loc[bad[1], "phone"] = "12345"

    outcome = validate_frame("customers", frame)

    assert sorted(outcome.invalid.index) == sorted(bad)
    assert set(outcome.failures) == set(bad)
    assert outcome.failures[bad[0]][0].value == "no-at-sign"
    assert outcome.failures[bad[1]][0].value == "12345"
    pd.testing.assert_frame_equal(outcome.valid, frame.drop(index=bad))
    pd.testing.assert_frame_equal(outcome.invalid, frame.loc[outcome.invalid.index])


def test_non_unique_index_is_rejected() -> None:
    frame = make_customer_frame(4)
    frame.index = [1, 1, 2, 3]

    with pytest.raises(ValueError, match="unique"):
        validate_frame("customers", frame)


def test_failures_carry_expectation_column_kwargs_and_json_safe_value() -> None:
    frame = make_customer_frame(12)
    frame.loc[2, "email"] = "bad@"
    frame.loc[4, "sap_changed_at"] = pd.Timestamp("2100-01-01T00:00:00Z")

    outcome = validate_frame("customers", frame)

    (email,) = outcome.failures[2]
    assert email == RowFailure(
        expectation="expect_column_values_to_match_regex",
        column="email",
        kwargs={"regex": email.kwargs["regex"]},
        value="bad@",
        severity="critical",
        rule_id="customers.email.format",
    )
    assert "@" in email.kwargs["regex"]
    (future,) = outcome.failures[4]
    assert future.value == "2100-01-01T00:00:00+00:00"
    assert set(future.kwargs) == {"max_value"}
    # Everything handed to the flow can go straight into a quarantine table.
    json.dumps({str(k): [vars_of(f) for f in v] for k, v in outcome.failures.items()})
    json.dumps(outcome.expectation_results)
    json.dumps(outcome.statistics)


def vars_of(failure: RowFailure) -> dict[str, object]:
    """Dataclass fields of a RowFailure (slots dataclasses have no __dict__)."""
    return {name: getattr(failure, name) for name in RowFailure.__dataclass_fields__}


def test_statistics_and_expectation_results_describe_the_batch() -> None:
    frame = make_customer_frame(20)
    frame.loc[[1, 2], "country"] = "XX"

    outcome = validate_frame("customers", frame)

    stats = outcome.statistics
    assert stats["rows"] == 20
    assert stats["invalid_rows"] == 2
    assert stats["valid_rows"] == 18
    assert stats["valid_percent"] == pytest.approx(90.0)
    assert stats["evaluated_expectations"] == len(outcome.expectation_results)
    assert stats["unsuccessful_expectations"] == 1
    country = next(r for r in outcome.expectation_results if r["rule_id"] == "customers.country.iso3166")
    assert country["success"] is False
    assert country["unexpected_count"] == 2
    assert country["unexpected_percent"] == pytest.approx(10.0)
    assert {"type", "column", "success", "unexpected_count", "unexpected_percent"} <= set(country)


def test_empty_frame_gives_empty_valid_and_invalid() -> None:
    frame = make_customer_frame(0)

    outcome = validate_frame("customers", frame)

    assert outcome.valid.empty and outcome.invalid.empty
    assert list(outcome.valid.columns) == list(frame.columns)
    assert list(outcome.invalid.columns) == list(frame.columns)
    assert outcome.failures == {}
    assert outcome.statistics["rows"] == 0


def test_warning_severity_and_table_level_rules_never_quarantine() -> None:
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity

    gxe = gx.expectations
    suite = _custom_suite(
        "codes_severity",
        extra=[
            gxe.ExpectColumnValuesToBeInSet(
                column="code", value_set=["ABC"], severity=FailureSeverity.WARNING
            ),
            gxe.ExpectTableRowCountToBeBetween(max_value=2),
        ],
    )
    frame = pd.DataFrame({"code": ["ABC", "XYZ", "abc", "DEF"]}, index=[10, 11, 12, 13])

    outcome = validate_frame("codes_severity", frame, suite=suite)

    assert list(outcome.invalid.index) == [12]  # only the critical regex rule
    assert sorted(outcome.warnings) == [11, 12, 13]
    assert {f.severity for f in outcome.failures[11]} == {"warning"}
    assert not outcome.success  # the critical row-count rule failed...
    assert [r["type"] for r in outcome.failed_table_expectations] == [
        "expect_table_row_count_to_be_between"
    ]  # ...but quarantined nobody


def test_expectation_that_cannot_run_raises() -> None:
    frame = make_customer_frame(5).drop(columns=["gstin"])

    with pytest.raises(ValidationRunError, match="gstin"):
        validate_frame("customers", frame)


def test_extra_parameters_override_suite_parameters() -> None:
    frame = make_customer_frame(5)
    cutoff = frame.loc[2, "sap_changed_at"]

    outcome = validate_frame("customers", frame, parameters={"max_sap_changed_at": cutoff})

    assert sorted(outcome.invalid.index) == sorted(frame.index[frame["sap_changed_at"] > cutoff])


def test_unknown_or_unsafe_dataset_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid dataset"):
        validate_frame("../etc", make_customer_frame(1))
    with pytest.raises(ModuleNotFoundError):
        validate_frame("no_such_dataset", make_customer_frame(1))


def test_no_progress_bars_on_the_console(capfd: pytest.CaptureFixture[str]) -> None:
    frame = make_customer_frame(10)
    frame.loc[0, "email"] = "x"

    validate_frame("customers", frame)

    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out
    assert "it/s" not in captured.err


def test_concurrent_calls_are_serialised_safely() -> None:
    outcomes: dict[int, runner.ValidationOutcome] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            frame = make_customer_frame(40, start=worker * 1000)
            frame.loc[worker, "email"] = "bad"
            outcomes[worker] = validate_frame("customers", frame)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for worker, outcome in outcomes.items():
        assert list(outcome.invalid.index) == [worker]


def test_build_docs_writes_a_page_with_the_suite_name(docs_dir: Path) -> None:
    frame = make_customer_frame(15)
    frame.loc[3, "email"] = "broken"

    outcome = validate_frame("customers", frame, build_docs=True, docs_dir=docs_dir)

    assert list(outcome.invalid.index) == [3]
    assert outcome.data_docs_path is not None
    page = Path(outcome.data_docs_path)
    assert page.is_file() and page.suffix == ".html"
    assert page.is_relative_to(docs_dir.resolve())
    html = page.read_text()
    assert "customers" in html
    assert "must match this regular expression" in html
    assert outcome.run_name is not None
    assert (docs_dir.resolve() / outcome.run_name / "index.html").is_file()


def test_per_run_report_lists_every_batch_of_that_run_only(docs_dir: Path) -> None:
    for batch in range(3):
        frame = make_customer_frame(20, start=batch * 20)
        frame.loc[batch, "country"] = "XX"
        assert validate_frame("customers", frame, run_name="sync-A").data_docs_path is None
    validate_frame("customers", make_customer_frame(5), run_name="sync-B")

    report_a = Path(build_data_docs(docs_dir, run_name="sync-A"))
    report_b = Path(build_data_docs(docs_dir, run_name="sync-B"))

    assert report_a == docs_dir.resolve() / "sync-A" / "report.html"
    index_a, index_b = report_a.with_name("index.html"), report_b.with_name("index.html")
    assert index_a.is_file() and index_b.is_file()
    # The offline report lists this run's three batches, what failed, and links every GX page.
    report = report_a.read_text()
    assert report.count("<td>1</td>") >= 1 and "sync-B" not in report
    assert "expect_column_values_to_be_in_set(country)" in report
    for link in re.findall(r'href="(validations/[^"]+)"', report):
        assert (report_a.parent / link).is_file()
    assert len(re.findall(r'href="(validations/[^"]+)"', report)) == 3
    html_a = index_a.read_text()
    assert "customers" in html_a
    assert "sync-B" not in html_a
    pages_a = sorted((index_a.parent / "validations" / "customers").rglob("*.html"))
    pages_b = sorted((index_b.parent / "validations" / "customers").rglob("*.html"))
    assert len(pages_a) == 3 and len(pages_b) == 1
    assert all("sync-A" in str(p) for p in pages_a)
    assert (index_a.parent / "expectations" / "customers.html").is_file()
    # The suite page shows the analyst notes.
    suite_page = (index_a.parent / "expectations" / "customers.html").read_text()
    assert "Every customer needs its SAP Business Partner number." in suite_page


def test_build_data_docs_defaults_to_the_latest_run_and_is_repeatable(docs_dir: Path) -> None:
    validate_frame("customers", make_customer_frame(5), run_name="sync-latest")

    first = build_data_docs(docs_dir)
    validate_frame("customers", make_customer_frame(5, start=5), run_name="sync-latest")
    second = build_data_docs(docs_dir)

    assert first == second
    assert first.endswith("sync-latest/report.html")
    pages = list((Path(first).parent / "validations").rglob("*.html"))
    assert len(pages) == 2


def test_run_without_results_still_gets_a_report(docs_dir: Path) -> None:
    validate_frame("customers", make_customer_frame(2))  # registers the suite

    report = Path(build_data_docs(docs_dir, run_name="nothing-changed"))

    assert report.is_file() and report.with_name("index.html").is_file()
    assert "customers" in report.read_text()


def test_keep_runs_prunes_only_older_run_sites(docs_dir: Path) -> None:
    unrelated = docs_dir / "keep-me"
    unrelated.mkdir(parents=True)
    for name in ("run-1", "run-2", "run-3"):
        validate_frame("customers", make_customer_frame(3), run_name=name)
        build_data_docs(docs_dir, run_name=name, keep_runs=2)

    remaining = sorted(p.name for p in docs_dir.iterdir())
    assert remaining == ["keep-me", "run-2", "run-3"]


def test_retained_results_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    runner.reset()
    monkeypatch.setattr(runner, "MAX_RETAINED_RESULTS", 3)

    for name in ("old", "old", "new", "new", "new"):
        validate_frame("customers", make_customer_frame(2), run_name=name)

    info = runner.cache_info()
    assert info["retained_results"] == 3
    assert info["runs"] == 1  # "old" was dropped entirely

"""The runner's two passes (BASIC for the suite, COMPLETE only where it failed) and preload()."""

from __future__ import annotations

import re
import threading
from typing import Any

import pandas as pd
import pytest

from expectations import runner
from expectations.customers import build_suite
from expectations.runner import ValidationRunError, validate_frame
from tests.expectations.conftest import make_customer_frame

SUITE_SIZE = len(build_suite().expectations)


def _evaluations() -> tuple[int, int]:
    info = runner.cache_info()
    return info["cheap_evaluations"], info["complete_evaluations"]


def _dirty_frame(n: int = 300) -> pd.DataFrame:
    """Many bad emails (beyond GX's 20-row sample), a few row-conditioned PINs, a shared GSTIN (warning)."""
    frame = make_customer_frame(n)
    bad_email = list(range(1, n, 9))  # 34 rows for n=300
    frame.loc[bad_email, "email"] = "not-an-address"
    india = frame.index[frame["country"] == "IN"][:3]
    frame.loc[india, "postal_code"] = "0123"
    gstin_rows = frame.index[frame["gstin"].notna()][:2]
    frame.loc[gstin_rows[1], "gstin"] = frame.loc[gstin_rows[0], "gstin"]
    return frame


def _single_complete_run(frame: pd.DataFrame) -> Any:
    """The suite once with COMPLETE through GX itself: what the runner returned before the two passes."""
    from great_expectations.validator.v1_validator import Validator

    definition = runner._state.registrations["customers"].validation_definition
    validator = Validator(
        batch_definition=definition.batch_definition,
        batch_parameters={"dataframe": frame},
        result_format=runner._RESULT_FORMAT,
    )
    parameters = {"now_utc": pd.Timestamp.now(tz="UTC").to_pydatetime()}
    parameters["max_sap_changed_at"] = parameters["now_utc"]
    return validator.validate_expectation_suite(definition.suite, parameters)


def _comparable(result: Any) -> list[dict[str, Any]]:
    """Per-expectation results without ids and the per-call clock parameter."""
    rows = []
    for item in result.to_json_dict()["results"]:
        item["expectation_config"].pop("id", None)
        item["expectation_config"]["kwargs"].pop("max_value", None)
        rows.append(item)
    return rows


def test_an_expectation_failing_on_many_rows_names_every_one_of_them() -> None:
    runner.reset()
    frame = _dirty_frame()
    bad_email = set(range(1, 300, 9))

    outcome = validate_frame("customers", frame, run_name="two-pass-many")

    email_rows = {
        label for label, items in outcome.failures.items() if any(f.column == "email" for f in items)
    }
    assert len(bad_email) > 20  # beyond the partial sample BASIC/SUMMARY would give
    assert email_rows == bad_email
    assert bad_email <= set(outcome.invalid.index)
    (email,) = [
        r for r in outcome.expectation_results if r["column"] == "email" and r["type"].endswith("match_regex")
    ]
    assert email["unexpected_count"] == len(bad_email)
    # The retained Data Docs copy keeps GX's 20-row sample and drops the full lists.
    (retained,) = runner._state.runs["two-pass-many"].results
    (docs_email,) = [
        r.result
        for r in retained.result.results
        if r.expectation_config is not None
        and r.expectation_config.type == "expect_column_values_to_match_regex"
        and r.expectation_config.kwargs["column"] == "email"
    ]
    assert docs_email["unexpected_count"] == len(bad_email)
    assert len(docs_email["partial_unexpected_index_list"]) == 20
    assert "unexpected_index_list" not in docs_email


def test_passing_expectations_are_not_re_run_with_complete() -> None:
    runner.reset()
    frame = _dirty_frame()
    cheap, complete = _evaluations()

    outcome = validate_frame("customers", frame)

    failed = [r for r in outcome.expectation_results if not r["success"]]
    table_level = [r for r in outcome.expectation_results if not r["row_level"]]
    assert {(r["column"], r["type"]) for r in failed} == {
        ("email", "expect_column_values_to_match_regex"),
        ("postal_code", "expect_column_values_to_match_regex"),
        ("gstin", "expect_column_values_to_be_unique"),
    }
    assert len(table_level) == 1  # the column set: re-run, its result format is not ours to assume
    after_cheap, after_complete = _evaluations()
    assert after_cheap - cheap == SUITE_SIZE
    assert after_complete - complete == len(failed) + len(table_level)

    clean_cheap, clean_complete = _evaluations()
    validate_frame("customers", make_customer_frame(50))
    assert _evaluations() == (clean_cheap + SUITE_SIZE, clean_complete + 1)  # only the table-level one


def test_two_passes_give_exactly_the_result_of_one_complete_pass() -> None:
    runner.reset()
    frame = _dirty_frame()
    validate_frame("customers", frame, run_name="two-pass-equal")
    (retained,) = runner._state.runs["two-pass-equal"].results

    reference = _single_complete_run(frame)

    assert _comparable(retained.result) == _comparable(runner._compact(reference))
    assert retained.result.statistics == reference.statistics
    assert retained.result.success == reference.success
    # The whole batch's meta, not a column group's; its fingerprint is ours (_content_fingerprint), not GX's.
    for key in ("great_expectations_version", "batch_spec", "active_batch_definition"):
        assert retained.result.meta[key] == reference.meta[key]
    assert re.fullmatch(r"[0-9a-f]{32}", retained.result.meta["batch_markers"]["pandas_data_fingerprint"])
    assert retained.result.batch_id == reference.batch_id


def test_many_failing_rules_make_the_next_batch_a_single_complete_pass() -> None:
    runner.reset()
    messy = make_customer_frame(40)
    for column in messy.columns:
        if messy[column].dtype == bool:
            messy[column] = messy[column].astype(object)
            messy.loc[4, column] = None
        elif column != "mapping_errors" and messy[column].dtype != "datetime64[us, UTC]":
            messy.loc[3, column] = "!" * 300  # breaks every format, set and length rule
    messy.loc[3, "mapping_errors"] = "street: too long"
    first = validate_frame("customers", messy)  # two passes, most of the suite re-run
    failed = sum(not r["success"] for r in first.expectation_results)
    assert (failed + 1) / SUITE_SIZE > runner._TWO_PASS_MAX_RERUN_SHARE  # + the table-level rule
    cheap, complete = _evaluations()

    outcome = validate_frame("customers", messy)

    assert _evaluations() == (cheap, complete + SUITE_SIZE)  # one COMPLETE pass, no BASIC one
    assert set(outcome.invalid.index) == {3, 4}
    assert outcome.failures == first.failures
    validate_frame("customers", make_customer_frame(40))  # single pass, clean: share drops again
    cheap, _ = _evaluations()
    validate_frame("customers", make_customer_frame(40))
    assert _evaluations()[0] == cheap + SUITE_SIZE


def test_a_missing_column_is_reported_from_one_complete_pass_over_the_whole_frame() -> None:
    runner.reset()
    frame = make_customer_frame(10).drop(columns=["email"])
    cheap, complete = _evaluations()

    with pytest.raises(ValidationRunError, match="email"):
        validate_frame("customers", frame)

    assert _evaluations() == (cheap, complete + SUITE_SIZE)


def test_an_expectation_erroring_in_pass_one_is_reported_from_one_complete_pass() -> None:
    import great_expectations as gx

    runner.reset()
    suite = gx.ExpectationSuite(
        name="numbers",
        expectations=[
            gx.expectations.ExpectColumnValuesToNotBeNull(column="number"),
            # A string among numbers: GX cannot compare it with the bounds.
            gx.expectations.ExpectColumnValuesToBeBetween(column="number", min_value=0, max_value=5),
        ],
    )
    cheap, complete = _evaluations()

    with pytest.raises(ValidationRunError, match="expect_column_values_to_be_between"):
        validate_frame("numbers", pd.DataFrame({"number": [1, "x", 3]}, dtype=object), suite=suite)

    assert _evaluations() == (cheap + 2, complete + 2)


def test_preload_registers_the_suite_so_the_first_batch_does_not() -> None:
    runner.reset()
    before = runner.cache_info()

    runner.preload("customers")
    runner.preload("customers")  # idempotent

    loaded = runner.cache_info()
    assert loaded["datasets"] == 1
    assert loaded["suite_registrations"] == before["suite_registrations"] + 1
    assert (loaded["cheap_evaluations"], loaded["complete_evaluations"]) == (
        before["cheap_evaluations"],
        before["complete_evaluations"],
    )
    validate_frame("customers", make_customer_frame(20))
    assert runner.cache_info()["suite_registrations"] == loaded["suite_registrations"]


def test_preload_in_a_background_thread_races_safely_with_the_first_batch() -> None:
    runner.reset()
    before = runner.cache_info()["suite_registrations"]
    loader = threading.Thread(target=runner.preload, args=("customers",))

    loader.start()
    outcome = validate_frame("customers", make_customer_frame(30))
    loader.join(timeout=60)

    assert not loader.is_alive()
    assert outcome.invalid.empty
    assert runner.cache_info()["suite_registrations"] == before + 1


def test_preload_refuses_a_bad_dataset_name() -> None:
    with pytest.raises(ValueError, match="invalid dataset name"):
        runner.preload("../customers")


def test_groups_follow_gx_order_and_read_their_row_condition_columns() -> None:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    gxe = gx.expectations
    suite = gx.ExpectationSuite(
        name="grouping",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="b"),
            gxe.ExpectTableColumnsToMatchSet(column_set=["a", "b", "c"]),
            gxe.ExpectColumnValuesToMatchRegex(
                column="a", regex="x", row_condition=(Column("c") == 1) | Column("b").is_null()
            ),
            gxe.ExpectColumnValuesToBeInSet(column="b", value_set=["y"]),
            gxe.ExpectColumnValuesToNotBeNull(
                column="c", row_condition='a == "x"', condition_parser="pandas"
            ),
        ],
    )

    groups = runner._column_groups(suite)

    assert [(g.columns, [type(e).__name__ for e in g.expectations]) for g in groups] == [
        (("b",), ["ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeInSet"]),
        (None, ["ExpectTableColumnsToMatchSet"]),
        (("a", "b", "c"), ["ExpectColumnValuesToMatchRegex"]),
        (None, ["ExpectColumnValuesToNotBeNull"]),  # a query string: the whole frame
    ]


def test_memoised_configurations_change_nothing_in_gx_results() -> None:
    """Inside the runner's memo each GX expectation object builds its configuration once; the result is GX's own."""
    from great_expectations.expectations.expectation import Expectation

    runner.reset()
    frame = _dirty_frame()
    validate_frame("customers", frame)  # registers the suite and installs the memo
    build = Expectation.__dict__["configuration"].fget
    assert getattr(build, "memoised_by_drymix", False)

    class CountingMemo(dict[Any, Any]):
        hits = 0

        def get(self, key: Any, default: Any = None) -> Any:
            found = super().get(key, default)
            self.hits += found is not None
            return found

    plain = _single_complete_run(frame)
    memo, ids, masks, objects = CountingMemo(), CountingMemo(), CountingMemo(), CountingMemo()
    tokens = runner._CONFIGURATIONS.set(memo), runner._METRIC_IDS.set(ids), runner._NULL_MASKS.set(masks)
    objects_token = runner._DOMAIN_OBJECTS.set(objects)
    try:
        memoised = _single_complete_run(frame)
    finally:
        runner._DOMAIN_OBJECTS.reset(objects_token)
        runner._NULL_MASKS.reset(tokens[2])
        runner._METRIC_IDS.reset(tokens[1])
        runner._CONFIGURATIONS.reset(tokens[0])
    assert _comparable(memoised) == _comparable(plain)
    assert memoised.statistics == plain.statistics
    # GX makes several objects per expectation in one call and reads each one's configuration again and again.
    assert len(memo) >= SUITE_SIZE
    assert memo.hits >= 2 * len(memo)
    assert ids.hits >= len(ids) > 0  # metric kwargs built from the same values get their id once
    # One expectation object per configuration GX evaluates, asked for again once per metric it needs.
    assert SUITE_SIZE <= len(objects) and objects.hits >= 3 * len(objects)
    # Each object column's nulls once, whatever GX asks: no more masks than the frame has object columns.
    assert 0 < len(masks) <= sum(dtype.kind == "O" for dtype in frame.dtypes) and masks.hits >= len(masks)
    with runner._memoised_configurations():
        assert runner._CONFIGURATIONS.get() == {} and runner._METRIC_IDS.get() == {} and runner._NULL_MASKS.get() == {}
    # outside a call GX runs as before
    assert runner._CONFIGURATIONS.get() is None and runner._METRIC_IDS.get() is None and runner._NULL_MASKS.get() is None
    assert runner._DOMAIN_OBJECTS.get() is None


def test_a_configuration_gives_one_expectation_object_per_call_while_its_kwargs_stay() -> None:
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    runner.reset()
    validate_frame("customers", _dirty_frame())  # installs the memo
    config = ExpectationConfiguration(type="expect_column_values_to_not_be_null", kwargs={"column": "email"})
    assert config.to_domain_obj() is not config.to_domain_obj()  # outside a call: GX's own, a new object each time
    with runner._memoised_configurations():
        first = config.to_domain_obj()
        assert config.to_domain_obj() is first
        config.kwargs["mostly"] = 0.5  # a changed configuration builds its object again
        again = config.to_domain_obj()
        assert again is not first and again.mostly == 0.5 and first.mostly == 1.0
        other = ExpectationConfiguration(type="expect_column_values_to_not_be_null", kwargs={"column": "email"})
        assert other.to_domain_obj() is not again  # an equal configuration is another object: its own


def test_a_memoised_null_mask_is_the_callers_own_and_follows_the_buffer() -> None:
    runner.reset()
    validate_frame("customers", _dirty_frame())  # installs the memo
    column = pd.Series(["a", None, "c"], dtype=object)
    with runner._memoised_configurations():
        first = column.isnull()
        first.iloc[0] = True  # a caller writing to its mask changes no one else's
        assert column.isnull().tolist() == [False, True, False]
        assert column.notnull().tolist() == [True, False, True]
        other = pd.Series([None, "b", None], dtype=object)  # same shape, another buffer
        assert other.isnull().tolist() == [True, False, True]
        assert len(runner._NULL_MASKS.get() or {}) == 2


def test_only_the_whole_batch_is_fingerprinted_not_each_column_groups_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    runner.reset()
    frame = _dirty_frame()
    validate_frame("customers", frame)
    hashed: list[int] = []
    real = runner._content_fingerprint

    def counting(df: pd.DataFrame) -> str:
        hashed.append(df.shape[1])
        return real(df)

    monkeypatch.setattr(runner, "_content_fingerprint", counting)
    monkeypatch.setattr(pd.util, "hash_pandas_object", lambda *a, **k: pytest.fail("GX's fingerprint ran"))
    validate_frame("customers", frame, run_name="fingerprinted-once")
    assert hashed == [frame.shape[1]]
    (retained,) = runner._state.runs["fingerprinted-once"].results
    assert retained.result.meta["batch_markers"]["pandas_data_fingerprint"] == real(frame)


def test_the_fingerprint_follows_the_values_labels_and_columns() -> None:
    frame = _dirty_frame()
    same = runner._content_fingerprint(frame.copy())
    assert runner._content_fingerprint(frame) == same
    changed = frame.copy()
    changed.iloc[3, 0] = f"{changed.iloc[3, 0]}x"
    relabelled = frame.copy()
    relabelled.index = relabelled.index + 1
    renamed = frame.rename(columns={frame.columns[0]: "other"})
    stamps = pd.DataFrame({"at": pd.to_datetime([0, 1], unit="s", utc=True), "n": [1.5, None]})
    later = stamps.assign(at=stamps["at"] + pd.Timedelta(seconds=1))
    assert len({same, *map(runner._content_fingerprint, (changed, relabelled, renamed, stamps, later))}) == 6

"""The database's own column limits as expectations, generated from the SQLAlchemy models.

Every suite's ``build_suite()`` adds ``database_limits(<its ERP model>, <its frame columns>, <its
expectations>)``: for each column of the frame that the table stores, the limits the database enforces
become critical rules, so a value the database would refuse is quarantined with its key instead of
failing the batch's load. Read from ``hub.core.models`` each time a suite is built, so a model change
changes the rule; nothing here is typed by hand.

* ``VARCHAR(n)`` -> ``ExpectColumnValueLengthsToBeBetween(max_value=n)`` (nulls pass: GX map rules skip them);
* ``NOT NULL`` -> ``ExpectColumnValuesToNotBeNull`` (autoincrement keys excepted: the database fills them);
* ``SMALLINT``/``INTEGER``/``BIGINT`` and ``NUMERIC(p, s)`` -> ``ExpectColumnValuesToBeBetween`` with the type's range.

A rule is not generated when the suite already has one as strict on that column (critical, no row
condition, ``mostly`` 1): a length rule at most as long, a value set whose members all fit, an anchored
regex that cannot match anything longer, a range inside the type's. Each rule costs validation time
(~5 ms per 20k rows), so the hand-written rules already guarding a column are not repeated.

What the database refuses that no rule here describes (a NUL character in text, a unique key other
than the upsert's) is caught at load time: ``hub.ledger.loading.load_batch`` isolates and quarantines the rows.

Importing this module imports neither Great Expectations nor the models; only the functions do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation
    from sqlalchemy import Column, Table

LENGTH: Final = "max_length"
NOT_NULL: Final = "not_null"
RANGE: Final = "range"

_INTEGER_RANGES: Final[dict[str, tuple[int, int]]] = {
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class ColumnLimit:
    """One limit the database enforces on one column."""

    column: str
    kind: str  # LENGTH | NOT_NULL | RANGE
    sql_type: str  # e.g. VARCHAR(40), INTEGER, NUMERIC(10, 2)
    max_length: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    strict: bool = False  # NUMERIC bounds are exclusive (a value rounding up to 10^(p-s) overflows)


def column_limits(table: Table, columns: Iterable[str]) -> list[ColumnLimit]:
    """The limits of ``table``'s columns that appear in ``columns`` (the frame a suite validates), in table order."""
    wanted = set(columns)
    limits: list[ColumnLimit] = []
    for column in table.columns:
        if column.name not in wanted or _filled_by_database(column):
            continue
        sql_type = _base_type(column)
        name = _type_name(sql_type)
        if not column.nullable:
            limits.append(ColumnLimit(column.name, NOT_NULL, "NOT NULL"))
        length = getattr(sql_type, "length", None)
        if _is_string(sql_type) and length:
            limits.append(ColumnLimit(column.name, LENGTH, f"VARCHAR({length})", max_length=int(length)))
        elif name in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[name]
            limits.append(ColumnLimit(column.name, RANGE, name, min_value=low, max_value=high))
        elif name == "NUMERIC" and getattr(sql_type, "precision", None) is not None:
            precision, scale = int(sql_type.precision), int(getattr(sql_type, "scale", None) or 0)
            bound = 10.0 ** (precision - scale) - 0.5 * 10.0 ** (-scale)
            limits.append(
                ColumnLimit(column.name, RANGE, f"NUMERIC({precision}, {scale})", min_value=-bound, max_value=bound, strict=True)
            )
    return limits


def database_limits(
    model: type[Any],
    columns: Iterable[str],
    existing: Sequence[Expectation],
    *,
    rule_prefix: str,
    frame_columns: Mapping[str, str] | None = None,
) -> list[Expectation]:
    """GX rules for the limits of ``model``'s table on ``columns`` that ``existing`` does not already enforce as strictly.

    ``frame_columns`` names a table column's column in the frame when they differ (a frame that carries two
    tables' rows, such as sales orders and their items: ``{"net_amount": "item_net_amount"}``).
    """
    import great_expectations as gx

    gxe = gx.expectations
    table: Table = model.__table__
    rules: list[Expectation] = []
    for stored in column_limits(table, columns):
        limit = replace(stored, column=(frame_columns or {}).get(stored.column, stored.column))
        if covered(limit, existing):
            continue
        meta = {"rule_id": f"{rule_prefix}.{limit.column}.db_{limit.kind}", "generated_from": f"{table.name}.{stored.column} {limit.sql_type}"}
        where = f"{table.name}.{stored.column}"
        if limit.kind == LENGTH:
            rules.append(
                gxe.ExpectColumnValueLengthsToBeBetween(
                    column=limit.column, max_value=limit.max_length, meta=meta,
                    notes=f"{where} holds at most {limit.max_length} characters ({limit.sql_type}); a longer value would fail the load.",
                )
            )
        elif limit.kind == NOT_NULL:
            rules.append(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=limit.column, meta=meta, notes=f"{where} is NOT NULL in the ERP: a row without it cannot be stored.",
                )
            )
        else:
            rules.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=limit.column, min_value=limit.min_value, max_value=limit.max_value,
                    strict_min=limit.strict, strict_max=limit.strict, meta=meta,
                    notes=f"{where} is {limit.sql_type}: a value outside {limit.min_value:g} .. {limit.max_value:g} cannot be stored.",
                )
            )
    return rules


def covered(limit: ColumnLimit, existing: Sequence[Expectation]) -> bool:
    """Whether a rule in ``existing`` already refuses every value ``limit`` would (so it need not be repeated)."""
    for rule in existing:
        if getattr(rule, "column", None) != limit.column or not _unconditional(rule):
            continue
        kind = type(rule).__name__
        if limit.kind == NOT_NULL:
            if kind == "ExpectColumnValuesToNotBeNull":
                return True
        elif limit.kind == LENGTH:
            longest = _max_length_of(rule, kind)
            if longest is not None and limit.max_length is not None and longest <= limit.max_length:
                return True
        elif _inside_range(rule, kind, limit):
            return True
    return False


def _unconditional(rule: Expectation) -> bool:
    """Critical, on every row, for every row: only such a rule protects the database."""
    severity = getattr(rule, "severity", None)
    if str(getattr(severity, "value", severity) or "critical").lower() != "critical":
        return False
    if getattr(rule, "row_condition", None):
        return False
    mostly = getattr(rule, "mostly", 1)
    return mostly is None or float(mostly) >= 1.0


def _number(value: Any) -> float | None:
    # A {"$PARAMETER": ...} bound is only known at validation time: it guarantees nothing here.
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _max_length_of(rule: Expectation, kind: str) -> int | None:
    """The longest value ``rule`` lets through, when it bounds the length at all."""
    if kind == "ExpectColumnValueLengthsToBeBetween":
        bound = _number(getattr(rule, "max_value", None))
        return int(bound) if bound is not None else None
    if kind == "ExpectColumnValueLengthsToEqual":
        bound = _number(getattr(rule, "value", None))
        return int(bound) if bound is not None else None
    if kind == "ExpectColumnValuesToBeInSet":
        values = getattr(rule, "value_set", None)
        if isinstance(values, list | tuple | set | frozenset) and values and all(isinstance(v, str) for v in values):
            return max(len(v) for v in values)
        return None
    if kind == "ExpectColumnValuesToMatchRegex":
        regex = getattr(rule, "regex", None)
        return regex_max_length(regex) if isinstance(regex, str) else None
    return None


def _inside_range(rule: Expectation, kind: str, limit: ColumnLimit) -> bool:
    assert limit.min_value is not None and limit.max_value is not None
    if kind == "ExpectColumnValuesToBeBetween":
        low, high = _number(getattr(rule, "min_value", None)), _number(getattr(rule, "max_value", None))
        return low is not None and high is not None and low >= limit.min_value and high <= limit.max_value
    if kind == "ExpectColumnValuesToBeInSet":
        values = getattr(rule, "value_set", None)
        numbers = [_number(v) for v in values] if isinstance(values, list | tuple | set | frozenset) and values else [None]
        return all(n is not None and limit.min_value <= n <= limit.max_value for n in numbers)
    return False


def regex_max_length(pattern: str) -> int | None:
    """The longest string ``re.search(pattern, s)`` can accept, when the pattern is anchored at both ends.

    Only ``^``/``\\A`` ... ``\\Z`` (or ``$``, which also accepts one trailing newline) at the top level
    bound the whole string; an unanchored pattern, a top-level alternation or MULTILINE bound nothing.
    """
    from re import _parser  # type: ignore[attr-defined]  # the stdlib's regex parser: its width analysis

    try:
        parsed = _parser.parse(pattern)
    except re.error:
        return None
    items = list(parsed)
    if len(items) < 2 or parsed.state.flags & re.MULTILINE:
        return None
    at = _parser.AT
    first, last = items[0], items[-1]
    if first[0] is not at or first[1] not in (_parser.AT_BEGINNING, _parser.AT_BEGINNING_STRING):
        return None
    if last[0] is not at or last[1] not in (_parser.AT_END_STRING, _parser.AT_END):
        return None
    high = int(parsed.getwidth()[1])
    if high >= _parser.MAXREPEAT:
        return None
    return high + (1 if last[1] == _parser.AT_END else 0)


def _filled_by_database(column: Column[Any]) -> bool:
    # An autoincrement key is the database's to fill (the frame carries it only to name an existing row).
    return column.table.autoincrement_column is column


def _base_type(column: Column[Any]) -> Any:
    sql_type: Any = column.type
    while hasattr(sql_type, "impl_instance"):  # TypeDecorator (UTCDateTime): the stored type is its impl
        sql_type = sql_type.impl_instance
    return sql_type


def _type_name(sql_type: Any) -> str:
    from sqlalchemy import BigInteger, Float, Integer, Numeric, SmallInteger

    if isinstance(sql_type, BigInteger):
        return "BIGINT"
    if isinstance(sql_type, SmallInteger):
        return "SMALLINT"
    if isinstance(sql_type, Integer):
        return "INTEGER"
    if isinstance(sql_type, Numeric) and not isinstance(sql_type, Float):
        return "NUMERIC"
    return type(sql_type).__name__.upper()


def _is_string(sql_type: Any) -> bool:
    from sqlalchemy import String

    return isinstance(sql_type, String)

"""Instrument profiles: how one testing machine's export is written, one TOML file each under `config/lab/`.

A profile says which files it reads (name globs), their encoding, delimiter, decimal mark, thousands
separator, date/time formats and time zone, where the header is (a fixed number of lines above it, a
marker line, or searched), which `key: value` metadata lines above it carry fields (machine serial,
operator, standard, a specimen's geometry), which header cells are which ERP field and in which unit,
the sample-id column, and whether a file is one specimen (a result table or a load curve reduced to one
row). docs/lab.md describes every key with an example.

A file is read with the first profile whose name pattern matches and whose header fits; a file that no
profile fits raises `NoProfileFits` (an `ExportRejected`) naming every profile tried and why it did not
fit, so the hub quarantines it whole. Values stay strings in the file's own notation: the mapping
(`data_mappings.lab`) converts numbers, units and times with the profile's settings, so that a
quarantined line replays exactly like a fresh export.

Loading validates every profile with pydantic; an error names the file and the line. tomllib reports no
line numbers for valid TOML, so the line of the offending key is found in the text (`_line_of`).
"""

from __future__ import annotations

import codecs
import fnmatch
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.lab.exports import (
    _HEADER_INDEX,
    DELIMITERS,
    FIELDS,
    REQUIRED,
    BadLine,
    ExportDialect,
    ExportRejected,
    ParsedExport,
    _check_units,
    _map_header,
    _slug,
    _split,
    checksum,
    decode,
    normalise_header,
    read_body,
    uses_decimal_comma,
)

#: Fields a profile may fill besides the canonical ones: a date and a time given apart become `tested_at`.
DATE_PARTS: tuple[str, ...] = ("test_date", "test_time")
#: Units a profile may declare, per kind of quantity, with the factor to the ERP's unit (kN, MPa, mm, mm2, days).
UNITS: dict[str, dict[str, float]] = {
    "force": {"kn": 1.0, "n": 0.001, "mn": 1000.0, "lbf": 0.0044482216, "kgf": 0.00980665, "kip": 4.4482216},
    "stress": {"mpa": 1.0, "n_mm2": 1.0, "kpa": 0.001, "gpa": 1000.0, "psi": 0.0068947573},
    "length": {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4},
    "area": {"mm2": 1.0, "cm2": 100.0, "m2": 1_000_000.0, "in2": 645.16},
    "age": {"d": 1.0, "day": 1.0, "days": 1.0},
}
FIELD_KINDS: dict[str, str] = {
    "peak_load_kn": "force", "strength_mpa": "stress", "length_mm": "length", "width_mm": "length",
    "height_mm": "length", "span_mm": "length", "area_mm2": "area", "age_days": "age",
}
_NAMED_DELIMITERS = {"auto": "auto", "tab": "\t", ",": ",", ";": ";", "\t": "\t", "|": "|"}


class ProfileError(ValueError):
    """One or more profile files are invalid; each message names the file and the line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class NoProfileFits(ExportRejected):
    """No profile reads this file: `tried` holds (profile, why not) for every profile."""

    def __init__(self, name: str, tried: Sequence[tuple[str, str]]) -> None:
        self.tried = list(tried)
        if not tried:
            reason = f"no instrument profile fits {name}: no profiles are configured (config/lab/*.toml, [lab] profiles)"
        else:
            reason = f"no instrument profile fits {name}: " + "; ".join(f"{profile}: {why}" for profile, why in tried)
        super().__init__(reason)


def unit_key(unit: str) -> str:
    """`"N/mm²"` -> `"n_mm2"`: how units are compared."""
    return _slug(unit)


def _key(text: str) -> str:
    """How header cells and metadata keys are compared: name without a bracketed unit, ASCII words."""
    return normalise_header(text)[0]


class FieldSpec(BaseModel):
    """Where one ERP field comes from: a header cell or a metadata key of the export."""

    model_config = ConfigDict(extra="forbid")

    field: str
    unit: str | None = Field(None, description="the unit the export writes; converted to the ERP's unit")
    optional: bool = Field(False, description="the file may lack this column or metadata line")
    reduce: Literal["first", "last", "max", "min"] | None = Field(
        None, description="one file per specimen: how the lines below the header become one value (max of a load curve)")

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in FIELDS and value not in DATE_PARTS:
            raise ValueError(f"unknown ERP field {value!r}; one of {', '.join((*FIELDS, *DATE_PARTS))}")
        return value

    @model_validator(mode="after")
    def _known_unit(self) -> FieldSpec:
        if self.unit is None:
            return self
        kind = FIELD_KINDS.get(self.field)
        if kind is None:
            raise ValueError(f"{self.field} has no unit (unit {self.unit!r} given)")
        if unit_key(self.unit) not in UNITS[kind]:
            raise ValueError(f"unit {self.unit!r} is not a {kind} unit this hub converts ({', '.join(UNITS[kind])})")
        return self

    @property
    def factor(self) -> float:
        kind = FIELD_KINDS.get(self.field)
        return UNITS[kind][unit_key(self.unit)] if kind and self.unit else 1.0


def _as_spec(value: Any) -> Any:
    return {"field": value} if isinstance(value, str) else value


class HeaderSpec(BaseModel):
    """Where the header row is, and whether the lines above it are `key: value` metadata."""

    model_config = ConfigDict(extra="forbid")

    lines_above: int | None = Field(None, ge=0, le=500, description="a fixed number of lines above the header")
    marker: str | None = Field(None, min_length=1, description="the header is the first line after the line starting with this text")
    search_lines: int = Field(10, ge=1, le=500, description="else: the first of these lines that holds the profile's columns")
    metadata: bool = Field(False, description="read `key;value` or `key: value` lines above the header (or the marker)")

    @model_validator(mode="after")
    def _one_rule(self) -> HeaderSpec:
        if self.lines_above is not None and self.marker is not None:
            raise ValueError("give lines_above or marker, not both")
        return self


class InstrumentProfile(BaseModel):
    """One testing machine's export format (a `config/lab/<name>.toml`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the file's stem")
    description: str = ""
    files: list[str] = Field(default_factory=lambda: ["*.csv"], min_length=1, description="file name globs (case-insensitive)")
    encoding: str = Field("auto", description="auto: UTF-8 (BOM or not), else Windows-1252, else Latin-1")
    delimiter: str = Field("auto", description="; , | tab, or auto: the candidate that maps the most header cells")
    decimal: Literal["point", "comma", "auto"] = "auto"
    thousands: Literal["", ".", ",", " ", "'"] = ""
    datetime_formats: list[str] = Field(default_factory=list, description='strptime formats, "iso" for ISO 8601; empty: ISO and dd.mm.yyyy forms')
    timezone: str | None = Field(None, description="zone of times without an offset; default [lab] timezone")
    sample_id: str | None = Field(None, description="the column or metadata key holding the specimen id")
    one_file_per_specimen: bool = False
    aliases: bool = Field(False, description="also accept the built-in column names and aliases (connectors/lab/exports.py)")
    header: HeaderSpec = Field(default_factory=HeaderSpec)
    columns: dict[str, FieldSpec] = Field(default_factory=dict)
    metadata: dict[str, FieldSpec] = Field(default_factory=dict)
    constants: dict[str, str] = Field(default_factory=dict, description="values for fields the files do not carry")

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if value not in _NAMED_DELIMITERS:
            raise ValueError(f"delimiter {value!r}: one of ';', ',', '|', 'tab' or 'auto'")
        return _NAMED_DELIMITERS[value]

    @field_validator("datetime_formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        for fmt in value:
            if fmt != "iso" and "%" not in fmt:
                raise ValueError(f"{fmt!r} is neither 'iso' nor a strptime format (%d.%m.%Y %H:%M)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("columns", "metadata", mode="before")
    @classmethod
    def _specs(cls, value: Any) -> Any:
        return {k: _as_spec(v) for k, v in value.items()} if isinstance(value, dict) else value

    # --- derived -------------------------------------------------------------------------------

    @property
    def decimal_mark(self) -> str | None:
        return {"comma": ",", "point": "."}.get(self.decimal)

    def matches_name(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name.lower(), pattern.lower()) for pattern in self.files)

    def column_specs(self) -> dict[str, FieldSpec]:
        """Header cell key -> spec, the sample-id column included."""
        specs = {_key(k): v for k, v in self.columns.items()}
        if self.sample_id and _key(self.sample_id) not in specs and _key(self.sample_id) not in self.metadata_specs():
            specs[_key(self.sample_id)] = FieldSpec(field="specimen_id")
        return specs

    def metadata_specs(self) -> dict[str, FieldSpec]:
        return {_key(k): v for k, v in self.metadata.items()}

    def sources(self) -> set[str]:
        """Every field this profile can fill (for the required-field check at load time)."""
        found = {s.field for s in (*self.columns.values(), *self.metadata.values())} | set(self.constants)
        if self.sample_id:
            found.add("specimen_id")
        if "test_date" in found:
            found.add("tested_at")
        return found


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _cross_checks(profile: InstrumentProfile) -> list[tuple[tuple[Any, ...], str]]:
    """What pydantic cannot see field by field: (location, message) for each problem."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    for key in profile.constants:
        if key not in FIELDS:
            problems.append((("constants", key), f"unknown ERP field(s) {key}; one of {', '.join(FIELDS)}"))
    if not profile.aliases and not profile.columns and not profile.metadata:
        problems.append((("columns",), "an explicit profile (aliases = false) lists its [columns] or [metadata]"))
    if not profile.aliases:
        missing = [f for f in REQUIRED if f not in profile.sources()]
        if missing:
            problems.append((("columns",), f"no column, metadata key or constant gives the required field(s) {', '.join(missing)}"))
    seen: dict[str, str] = {}
    for key, spec in profile.columns.items():
        if spec.field in seen and not profile.one_file_per_specimen:
            problems.append((("columns", key), f"{spec.field} is mapped twice: {seen[spec.field]!r} and {key!r}"))
        seen.setdefault(spec.field, key)
        if spec.reduce is not None and not profile.one_file_per_specimen:
            problems.append((("columns", key, "reduce"), "reduce applies to one_file_per_specimen profiles only"))
    if profile.metadata and not profile.header.metadata:
        problems.append((("header", "metadata"), "[metadata] keys are given: set metadata = true in [header]"))
    mark = profile.decimal_mark
    if profile.thousands and mark == profile.thousands:
        problems.append((("thousands",), f"the thousands separator {profile.thousands!r} is the decimal mark"))
    if mark == "," and profile.delimiter == ",":
        problems.append((("delimiter",), "a decimal comma needs another delimiter than ','"))
    return problems


def _line_of(text: str, loc: Sequence[Any]) -> int | None:
    """The line of the TOML key at `loc` (or of its nearest parent): tomllib keeps no positions."""
    table: list[str] = []
    best: tuple[int, int] | None = None  # (depth matched, line)
    wanted = [str(p) for p in loc]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            table = _toml_path(header.group(1))
            path = table
        else:
            key = re.match(r'^((?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+))*)\s*=', line)
            if not key:
                continue
            path = table + _toml_path(key.group(1))
            inline = line[key.end():]
            # an inline table: `"Fmax" = { field = "...", unit = "kN" }` holds the keys one level down
            for inner in re.findall(r"([A-Za-z0-9_\-]+)\s*=", inline[inline.find("{") + 1 :] if "{" in inline else ""):
                if path + [inner] == wanted[: len(path) + 1]:
                    path = path + [inner]
                    break
        depth = 0
        while depth < min(len(path), len(wanted)) and path[depth] == wanted[depth]:
            depth += 1
        if depth == len(path) and depth > 0 and (best is None or depth > best[0]):
            best = (depth, number)
    return best[1] if best else None


def _toml_path(dotted: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_\-]+)', dotted)
    return [a or b or c for a, b, c in parts]


def _where(path: Path, text: str, loc: Sequence[Any]) -> str:
    line = _line_of(text, loc)
    dotted = ".".join(str(p) for p in loc)
    return f"{path} line {line}" + (f" ({dotted})" if dotted else "") if line else f"{path}" + (f" ({dotted})" if dotted else "")


def load_profile(path: Path) -> InstrumentProfile:
    """One profile file, validated; `ProfileError` names the file and line of each problem."""
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError([f"{path}: not valid TOML: {exc}"]) from None
    if "name" in raw:
        raise ProfileError([f"{_where(path, text, ('name',))}: the profile's name is its file name ({path.stem}); remove `name`"])
    try:
        profile = InstrumentProfile.model_validate({**raw, "name": path.stem})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
            problems.append(f"{_where(path, text, loc)}: {error['msg'].removeprefix('Value error, ')}")
        raise ProfileError(problems) from None
    problems = [f"{_where(path, text, loc)}: {message}" for loc, message in _cross_checks(profile)]
    if problems:
        raise ProfileError(problems)
    return profile


def load_profiles(directory: Path, names: Sequence[str] | None = None) -> list[InstrumentProfile]:
    """The profiles a site uses, in the order they are tried: `names` as listed ([lab] profiles), else every
    `*.toml` in `directory`, explicit ones before those that also accept aliases (those read almost anything)."""
    if names is None:
        paths = sorted(directory.glob("*.toml"))
    else:
        paths = [directory / f"{n}.toml" for n in names]
    problems: list[str] = []
    profiles: list[InstrumentProfile] = []
    for path in paths:
        if not path.is_file():
            problems.append(f"{path}: no such profile ([lab] profiles names {path.stem!r})")
            continue
        try:
            profiles.append(load_profile(path))
        except ProfileError as exc:
            problems += exc.problems
    if problems:
        raise ProfileError(problems)
    if names is None:
        profiles.sort(key=lambda p: (p.aliases, p.name))
    return profiles


# --------------------------------------------------------------------------------------------
# Reading a file with a profile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    index: int  # 0-based line index
    delimiter: str
    cells: list[str]
    positions: dict[str, int]
    factors: dict[str, float]
    load_unit: str
    ignored: list[str]
    reduce: dict[str, str]


def _decode(content: bytes, profile: InstrumentProfile) -> tuple[str, str]:
    if profile.encoding == "auto":
        return decode(content)
    decode(content[:4096])  # the ZIP and binary checks
    encoding = "utf-8-sig" if codecs.lookup(profile.encoding).name == "utf-8" else profile.encoding
    try:
        return content.decode(encoding), profile.encoding
    except UnicodeDecodeError as exc:
        raise ExportRejected(f"not {profile.encoding} text (byte {content[exc.start:exc.start + 1]!r} at offset {exc.start})") from None


def _map_columns(cells: list[str], profile: InstrumentProfile) -> tuple[_Header | None, list[str]]:
    """Map header cells with the profile's columns (and aliases if allowed); (header, problems)."""
    specs = profile.column_specs()
    positions: dict[str, int] = {}
    factors: dict[str, float] = {}
    reduce: dict[str, str] = {}
    problems: list[str] = []
    unmatched: list[int] = []
    found: set[str] = set()
    for index, cell in enumerate(cells):
        name, cell_unit = normalise_header(cell)
        spec = specs.get(name)
        if spec is None:
            unmatched.append(index)
            continue
        found.add(name)
        if spec.field in positions and not profile.one_file_per_specimen:
            problems.append(f"two columns map to {spec.field}: {cells[positions[spec.field]]!r} and {cell!r}")
            continue
        if spec.field in positions:
            continue  # one file per specimen: the first such column
        declared = unit_key(spec.unit) if spec.unit else None
        if cell_unit and declared and cell_unit != declared and UNITS.get(FIELD_KINDS.get(spec.field, ""), {}).get(cell_unit) != spec.factor:
            problems.append(f"column {cell.strip()!r} is in {cell_unit}, the profile says {spec.unit}")
            continue
        positions[spec.field] = index
        if spec.unit:
            factors[spec.field] = spec.factor
        elif cell_unit and spec.field in FIELD_KINDS:
            table = UNITS[FIELD_KINDS[spec.field]]
            if cell_unit not in table:
                problems.append(f"column {cell.strip()!r}: unit {cell_unit!r} is not a {FIELD_KINDS[spec.field]} unit ({', '.join(table)})")
                continue
            factors[spec.field] = table[cell_unit]
        if spec.reduce:
            reduce[spec.field] = spec.reduce
    missing = [key for key, spec in _named_columns(profile).items() if not spec.optional and _key(key) not in found]
    if missing:
        problems.append(f"header lacks column(s) {', '.join(repr(m) for m in missing)}")
    load_unit = "kN"
    ignored = [cells[i].strip() for i in unmatched if cells[i].strip()]
    if profile.aliases and unmatched:
        rest = [cells[i] if i in unmatched else "" for i in range(len(cells))]
        alias_positions, units, _ignored, alias_problems = _map_header(rest)
        problems += alias_problems
        for field_name, index in alias_positions.items():
            if field_name in positions:
                problems.append(f"two columns map to {field_name}: {cells[positions[field_name]]!r} and {cells[index]!r}")
            else:
                positions[field_name] = index
        ignored = [c.strip() for i, c in enumerate(cells) if i in unmatched and i not in alias_positions.values() and c.strip()]
        try:
            load_unit = _check_units(units)
        except ExportRejected as exc:
            problems.append(str(exc))
    if not positions:
        return None, problems or ["no header cell is one of the profile's columns"]
    return _Header(-1, "", cells, positions, factors, load_unit, ignored, reduce), problems


def _named_columns(profile: InstrumentProfile) -> dict[str, FieldSpec]:
    named = dict(profile.columns)
    if profile.sample_id and _key(profile.sample_id) not in {_key(k) for k in named} and _key(profile.sample_id) not in profile.metadata_specs():
        named[profile.sample_id] = FieldSpec(field="specimen_id")
    return named


def _header_at(lines: list[str], index: int, profile: InstrumentProfile, delimiters: Sequence[str]) -> tuple[_Header | None, list[str]]:
    """The best reading of line `index` as this profile's header over the candidate delimiters."""
    best: tuple[int, _Header | None, list[str]] = (-1, None, ["no header"])
    for delimiter in delimiters:
        if len(delimiters) > 1 and delimiter not in lines[index]:
            continue
        cells = _split(lines[index], delimiter)
        header, problems = _map_columns(cells, profile)
        known = len(header.positions) if header else 0
        score = known * 2 - len(problems)
        if header is not None and score > best[0]:
            best = (score, _Header(index, delimiter, cells, header.positions, header.factors, header.load_unit, header.ignored, header.reduce), problems)
    return best[1], best[2]


def _find_header(lines: list[str], profile: InstrumentProfile, delimiters: Sequence[str]) -> tuple[_Header, int]:
    """(header, index of the first line of the metadata block's end): by count, marker or search."""
    rule = profile.header
    if rule.lines_above is not None:
        index = rule.lines_above
        if index >= len(lines) or not lines[index].strip():
            raise ExportRejected(f"the header should be line {index + 1} ({rule.lines_above} lines above it), but that line is {'missing' if index >= len(lines) else 'blank'}")
        header, problems = _header_at(lines, index, profile, delimiters)
        if header is None or problems:
            raise ExportRejected(f"line {index + 1} is not the header: {'; '.join(problems)}")
        return header, index
    if rule.marker is not None:
        marker = rule.marker.strip().lower()
        found = next((i for i, line in enumerate(lines) if line.strip().lower().startswith(marker)), None)
        if found is None:
            raise ExportRejected(f"no marker line starting {rule.marker!r}")
        after = next((i for i in range(found + 1, len(lines)) if lines[i].strip()), None)
        if after is None:
            raise ExportRejected(f"nothing after the marker line {rule.marker!r} (line {found + 1})")
        index = after
        header, problems = _header_at(lines, index, profile, delimiters)
        if header is None or problems:
            raise ExportRejected(f"line {index + 1} after the marker {rule.marker!r} is not the header: {'; '.join(problems)}")
        return header, found
    closest: tuple[int, int, list[str]] | None = None
    generic = profile.aliases and not profile.columns
    # A line "looks like" this profile's header when it holds half its columns (a metadata line may hold one).
    need = 4 if generic else max(1, sum(not c.optional for c in _named_columns(profile).values()) // 2)
    for index, line in enumerate(lines[: rule.search_lines]):
        if not line.strip():
            continue
        header, problems = _header_at(lines, index, profile, delimiters)
        if header is None:
            continue
        enough = len(header.positions) >= need
        if enough and not problems:
            return header, index
        if enough and (closest is None or len(header.positions) > closest[1]):
            closest = (index, len(header.positions), problems)
        if generic and enough:
            break  # as the generic parser: the first line that looks like a header is the header
    if closest is not None:
        raise ExportRejected(f"line {closest[0] + 1} looks like the header but does not fit: {'; '.join(closest[2])}")
    raise ExportRejected(f"no header row with this profile's columns in the first {rule.search_lines} lines")


def _read_metadata(lines: Iterable[tuple[int, str]], profile: InstrumentProfile, delimiter: str) -> tuple[dict[str, str], dict[str, tuple[str, int]], dict[str, float], list[str]]:
    """`key;value[;unit]` or `key: value` lines -> (all pairs as written, {field: (value, line)}, factors, problems)."""
    specs = profile.metadata_specs()
    pairs: dict[str, str] = {}
    fields: dict[str, tuple[str, int]] = {}
    factors: dict[str, float] = {}
    problems: list[str] = []
    for number, line in lines:
        if not line.strip():
            continue
        cells = _split(line, delimiter) if delimiter in line else [line]
        if len(cells) < 2:
            key, sep, value = line.partition(":")
            if not sep:
                continue
            cells = [key, value]
        key, value = cells[0].strip(), cells[1].strip()
        unit = cells[2].strip() if len(cells) > 2 and cells[2].strip() else normalise_header(key)[1]
        pairs.setdefault(key, value)
        spec = specs.get(_key(key))
        if spec is None or spec.field in fields:
            continue
        if unit and spec.field in FIELD_KINDS:
            table = UNITS[FIELD_KINDS[spec.field]]
            given = table.get(unit_key(unit))
            if given is None:
                problems.append(f"metadata {key!r} (line {number}): unit {unit!r} is not a {FIELD_KINDS[spec.field]} unit ({', '.join(table)})")
                continue
            if spec.unit and given != spec.factor:
                problems.append(f"metadata {key!r} (line {number}) is in {unit}, the profile says {spec.unit}")
                continue
            factors[spec.field] = given
        elif spec.unit:
            factors[spec.field] = spec.factor
        fields[spec.field] = (value, number)
    wanted = {spec.field: key for key, spec in profile.metadata.items() if not spec.optional}
    missing = [key for field_name, key in wanted.items() if field_name not in fields]
    if missing:
        problems.append(f"metadata line(s) {', '.join(repr(m) for m in missing)} missing above the header")
    return pairs, fields, factors, problems


def read_number(text: str, decimal_comma: bool, thousands: str = "") -> float | None:
    """A number as the mapping reads it (one decimal mark, thousands only where declared and grouped)."""
    value = text.strip()
    if thousands:
        mark = re.escape("," if decimal_comma else ".")
        if re.match(rf"^[-+]?\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+(?:{mark}\d+)?$", value):
            value = value.replace(thousands, "")
    if ("." if decimal_comma else ",") in value:
        return None
    try:
        number = float(value.replace(",", ".") if decimal_comma else value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def parse_with_profile(content: bytes, name: str, profile: InstrumentProfile) -> ParsedExport:
    """Read one export with one profile; `ExportRejected` says why the file does not fit it."""
    text, encoding = _decode(content, profile)
    text = text.rstrip("\x00\x1a")
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise ExportRejected("empty file")
    delimiters = DELIMITERS if profile.delimiter == "auto" else (profile.delimiter,)
    header, block_end = _find_header(lines, profile, delimiters)
    problems: list[str] = []
    pairs: dict[str, str] = {}
    meta: dict[str, tuple[str, int]] = {}
    factors = dict(header.factors)
    if profile.header.metadata:
        pairs, meta, meta_factors, problems = _read_metadata(enumerate(lines[:block_end], start=1), profile, header.delimiter)
        for field_name, factor in meta_factors.items():
            factors.setdefault(field_name, factor)
    given = set(header.positions) | set(meta) | set(profile.constants)
    if "test_date" in given:
        given.add("tested_at")
    missing = [f for f in REQUIRED if f not in given]
    if missing:
        problems.append(f"no value for required field(s) {', '.join(missing)} (header {header.cells!r})")
    if problems:
        raise ExportRejected("; ".join(problems))

    records, bad = read_body(text, lines, header.index, header.delimiter, header.positions, len(header.cells))
    mark = profile.decimal_mark
    decimal_comma = mark == "," if mark else (header.delimiter != "," and any(uses_decimal_comma(r) for r in records))
    fixed: dict[str, str | int | None] = {f: v for f, v in profile.constants.items()}
    fixed.update({f: v for f, (v, _line) in meta.items()})
    if profile.one_file_per_specimen:
        records, bad = _one_specimen(records, bad, fixed, header, lines, decimal_comma, profile.thousands)
    else:
        records = [_with_fixed(r, fixed) for r in records]
    records = [_join_date_parts(r) for r in records]
    for line in bad:
        line.values.update({f: str(v) for f, v in fixed.items() if f not in line.values and v is not None})
    dialect = ExportDialect(
        encoding=encoding,
        delimiter=header.delimiter,
        decimal_comma=decimal_comma,
        header_line=header.index + 1,
        columns={f: header.cells[i].strip() for f, i in header.positions.items()},
        load_unit=header.load_unit,
        ignored_columns=tuple(header.ignored),
        preamble=tuple(line for line in lines[:header.index] if line.strip()),
        profile=profile.name,
        thousands=profile.thousands,
        datetime_formats=tuple(profile.datetime_formats),
        timezone=profile.timezone,
        factors={f: v for f, v in factors.items() if v != 1.0},
        metadata=pairs,
    )
    return ParsedExport(name=name, sha256=checksum(content), size=len(content), dialect=dialect, records=records, bad_lines=bad, lines=lines)


def _with_fixed(record: dict[str, str | int | None], fixed: dict[str, str | int | None]) -> dict[str, str | int | None]:
    """A row's own values, and the metadata's or constants' where the row has none (a column wins over metadata)."""
    row = dict(fixed)
    row.update({f: v for f, v in record.items() if v not in (None, "") or f not in fixed})
    return row


def _join_date_parts(record: dict[str, str | int | None]) -> dict[str, str | int | None]:
    date, time = record.pop("test_date", None), record.pop("test_time", None)
    if record.get("tested_at") in (None, "") and date:
        record["tested_at"] = f"{date} {time}".strip() if time else str(date)
    return record


def _one_specimen(
    records: list[dict[str, str | int | None]], bad: list[BadLine], fixed: dict[str, str | int | None], header: _Header,
    lines: list[str], decimal_comma: bool, thousands: str,
) -> tuple[list[dict[str, str | int | None]], list[BadLine]]:
    """A file that is one specimen: its metadata plus its result or curve lines reduced to one row, or one bad line."""
    first_line = header.index + 2
    anchor = records[0]["source_line"] if records else (bad[0].line if bad else first_line)
    values = {f: str(v) for f, v in fixed.items() if v is not None}
    reasons = [f"line {b.line}: {b.reason}" for b in bad]
    row: dict[str, str | int | None] = dict(fixed)
    if not records and not bad:
        reasons.append("no result or curve lines below the header")
    for field_name in header.positions:
        how = header.reduce.get(field_name, "first")
        present = [(r[field_name], int(r["source_line"] or 0)) for r in records if r.get(field_name) not in (None, "")]
        if not present:
            continue
        if how in ("first", "last"):
            row[field_name] = present[0][0] if how == "first" else present[-1][0]
            continue
        numbers = []
        for raw, line in present:
            number = read_number(str(raw), decimal_comma, thousands)
            if number is None:
                reasons.append(f"line {line}: {field_name} {raw!r} is not a number")
            else:
                numbers.append((number, str(raw), line))
        if numbers:
            pick = max(numbers) if how == "max" else min(numbers)
            row[field_name] = pick[1]
            if field_name == "peak_load_kn":
                anchor = pick[2]
    if reasons:
        # Never half a specimen: a cut or unreadable curve may hide the true maximum.
        text = "\n".join(lines[first_line - 2 :])[:2000]
        return [], [BadLine(int(anchor or first_line), text, "one file per specimen, not read as a row: " + "; ".join(reasons), values)]
    row["source_line"] = anchor
    return [row], []


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def parse_with_profiles(content: bytes, name: str, profiles: Sequence[InstrumentProfile]) -> ParsedExport:
    """The file read with the first profile whose name pattern matches and whose header fits; else `NoProfileFits`."""
    tried: list[tuple[str, str]] = []
    for profile in profiles:
        if not profile.matches_name(name):
            tried.append((profile.name, f"file name does not match {' or '.join(profile.files)}"))
            continue
        try:
            return parse_with_profile(content, name, profile)
        except ExportRejected as exc:
            tried.append((profile.name, str(exc)))
    raise NoProfileFits(name, tried)


def known_alias(cell: str) -> str | None:
    """The canonical field a header cell names in the built-in alias table (for `drymix lab check`)."""
    return _HEADER_INDEX.get(normalise_header(cell)[0])

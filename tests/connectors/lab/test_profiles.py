"""Instrument profiles: loading with errors that name file and line, matching by name and header, and each
shipped profile reading its sample files (tests/fixtures/lab/) into the right ERP rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from connectors.lab.exports import ParsedExport, parse_export
from connectors.lab.profiles import (
    InstrumentProfile,
    NoProfileFits,
    ProfileError,
    load_profile,
    load_profiles,
    parse_with_profile,
    parse_with_profiles,
    read_number,
)
from data_mappings.lab import LabMappingOptions, map_lab_results, records_frame
from sandbox.lab import VARIANTS, LabMachine, LabSandbox, render_export

ROOT = Path(__file__).resolve().parents[3]
PROFILES_DIR = ROOT / "config" / "lab"
FIXTURES = ROOT / "tests" / "fixtures" / "lab"
LAB_TZ = "Asia/Kolkata"


@pytest.fixture(scope="module")
def profiles() -> list[InstrumentProfile]:
    return load_profiles(PROFILES_DIR)


def profile_named(profiles: list[InstrumentProfile], name: str) -> InstrumentProfile:
    return next(p for p in profiles if p.name == name)


def fixture(folder: str, name: str) -> tuple[bytes, str]:
    return (FIXTURES / folder / name).read_bytes(), name


def mapped(parsed: ParsedExport) -> pd.DataFrame:
    """The export's rows as the hub maps them (hub/systems/lab.py mapping_options with this export's dialect)."""
    d = parsed.dialect
    options = LabMappingOptions(
        decimal_comma=d.decimal_comma, load_unit=d.load_unit, timezone=d.timezone or LAB_TZ, thousands=d.thousands,
        datetime_formats=d.datetime_formats, factors=tuple(sorted(d.factors.items())),
    )
    return map_lab_results(records_frame(parsed.records), options).set_index("specimen_id")


# --- loading -------------------------------------------------------------------------------------


def test_shipped_profiles_load_with_the_explicit_ones_tried_before_the_alias_reader(profiles: list[InstrumentProfile]) -> None:
    assert [p.name for p in profiles] == ["compression-semicolon", "flexural-per-specimen", "drymix-simulator"]
    assert load_profiles(PROFILES_DIR, ["drymix-simulator", "compression-semicolon"])[0].name == "drymix-simulator"  # [lab] profiles order


def write(tmp_path: Path, text: str, name: str = "site-press.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
description = "a press"
files = ["*.csv"]
delimiter = ";"
decimal = "comma"
sample_id = "Probe"

[constants]
test_type = "compressive"
machine_id = "PRESS-1"

[columns]
"Charge" = "batch_id"
"Alter" = { field = "age_days", unit = "d" }
"Fmax" = { field = "peak_load_kn", unit = "kN" }
"Festigkeit" = { field = "strength_mpa", unit = "MPa" }
"Datum" = "tested_at"
"""


def test_a_valid_site_profile_loads(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, GOOD))
    assert profile.name == "site-press" and profile.decimal_mark == "," and profile.columns["Fmax"].factor == 1.0


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (('"Fmax" = { field = "peak_load_kn", unit = "kN" }', '"Fmax" = { field = "peak_load_kn", unit = "kp" }'), 14, "unit 'kp' is not a force unit"),
        (('"Charge" = "batch_id"', '"Charge" = "batch_no"'), 12, "unknown ERP field 'batch_no'"),
        (('decimal = "comma"', 'decimal = "komma"'), 4, "decimal"),
        (('delimiter = ";"', 'delimiter = ":"'), 3, "delimiter ':'"),
        (('machine_id = "PRESS-1"', 'machine = "PRESS-1"'), 9, "unknown ERP field(s) machine"),
        (('sample_id = "Probe"', 'sample_id = "Probe"\nseparator = ";"'), 6, "Extra inputs are not permitted"),
        (('"Datum" = "tested_at"', ""), 11, "required field(s) tested_at"),
        (('[constants]', '[constants]\ntimezone = "x"'), 8, "unknown ERP field(s) timezone"),
    ],
)
def test_profile_errors_name_the_file_and_the_line_of_the_offending_key(tmp_path: Path, change: tuple[str, str], line: int, message: str) -> None:
    text = GOOD.replace(*change)
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    problem = caught.value.problems[0]
    assert problem.startswith(f"{path} line {line}"), problem
    assert message in problem


def test_a_profile_that_is_not_toml_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, 'files = ["*.csv"\ndelimiter = ";"\n')
    with pytest.raises(ProfileError, match=rf"{path.name}: not valid TOML: .*line 2"):
        load_profile(path)


def test_every_bad_profile_is_reported_at_once_and_a_listed_profile_must_exist(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace('unit = "d"', 'unit = "weeks"'), "a.toml")
    write(tmp_path, GOOD.replace('[columns]', '[columns]\n"Breite" = { field = "width_mm", unit = "furlong" }'), "b.toml")
    with pytest.raises(ProfileError) as caught:
        load_profiles(tmp_path)
    assert len(caught.value.problems) == 2 and "a.toml line 13" in caught.value.problems[0] and "b.toml line 12" in caught.value.problems[1]
    with pytest.raises(ProfileError, match="no such profile.*'gone'"):
        load_profiles(PROFILES_DIR, ["gone"])


# --- matching ------------------------------------------------------------------------------------


def test_a_file_is_read_by_the_profile_whose_pattern_matches_and_whose_header_fits(profiles: list[InstrumentProfile]) -> None:
    content, name = fixture("compression-semicolon", "CONTROLS-AX7_20261112_150500_S0001.csv")
    assert parse_with_profiles(content, name, profiles).dialect.profile == "compression-semicolon"
    content, name = fixture("flexural-per-specimen", "ZWICK-Z050_20261112_151000_B-M1-000501-28D-P1.txt")
    assert parse_with_profiles(content, name, profiles).dialect.profile == "flexural-per-specimen"
    content, name = fixture("drymix-simulator", "MATEST-C089_20261112_150000_S0001.csv")
    assert parse_with_profiles(content, name, profiles).dialect.profile == "drymix-simulator"


def test_a_file_that_matches_no_profile_gets_each_profiles_reason(profiles: list[InstrumentProfile]) -> None:
    content, name = fixture("unknown", "HUMBOLDT_LIMS_0042.csv")
    with pytest.raises(NoProfileFits) as caught:
        parse_with_profiles(content, name, profiles)
    tried = dict(caught.value.tried)
    assert list(tried) == ["compression-semicolon", "flexural-per-specimen", "drymix-simulator"]
    assert "no header row with this profile's columns" in tried["compression-semicolon"]
    assert "no marker line starting 'Curve data'" in tried["flexural-per-specimen"]
    assert "no header row found" in tried["drymix-simulator"] or "no header row" in tried["drymix-simulator"]
    assert str(caught.value).startswith(f"no instrument profile fits {name}: compression-semicolon: ")
    explicit = [p for p in profiles if not p.aliases]  # the name pattern comes first: a .dat file is not even opened
    with pytest.raises(NoProfileFits) as caught:
        parse_with_profiles(content, "export.dat", explicit)
    assert [why for _p, why in caught.value.tried] == ["file name does not match *.csv or *.txt", "file name does not match *.txt or *.csv"]


def test_a_header_that_lacks_a_profile_column_does_not_fit_and_is_not_half_read(profiles: list[InstrumentProfile]) -> None:
    content, name = fixture("compression-semicolon", "CONTROLS-AX7_20261113_090500_S0004.csv")  # no Fmax column
    with pytest.raises(NoProfileFits) as caught:
        parse_with_profiles(content, name, profiles)
    assert "header lacks column(s) 'Fmax'" in dict(caught.value.tried)["compression-semicolon"]
    assert "peak_load_kn" in dict(caught.value.tried)["drymix-simulator"]


def test_no_profiles_configured_is_a_reason_too() -> None:
    with pytest.raises(NoProfileFits, match="no profiles are configured"):
        parse_with_profiles(b"a;b\n", "x.csv", [])


# --- drymix-simulator: today's parsing, unchanged ------------------------------------------------


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "missing_column"] + ["decimal_comma+reordered+preamble"])
def test_drymix_simulator_profile_reads_every_sandbox_export_exactly_as_the_generic_parser(profiles: list[InstrumentProfile], variant: str) -> None:
    records = LabMachine(seed=17).test_batches(["B-M1-000101", "B-M1-000102"])
    content = render_export(records, variant.split("+"))
    generic = parse_export(content, "s.csv")
    profiled = parse_with_profiles(content, "s.csv", profiles)
    assert profiled.dialect.profile == "drymix-simulator"
    assert profiled.records == generic.records and profiled.bad_lines == generic.bad_lines
    for attribute in ("encoding", "delimiter", "decimal_comma", "header_line", "columns", "load_unit", "preamble"):
        assert getattr(profiled.dialect, attribute) == getattr(generic.dialect, attribute), attribute


# --- compression-semicolon -----------------------------------------------------------------------


def test_compression_export_reads_metadata_decimal_commas_thousands_and_kn(profiles: list[InstrumentProfile]) -> None:
    content, name = fixture("compression-semicolon", "CONTROLS-AX7_20261112_150500_S0001.csv")
    parsed = parse_with_profile(content, name, profile_named(profiles, "compression-semicolon"))
    assert (parsed.dialect.delimiter, parsed.dialect.decimal_comma, parsed.dialect.encoding, parsed.dialect.header_line) == (";", True, "cp1252", 8)
    assert parsed.dialect.metadata["Serial no."] == "50-C56Z02/1183" and parsed.dialect.metadata["Standard"] == "EN 1015-11"
    assert len(parsed.records) == 12 and parsed.bad_lines == []
    first = parsed.records[0]
    assert (first["machine_id"], first["test_type"], first["test_standard"], first["area_mm2"]) == ("CONTROLS-AX7", "compressive", "EN 1015-11", "1.600,0")
    frame = mapped(parsed)
    assert frame["mapping_errors"].isna().all()
    row = frame.loc["B-M1-000401-28D-P1A"]
    line = parsed.lines[int(first["source_line"]) - 1].split(";")  # B-M1-000401-28D-P1A;B-M1-000401;...;40,11;39,86;1.600,0;48,23;30,15;12.11.2026 14:35
    assert row["peak_load_kn"] == pytest.approx(float(line[7].replace(",", ".")))
    assert row["strength_mpa"] == pytest.approx(float(line[8].replace(",", ".")))
    assert row["area_mm2"] == 1600.0 and row["width_mm"] == pytest.approx(float(line[4].replace(",", ".")))
    local = datetime.strptime(line[9], "%d.%m.%Y %H:%M")  # noqa: DTZ007 - the machine's local clock
    assert row["tested_at"] == pd.Timestamp(local, tz=LAB_TZ).tz_convert(UTC)
    assert (frame["strength_deviation_mpa"] <= frame["strength_allowed_mpa"]).all()  # load / 1600 mm² agrees with Rc


def test_compression_export_with_a_bad_number_and_a_truncated_one(profiles: list[InstrumentProfile]) -> None:
    profile = profile_named(profiles, "compression-semicolon")
    parsed = parse_with_profile(*fixture("compression-semicolon", "CONTROLS-AX7_20261112_160500_S0002.csv"), profile)
    errors = mapped(parsed)["mapping_errors"].dropna().tolist()
    assert errors == ["peak_load_kn: '2O,45' is not a number (this export writes a decimal comma)"]
    parsed = parse_with_profile(*fixture("compression-semicolon", "CONTROLS-AX7_20261112_170500_S0003.csv"), profile)
    assert len(parsed.records) == 11 and len(parsed.bad_lines) == 1 and "truncated last line" in parsed.bad_lines[0].reason
    assert parsed.bad_lines[0].values["machine_id"] == "CONTROLS-AX7"  # the metadata travels with the quarantined line


# --- flexural-per-specimen ----------------------------------------------------------------------


def test_a_flexural_specimen_file_gives_one_row_with_fmax_the_curve_maximum_in_kn(profiles: list[InstrumentProfile]) -> None:
    content, name = fixture("flexural-per-specimen", "ZWICK-Z050_20261112_151000_B-M1-000501-28D-P1.txt")
    parsed = parse_with_profile(content, name, profile_named(profiles, "flexural-per-specimen"))
    assert len(parsed.records) == 1 and parsed.bad_lines == [] and parsed.data_lines == 1
    curve = [line.split(";") for line in parsed.lines[parsed.dialect.header_line :] if line.strip()]
    peak_n = max(float(force.replace(",", ".")) for _t, _d, force in curve)
    assert len(curve) > 40
    frame = mapped(parsed)
    row = frame.loc["B-M1-000501-28D-P1"]
    assert row["peak_load_kn"] == pytest.approx(peak_n / 1000.0)
    assert (row["batch_id"], row["test_type"], row["age_days"], row["span_mm"], row["machine_id"], row["operator"]) == (
        "B-M1-000501", "flexural", 28, 100.0, "ZWICK-Z050", "S. Günther")
    assert row["width_mm"] == pytest.approx(40.20) and row["height_mm"] == pytest.approx(40.16)
    assert row["tested_at"] == pd.Timestamp("2026-11-12 14:33:18", tz=LAB_TZ).tz_convert(UTC)  # Date + Clock time, local
    assert row["mapping_errors"] is None and row["strength_deviation_mpa"] <= row["strength_allowed_mpa"]  # 1.5 F l / (b d²)


@pytest.mark.parametrize(
    ("file_name", "reason"),
    [
        ("ZWICK-Z050_20261112_151000_B-M1-000502-28D-P1.txt", "truncated last line"),
        ("ZWICK-Z050_20261112_151000_B-M1-000502-28D-P2.txt", "peak_load_kn '#WERT!' is not a number"),
    ],
)
def test_a_cut_or_unreadable_curve_is_one_quarantined_line_never_a_row(profiles: list[InstrumentProfile], file_name: str, reason: str) -> None:
    parsed = parse_with_profile(*fixture("flexural-per-specimen", file_name), profile_named(profiles, "flexural-per-specimen"))
    assert parsed.records == [] and len(parsed.bad_lines) == 1 and parsed.data_lines == 1
    bad = parsed.bad_lines[0]
    assert bad.reason.startswith("one file per specimen, not read as a row") and reason in bad.reason
    assert bad.values["specimen_id"] == file_name.rsplit("_", 1)[1].removesuffix(".txt")


def test_a_specimen_file_without_its_batch_line_fits_no_profile(profiles: list[InstrumentProfile]) -> None:
    content, name = fixture("flexural-per-specimen", "ZWICK-Z050_20261112_151000_B-M1-000502-28D-P3.txt")
    with pytest.raises(NoProfileFits) as caught:
        parse_with_profiles(content, name, profiles)
    assert "metadata line(s) 'Batch' missing above the header" in dict(caught.value.tried)["flexural-per-specimen"]


# --- units, numbers, sandbox formats -------------------------------------------------------------


def test_declared_units_are_converted_to_the_erps_units(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, GOOD.replace('"Fmax" = { field = "peak_load_kn", unit = "kN" }', '"Fmax" = { field = "peak_load_kn", unit = "lbf" }')
                                 .replace('"Festigkeit" = { field = "strength_mpa", unit = "MPa" }', '"Festigkeit" = { field = "strength_mpa", unit = "psi" }')
                                 + '"Breite" = { field = "width_mm", unit = "cm" }\n"Flaeche" = { field = "area_mm2", unit = "cm²" }\n'))
    content = b"Probe;Charge;Alter;Fmax;Festigkeit;Datum;Breite;Flaeche\nS1;B1;28;4316,5;1740,5;2026-11-12T10:00:00+00:00;4,0;16\n"
    frame = mapped(parse_with_profile(content, "p.csv", profile))
    row = frame.loc["S1"]
    assert row["peak_load_kn"] == pytest.approx(19.2008, rel=1e-4)  # 4316.5 lbf
    assert row["strength_mpa"] == pytest.approx(12.0003, rel=1e-4)  # 1740.5 psi
    assert (row["width_mm"], row["area_mm2"]) == (pytest.approx(40.0), pytest.approx(1600.0))


def test_a_header_unit_that_contradicts_the_profile_does_not_fit(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, GOOD))
    content = b"Probe;Charge;Alter;Fmax [N];Festigkeit;Datum\nS1;B1;28;19200;12,0;2026-11-12T10:00:00+00:00\n"
    with pytest.raises(NoProfileFits, match=r"column 'Fmax \[N\]' is in n, the profile says kN"):
        parse_with_profiles(content, "p.csv", [profile])


def test_numbers_with_thousands_separators_are_read_only_when_grouped_right() -> None:
    assert read_number("1.600,5", True, ".") == 1600.5
    assert read_number("16.00,5", True, ".") is None
    assert read_number("1600,5", True, ".") == 1600.5
    assert read_number("1.5", True) is None and read_number("1,5", False) is None


def test_the_sandbox_writes_both_new_formats_and_refuses_variants_they_cannot_have(tmp_path: Path, profiles: list[InstrumentProfile]) -> None:
    press = LabSandbox(drop_dir=tmp_path, seed=8, fmt="compression-semicolon").test_session(batch_ids=["B-1"])
    assert [r["test_type"] for r in press.records] == ["compressive"] * 6 and len(press.files) == 1
    flex = LabSandbox(drop_dir=tmp_path, seed=8, fmt="flexural-per-specimen").test_session(batch_ids=["B-1"], variants=["truncated"])
    assert len(flex.files) == 3 and all(name.endswith(".txt") for name, _c in flex.files)
    found = {p.name: parse_with_profiles(p.read_bytes(), p.name, profiles) for p in tmp_path.iterdir()}
    assert sorted(p.dialect.profile or "" for p in found.values()) == ["compression-semicolon", *["flexural-per-specimen"] * 3]
    assert sum(len(p.records) for p in found.values()) == 6 + 2 and sum(len(p.bad_lines) for p in found.values()) == 1
    with pytest.raises(ValueError, match="drymix-simulator format only"):
        LabSandbox(seed=8, fmt="compression-semicolon").test_session(variants=["reordered"])


def test_lab_check_says_which_profile_reads_a_file_and_why_none_reads_another() -> None:
    import json

    from typer.testing import CliRunner

    from hub.cli.main import app

    good = FIXTURES / "flexural-per-specimen" / "ZWICK-Z050_20261112_151000_B-M1-000501-28D-P1.txt"
    unknown = FIXTURES / "unknown" / "HUMBOLDT_LIMS_0042.csv"
    result = CliRunner().invoke(app, ["lab", "check", str(good), str(unknown), "--json"])
    assert result.exit_code == 1, result.output  # one file fits no profile
    report = json.loads(result.stdout)
    read, refused = report["files"]
    assert read["profile"] == "flexural-per-specimen" and len(read["rows"]) == 1 and read["rows"][0]["problems"] is None
    assert read["rows"][0]["specimen_id"] == "B-M1-000501-28D-P1" and read["metadata"]["Serial number"] == "193412"
    assert refused["profile"] is None and [t["profile"] for t in refused["tried"]] == report["profiles"]
    assert CliRunner().invoke(app, ["lab", "check", str(good)]).exit_code == 0


def test_lab_check_refuses_invalid_profiles_naming_file_and_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hub.cli.main import app

    path = write(tmp_path, GOOD.replace('unit = "kN"', 'unit = "kp"'))
    result = CliRunner().invoke(app, ["lab", "check", "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{path.name} line 14" in result.output.replace("\n", "") and "unit 'kp'" in result.output


def test_a_per_specimen_file_with_a_result_table_and_a_fixed_header_line_gives_one_row(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, """\
files = ["*_Results.csv"]
delimiter = ","
decimal = "point"
datetime_formats = ["%m/%d/%Y %I:%M %p"]
timezone = "America/New_York"
sample_id = "Sample"
one_file_per_specimen = true

[header]
lines_above = 4
metadata = true

[metadata]
"Machine" = "machine_id"
"Batch" = "batch_id"
"Age" = { field = "age_days", unit = "d" }

[columns]
"Test date" = "tested_at"
"Maximum Load" = { field = "peak_load_kn", unit = "N" }
"Compressive stress at Maximum Load" = { field = "strength_mpa", unit = "MPa" }

[constants]
test_type = "compressive"
""", "bluehill.toml"))
    content = (
        b"Sample: B-7-28D-C1\nMachine: INSTRON-5982\nBatch: B-7\nAge: 28\n"
        b"Sample,Maximum Load (N),Compressive stress at Maximum Load (MPa),Test date\n"
        b"B-7-28D-C1,19200.0,12.0,11/12/2026 09:15 AM\n"
    )
    parsed = parse_with_profiles(content, "B-7-28D-C1.is_comp_Results.csv", [profile])
    assert parsed.dialect.header_line == 5 and len(parsed.records) == 1
    row = mapped(parsed).loc["B-7-28D-C1"]
    assert (row["peak_load_kn"], row["strength_mpa"], row["machine_id"], row["batch_id"], row["age_days"]) == (19.2, 12.0, "INSTRON-5982", "B-7", 28)
    assert row["tested_at"] == pd.Timestamp("2026-11-12 09:15", tz="America/New_York").tz_convert(UTC)
    with pytest.raises(NoProfileFits, match="the header should be line 5"):
        parse_with_profiles(b"Sample: X\n", "X_Results.csv", [profile])


def test_lab_check_reports_every_shipped_sample_clean_or_dirty() -> None:
    """Clean and dirty rows of one file side by side: a row the mapping found nothing wrong with has no problems."""
    import json

    from typer.testing import CliRunner

    from hub.cli.main import app

    files = sorted(str(p) for p in FIXTURES.rglob("*") if p.is_file())
    result = CliRunner().invoke(app, ["lab", "check", *files, "--json"])
    assert result.exit_code == 1, result.output  # the unknown LIMS report and the cut-off specimen fit no profile
    report = json.loads(result.stdout)
    assert len(report["files"]) == len(files)
    rows = [row for entry in report["files"] for row in entry.get("rows") or []]
    assert rows and all(row["problems"] is None or isinstance(row["problems"], str) for row in rows)
    assert any(row["problems"] is None for row in rows) and any(row["problems"] for row in rows)

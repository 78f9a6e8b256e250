"""The documents suite refuses what SharePoint would refuse (and what the business does not want) before upload."""

from __future__ import annotations

from typing import Any

import pytest

from data_mappings.documents import map_documents, normalise_folder
from expectations.runner import validate_frame


def _row(key: str, **over: Any) -> dict[str, Any]:
    return {"id": len(key), "document_key": key, "folder_path": "ERP/Invoices", "file_name": f"{key}.pdf",
            "content": b"%PDF-1.7", "conflict_policy": "rename", **over}


def _rules(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    frame = map_documents(rows)
    frame.index = [r["document_key"] for r in rows]
    outcome = validate_frame("documents", frame)
    return {str(k): {f.rule_id or "" for f in v if f.severity == "critical"} for k, v in outcome.failures.items()}


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("INV:1.pdf", "documents.file_name.characters"),
        ('INV"1".pdf', "documents.file_name.characters"),
        ("INV|1.pdf", "documents.file_name.characters"),
        ("INV\t1.pdf", "documents.file_name.characters"),
        (" INV-1.pdf", "documents.file_name.spaces"),
        ("INV-1.pdf ", "documents.file_name.spaces"),
        ("INV-1.", "documents.file_name.trailing_period"),
        ("con", "documents.file_name.reserved"),
        ("LPT1", "documents.file_name.reserved"),
        ("desktop.ini", "documents.file_name.reserved"),
        ("~$INV-1.xlsx", "documents.file_name.reserved"),
        ("a_vti_b.pdf", "documents.file_name.reserved"),
        ("x" * 256, "documents.file_name.length"),
    ],
)
def test_sharepoint_name_rules_quarantine_the_row(name: str, rule: str) -> None:
    assert rule in _rules([_row("K1", file_name=name)])["K1"]


def test_good_names_with_unicode_spaces_and_hashes_pass() -> None:
    rows = [_row("A", file_name="Test certificate #42 (batch 7).pdf"), _row("B", file_name="डिलीवरी चालान 17.pdf"),
            _row("C", file_name="INV 2026-000123.PDF")]
    assert _rules(rows) == {}


def test_business_rules_size_folder_source_and_policy() -> None:
    failures = _rules([
        _row("EMPTY", content=b""),
        _row("HUGE", content=None, source_path="/data/huge.pdf", source_exists=True, source_size=300 * 1024 * 1024),
        _row("GONE", content=None, source_path="/data/gone.pdf", source_exists=False),
        _row("FOLDER", folder_path="ERP/Invoice"),
        _row("POLICY", conflict_policy="overwrite"),
        _row("LONG", folder_path="ERP/Invoices", file_name="n" * 250 + ".pdf"),
    ])
    assert "documents.size.limits" in failures["EMPTY"] and "documents.size.limits" in failures["HUGE"]
    assert {"documents.source.present", "documents.mapping_errors.none"} <= failures["GONE"]
    assert failures["FOLDER"] == {"documents.folder.known"}
    assert failures["POLICY"] == {"documents.conflict_policy.known"}
    assert "documents.path.length" not in failures.get("LONG", set())  # 12 + 254 characters is fine


def test_unusual_extension_is_a_warning_only() -> None:
    frame = map_documents([_row("EXE", file_name="tool.exe")])
    outcome = validate_frame("documents", frame)
    assert len(outcome.valid) == 1 and [f.rule_id for f in outcome.warnings[0]] == ["documents.extension.usual"]


def test_folders_typed_as_windows_paths_are_normalised() -> None:
    assert normalise_folder("ERP\\Invoices\\") == "ERP/Invoices"
    assert normalise_folder("/ERP//Test Certificates/") == "ERP/Test Certificates"
    assert normalise_folder("  ") is None

"""ERP document outbox rows -> the frame the documents suite checks before anything is uploaded.

Pure: the flow reads the rows and stats the files (I/O), this module only derives and normalises.
Folders are written with forward slashes and no leading/trailing slash ("ERP/Invoices"); a Windows
path typed in the ERP ("ERP\\Invoices\\") is normalised, not refused. File names are NFC-normalised
(SharePoint compares names after NFC) but otherwise kept as given: an invalid name is quarantined with
the reason, never silently renamed, so the ERP user sees which document needs a new name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

DOCUMENT_COLUMNS: list[str] = [
    "id",
    "document_key",
    "folder_path",
    "file_name",
    "extension",
    "size_bytes",
    "has_source",
    "conflict_policy",
    "path_length",
    "mapping_errors",
]
"""Columns of the mapped document frame (the suite checks exactly these)."""


def normalise_folder(folder: Any) -> str | None:
    """ "ERP\\Invoices\\" or "/ERP//Invoices" -> "ERP/Invoices"; None when blank."""
    if folder is None:
        return None
    parts = [p.strip() for p in str(folder).replace("\\", "/").split("/")]
    cleaned = "/".join(p for p in parts if p)
    return cleaned or None


def map_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """One outbox row (plus `source_size` / `source_exists` found by the flow) -> one frame row."""
    errors: list[str] = []
    name = row.get("file_name")
    name = unicodedata.normalize("NFC", str(name)) if name is not None else None
    folder = normalise_folder(row.get("folder_path"))
    content = row.get("content")
    if content is not None:
        size: int | None = len(content)
        has_source = True
    elif row.get("source_path"):
        has_source = bool(row.get("source_exists"))
        size = int(row["source_size"]) if row.get("source_size") is not None else None
        if not has_source:
            errors.append(f"source file not found: {row.get('source_path')}")
    else:
        has_source, size = False, None
        errors.append("neither source_path nor content is set")
    extension = name.rpartition(".")[2].lower() if name and "." in name else ""
    path_length = len(f"{folder or ''}/{name or ''}")
    return {
        "id": row.get("id"),
        "document_key": row.get("document_key"),
        "folder_path": folder,
        "file_name": name,
        "extension": extension,
        "size_bytes": size,
        "has_source": has_source,
        "conflict_policy": (str(row.get("conflict_policy") or "").strip().lower() or None),
        "path_length": path_length,
        "mapping_errors": "; ".join(errors) or None,
    }


def map_documents(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> the documents frame, one row per outbox row, in order."""
    import pandas as pd

    frame = pd.DataFrame([map_document(r) for r in rows], columns=DOCUMENT_COLUMNS)
    return frame.astype({"size_bytes": "Int64", "path_length": "int64", "has_source": "bool"})

"""Expectation suite for ERP documents before they are uploaded to SharePoint (``documents``).

Rules follow SharePoint Online / OneDrive for Business naming and size restrictions: names may not
contain ``" * : < > ? / \\ |`` or control characters, may not begin or end with a space or end with a
period, may not be a reserved name (``.lock``, ``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0-9``,
``LPT0-9``, ``desktop.ini``), start with ``~$`` or contain ``_vti_``; the decoded path is at most 400
characters. Business rules on top: the folder is one of the configured known folders, the file is not
empty and not larger than ``max_file_bytes``, the conflict policy is known. A refused row is
quarantined with ``DATA_VALIDATION_FAILED`` and never uploaded.

``known_folders`` and ``max_file_bytes`` come from ``[microsoft365.documents]`` in
config/integrations.toml through :func:`suite_parameters`, evaluated per validation.

Importing this module does not import Great Expectations; only :func:`build_suite` does.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from data_mappings.documents import DOCUMENT_COLUMNS

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME: Final = "documents"
CONFLICT_POLICIES: Final = ("replace", "rename", "fail")
ALLOWED_EXTENSIONS: Final = ("pdf", "xlsx", "xls", "docx", "doc", "csv", "png", "jpg", "jpeg", "tif", "tiff", "txt", "xml", "zip")
NAME_ALLOWED_CHARS: Final = r'^[^"*:<>?/\\|\x00-\x1f]+\Z'
NAME_NO_OUTER_SPACE: Final = r"^\S(?:.*\S)?\Z"
NAME_NO_TRAILING_PERIOD: Final = r"[^.]\Z"
NAME_RESERVED: Final = r"(?i)^(?:\.lock|con|prn|aux|nul|com[0-9]|lpt[0-9]|desktop\.ini)\Z|^~\$|_vti_"
MAX_NAME: Final = 255
MAX_PATH: Final = 400


def suite_parameters(now: datetime) -> dict[str, Any]:
    """Known folders and the size limit from the configuration, read per validation."""
    from hub.core.settings import microsoft365_options

    documents, _ = microsoft365_options()
    return {"known_folders": list(documents.known_folders), "max_file_bytes": documents.max_file_bytes}


def build_suite() -> gx.ExpectationSuite:
    """Build the ``documents`` expectation suite (not yet added to a context)."""
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity

    from expectations.limits import database_limits
    from hub.core.models import DocumentOutbox

    gxe = gx.expectations

    def meta(rule_id: str) -> dict[str, str]:
        return {"rule_id": f"documents.{rule_id}"}

    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(DOCUMENT_COLUMNS), exact_match=True, meta=meta("columns"),
                                         notes="The mapping must emit exactly the document frame columns."),
        gxe.ExpectColumnValuesToNotBeNull(column="document_key", meta=meta("document_key.required"),
                                          notes="Every document needs its ERP key: it makes the upload idempotent."),
        gxe.ExpectColumnValuesToBeUnique(column="document_key", meta=meta("document_key.unique"),
                                         notes="One outbox row per ERP document in a page."),
        gxe.ExpectColumnValuesToNotBeNull(column="file_name", meta=meta("file_name.required"), notes="A document needs a file name."),
        gxe.ExpectColumnValuesToMatchRegex(column="file_name", regex=NAME_ALLOWED_CHARS, meta=meta("file_name.characters"),
                                           notes='SharePoint refuses names with " * : < > ? / \\ | or control characters.'),
        gxe.ExpectColumnValuesToMatchRegex(column="file_name", regex=NAME_NO_OUTER_SPACE, meta=meta("file_name.spaces"),
                                           notes="Names may not begin or end with a space."),
        gxe.ExpectColumnValuesToMatchRegex(column="file_name", regex=NAME_NO_TRAILING_PERIOD, meta=meta("file_name.trailing_period"),
                                           notes="Names may not end with a period."),
        gxe.ExpectColumnValuesToNotMatchRegex(column="file_name", regex=NAME_RESERVED, meta=meta("file_name.reserved"),
                                              notes="Reserved names (.lock, CON, PRN, AUX, NUL, COM0-9, LPT0-9, desktop.ini), "
                                                    "names starting with ~$ and names containing _vti_ are refused."),
        gxe.ExpectColumnValueLengthsToBeBetween(column="file_name", min_value=1, max_value=MAX_NAME, meta=meta("file_name.length"),
                                                notes=f"At most {MAX_NAME} characters."),
        gxe.ExpectColumnValuesToBeBetween(column="path_length", max_value=MAX_PATH, meta=meta("path.length"),
                                          notes=f"The decoded folder + name path is at most {MAX_PATH} characters."),
        gxe.ExpectColumnValuesToNotBeNull(column="folder_path", meta=meta("folder.required"), notes="A target folder is required."),
        gxe.ExpectColumnValuesToBeInSet(column="folder_path", value_set={"$PARAMETER": "known_folders"}, meta=meta("folder.known"),
                                        notes="Documents go only to the configured folders ([microsoft365.documents] known_folders): "
                                              "a typo would otherwise create a stray folder in SharePoint."),
        gxe.ExpectColumnValuesToBeInSet(column="has_source", value_set=[True], meta=meta("source.present"),
                                        notes="The file must exist on disk, or the row must carry the bytes."),
        gxe.ExpectColumnValuesToNotBeNull(column="size_bytes", meta=meta("size.known"), notes="The size must be known."),
        gxe.ExpectColumnValuesToBeBetween(column="size_bytes", min_value=1, max_value={"$PARAMETER": "max_file_bytes"},
                                          meta=meta("size.limits"),
                                          notes="Empty documents are broken exports; larger than max_file_bytes is refused."),
        gxe.ExpectColumnValuesToBeInSet(column="conflict_policy", value_set=list(CONFLICT_POLICIES), meta=meta("conflict_policy.known"),
                                        notes="What to do when the name exists: replace, rename or fail."),
        gxe.ExpectColumnValuesToBeInSet(column="extension", value_set=list(ALLOWED_EXTENSIONS), severity=FailureSeverity.WARNING,
                                        meta=meta("extension.usual"),
                                        notes="Warning only: an unusual extension is reported, the document is still uploaded."),
        gxe.ExpectColumnValuesToBeNull(column="mapping_errors", meta=meta("mapping_errors.none"),
                                       notes="The mapping records here why a row cannot be uploaded (missing file, no content)."),
    ]
    expectations += database_limits(DocumentOutbox, DOCUMENT_COLUMNS, expectations, rule_prefix=SUITE_NAME)
    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=expectations,
        meta={"notes": {"format": "markdown", "content": ["Quality gate for ERP documents before their upload to SharePoint."]},
              "dataset": "documents"},
    )

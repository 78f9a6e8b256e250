"""Microsoft 365 through Microsoft Graph (OAuth2 client credentials): SharePoint uploads and Outlook calendars."""

from connectors.microsoft365.connector import (
    CALENDAR_DELTA,
    CHUNK_UNIT,
    CONFLICT_POLICIES,
    BatchRequest,
    BatchResult,
    CalendarOptions,
    DeltaPage,
    DocumentOptions,
    Microsoft365Connector,
    UploadedItem,
    UploadProgress,
    build_microsoft365_connector,
    load_options,
    parse_graph_error,
)

__all__ = [
    "CALENDAR_DELTA",
    "CHUNK_UNIT",
    "CONFLICT_POLICIES",
    "BatchRequest",
    "BatchResult",
    "CalendarOptions",
    "DeltaPage",
    "DocumentOptions",
    "Microsoft365Connector",
    "UploadProgress",
    "UploadedItem",
    "build_microsoft365_connector",
    "load_options",
    "parse_graph_error",
]

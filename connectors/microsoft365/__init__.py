"""Microsoft 365 through Microsoft Graph (OAuth2 client credentials): SharePoint uploads and Outlook calendars."""

from connectors.core.config import CHUNK_UNIT, CalendarOptions, DocumentOptions
from connectors.microsoft365.connector import (
    CALENDAR_DELTA,
    CONFLICT_POLICIES,
    BatchRequest,
    BatchResult,
    Microsoft365Connector,
    UploadedItem,
    UploadProgress,
    parse_graph_error,
)

__all__ = [
    "CALENDAR_DELTA",
    "CHUNK_UNIT",
    "CONFLICT_POLICIES",
    "BatchRequest",
    "BatchResult",
    "CalendarOptions",
    "DocumentOptions",
    "Microsoft365Connector",
    "UploadProgress",
    "UploadedItem",
    "parse_graph_error",
]

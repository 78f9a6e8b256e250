"""WhatsApp Business Cloud API (Bearer token, one business phone number id)."""

from connectors.whatsapp.connector import (
    WhatsAppConnector,
    category_for_code,
    message_id,
    parse_meta_error,
)

__all__ = ["WhatsAppConnector", "category_for_code", "message_id", "parse_meta_error"]

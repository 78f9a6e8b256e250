"""SAP S/4HANA over OData V2 (API_BUSINESS_PARTNER)."""

from connectors.sap.connector import BUSINESS_PARTNERS, SapConnector

__all__ = ["BUSINESS_PARTNERS", "SapConnector"]

"""SAP S/4HANA over OData V2 (API_BUSINESS_PARTNER, API_SALES_ORDER_SRV)."""

from connectors.sap.connector import BUSINESS_PARTNERS, SapConnector
from connectors.sap.sales_orders import SALES_ORDER_SERVICE, SALES_ORDERS, SapSalesOrderConnector, service_url

__all__ = ["BUSINESS_PARTNERS", "SALES_ORDERS", "SALES_ORDER_SERVICE", "SapConnector", "SapSalesOrderConnector", "service_url"]

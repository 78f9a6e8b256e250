"""Razorpay Orders/Payments API (HTTP Basic key_id:key_secret)."""

from connectors.razorpay.connector import (
    PAYMENTS,
    RazorpayConnector,
    parse_razorpay_error,
    payment_signature,
    verify_payment_signature,
)

__all__ = [
    "PAYMENTS",
    "RazorpayConnector",
    "parse_razorpay_error",
    "payment_signature",
    "verify_payment_signature",
]

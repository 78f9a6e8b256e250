"""`drymix razorpay`: the ERP's Razorpay checkout callback, run by the hub (hub/systems/razorpay.py confirm_checkout).

After Razorpay Checkout succeeds, the browser hands the ERP razorpay_order_id, razorpay_payment_id and
razorpay_signature; the ERP passes them here before it tells the customer anything. Exit codes: 0 verified
(recorded, a replay, or the order already captured/refunded), 1 refused (forged signature, recorded in
`integration_errors`), 2 usage, 3 unknown order (the hub never created it), 4 the check could not run
(credentials missing, database or Razorpay unavailable; recorded like any failed call, safe to repeat).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from connectors.core.errors import IntegrationError

razorpay_app = typer.Typer(help="Razorpay payments: the ERP's checkout callback.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)

EXIT_VERIFIED, EXIT_REFUSED, EXIT_USAGE, EXIT_UNKNOWN_ORDER, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4


@razorpay_app.command("checkout-callback")
def checkout_callback(
    order: Annotated[str, typer.Option("--order", help="razorpay_order_id from the checkout (an order the hub created)")],
    payment: Annotated[str, typer.Option("--payment", help="razorpay_payment_id from the checkout")],
    signature: Annotated[str, typer.Option("--signature", help="razorpay_signature from the checkout; '-' reads it from stdin (kept out of the process list)")],
    fetch: Annotated[bool, typer.Option("--fetch", help="also GET the payment from Razorpay and record its status (spends the 100/s API budget)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object for machines")] = False,
) -> None:
    """Verify a checkout callback against the stored order and record the payment (authorized; capture follows by webhook)."""
    from connectors.core.errors import classify_exception
    from hub.systems.razorpay import FORGED, UNKNOWN_ORDER, confirm_checkout

    signature = sys.stdin.readline().strip() if signature == "-" else signature.strip()
    if not (order.strip() and payment.strip() and signature):
        err_console.print("[red]--order, --payment and --signature must not be empty[/red]")
        raise typer.Exit(EXIT_USAGE)
    try:
        result = confirm_checkout(order.strip(), payment.strip(), signature, fetch=fetch)
    except Exception as exc:  # noqa: BLE001 - classified and reported; the ERP may repeat the callback safely
        error = classify_exception(exc, integration="razorpay", operation="checkout_callback")
        error_id = _record(error, order.strip(), payment.strip(), exc)
        if as_json:
            print(json.dumps({"outcome": "error", "order_id": order, "payment_id": payment, "verified": False,
                              "category": error.category.value, "message": error.message, "error_id": error_id}))
        else:
            err_console.print(f"[red]not checked[/red]: {error}")
            err_console.print(f"  {error.remedy}" + (f" (recorded as integration_errors #{error_id})" if error_id else ""))
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    if as_json:
        print(json.dumps(result.as_dict()))
    elif result.verified:
        console.print(f"[green]{result.outcome}[/green] order {result.order_id} payment {result.payment_id}: "
                      f"{result.payment_status} (order {result.order_status}); {result.message}")
    else:
        err_console.print(f"[red]{result.outcome}[/red] order {result.order_id} payment {result.payment_id}: {result.message}")
        if result.error_id is not None:
            err_console.print(f"  recorded as integration_errors #{result.error_id}; `drymix errors show {result.error_id}`")
    if result.outcome == FORGED:
        raise typer.Exit(EXIT_REFUSED)
    if result.outcome == UNKNOWN_ORDER:
        raise typer.Exit(EXIT_UNKNOWN_ORDER)


def _record(error: IntegrationError, order_id: str, payment_id: str, exc: BaseException) -> int | None:
    """The failure in `integration_errors` when the database takes it (it may be what failed)."""
    from hub.ledger.errors import record_error

    try:
        return record_error(error, integration="razorpay", dataset="payments", unit={"order_id": order_id, "payment_id": payment_id}, exc=exc)
    except Exception:  # noqa: BLE001 - spooled or not, the command's answer is the failure itself
        return None

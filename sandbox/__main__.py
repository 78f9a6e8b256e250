"""``python -m sandbox <system> [options]``: run a sandbox server from the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

_USAGE = """usage: python -m sandbox <system> [options]

systems:
  sap       SAP S/4HANA API_BUSINESS_PARTNER and API_SALES_ORDER_SRV (OData V2)
                                                          python -m sandbox sap --help
  razorpay  Razorpay Orders/Payments + signed webhooks    python -m sandbox razorpay --help
  whatsapp  WhatsApp Cloud API send + signed status hooks python -m sandbox whatsapp --help
  microsoft365  Entra ID token + Microsoft Graph (drive uploads, calendar, delta, $batch)
                                                          python -m sandbox microsoft365 --help
  google    Google OAuth (JWT bearer) + Calendar v3 events python -m sandbox google --help
  plant     OPC UA dry-mix plant (asyncua server)         python -m sandbox plant --help
  plant-vendor  the plant in a vendor's shape (Kepware or S7-1500 layout)
                                                          python -m sandbox plant-vendor --help
  lab       lab testing machine: CSV exports + results API python -m sandbox lab --help
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the simulator named by the first argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if args else 2
    system, rest = args[0], args[1:]
    if system == "sap":
        # Imported lazily: generating data and importing uvicorn is only needed when serving.
        from sandbox.sap import main as sap_main

        return sap_main(rest)
    if system == "razorpay":
        from sandbox.razorpay import main as razorpay_main

        return razorpay_main(rest)
    if system == "whatsapp":
        from sandbox.whatsapp import main as whatsapp_main

        return whatsapp_main(rest)
    if system == "google":
        from sandbox.google_calendar import main as google_main

        return google_main(rest)
    if system in ("microsoft365", "graph"):
        from sandbox.microsoft365 import main as microsoft365_main

        return microsoft365_main(rest)
    if system == "lab":
        from sandbox.lab import main as lab_main

        return lab_main(rest)
    if system == "plant":
        from sandbox.plant import main as plant_main

        return plant_main(rest)
    if system == "plant-vendor":
        from sandbox.plant_vendor import main as plant_vendor_main

        return plant_vendor_main(rest)
    print(f"unknown sandbox system {system!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

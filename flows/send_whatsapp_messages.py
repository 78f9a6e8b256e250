"""Queued WhatsApp sends: the background form of `drymix whatsapp send` (`--queue`, hub/runtime/jobs.py
`whatsapp.messages.send`), run by a worker of the process pool on demand, never on a schedule.

Each message goes through the connector under its rate budget and is recorded in `whatsapp_messages`
(hub/systems/whatsapp.py `send_one`, the same code as the CLI's send); a refused one is recorded in
`integration_errors` and the others are still sent. The run fails when any message was refused, so the
Prefect UI shows it. A worker killed mid-run leaves the run Crashed and it is not run again by itself:
a resend could reach a customer twice, so a person decides (`drymix whatsapp send` the ones not recorded).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

FLOW_NAME = "send-whatsapp-messages"


@flow(name=FLOW_NAME, description="Send queued WhatsApp texts or approved templates and record them in whatsapp_messages.")
def send_whatsapp_messages(messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Send each of `messages` ({"to", "text"} or {"to", "template", "lang", "params"}); no messages: nothing to do."""
    from connectors.core.errors import classify_exception
    from hub.runtime.connections import build_whatsapp_connector
    from hub.systems.whatsapp import record_refused, send_one

    logger = get_run_logger()
    sent: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    todo = list(messages or [])
    if todo:
        try:
            connector = build_whatsapp_connector()
        except Exception as exc:  # noqa: BLE001 - a missing token or number refuses every message, recorded
            error = classify_exception(exc, integration="whatsapp", operation="send")
            failed.extend(record_refused(error, m["to"], m.get("text"), m.get("template"), exc=exc) for m in todo)
        else:
            with connector:
                for m in todo:
                    try:
                        sent.append(send_one(connector, m["to"], m.get("text"), m.get("template"), m.get("lang") or "en_US",
                                             list(m.get("params") or [])))
                    except Exception as exc:  # noqa: BLE001 - one refused recipient must not stop the others
                        error = classify_exception(exc, integration="whatsapp", operation="send")
                        failed.append(record_refused(error, m["to"], m.get("text"), m.get("template"), exc=exc))
    logger.info("whatsapp: %d sent, %d refused", len(sent), len(failed))
    summary = {"integration": "whatsapp", "dataset": "whatsapp_messages", "sent": sent, "failed": failed}
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(todo)} WhatsApp message(s) not sent: integration_errors "
            + ", ".join(f"#{f['error_id']}" for f in failed)
        )
    return summary

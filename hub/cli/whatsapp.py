"""`drymix whatsapp`: send a WhatsApp text or approved template to customers from the business number.

Each message goes through the connector (its rate budget queues a burst instead of running into Meta's
throughput limit; rate-limit answers are retried with backoff), is recorded in `whatsapp_messages`
(status `accepted`; the status webhooks move it on), and its wamid is printed. A refused message is
recorded in `integration_errors` with its classified error, and the command exits non-zero.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from connectors.core.errors import IntegrationError
    from connectors.whatsapp import WhatsAppConnector

whatsapp_app = typer.Typer(help="WhatsApp Business messages: send a text or an approved template.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"\+[1-9]\d{6,14}")
DATASET = "whatsapp_messages"


def _usage(message: str) -> typer.Exit:
    err_console.print(f"[red]{message}[/red]")
    return typer.Exit(EXIT_USAGE)


@whatsapp_app.command("send")
def send(
    to: Annotated[list[str], typer.Option("--to", help="recipient in E.164, e.g. +919812345678; repeat to send to several")],
    text: Annotated[str | None, typer.Option("--text", help="free-form text (only inside the customer's 24-hour window)")] = None,
    template: Annotated[str | None, typer.Option("--template", help="name of an approved template")] = None,
    lang: Annotated[str, typer.Option("--lang", help="template language code, as approved (en, en_US, hi, ...)")] = "en_US",
    param: Annotated[list[str] | None, typer.Option("--param", help="template body parameter, in order; repeatable")] = None,
    rate_per_s: Annotated[float | None, typer.Option("--rate-per-s", min=0.1, help="send at most this many per second (default: whatsapp.rate_budget_per_s)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object for machines")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="queue the sends on the Prefect server's workers and return (docs/background-jobs.md)")] = False,
    key: Annotated[str | None, typer.Option("--key", help="with --queue: this send's idempotency key (default: a digest of the recipients and the message)")] = None,
) -> None:
    """Send a text (--text) or a template (--template NAME --lang CODE [--param ...]) to each --to number."""
    params = list(param or [])
    if (text is None) == (template is None):
        raise _usage("give exactly one of --text or --template")
    if params and template is None:
        raise _usage("--param only goes with --template")
    bad = [number for number in to if not E164.fullmatch(number)]
    if bad:
        raise _usage(f"not an E.164 number (a plus and 8 to 15 digits, e.g. +919812345678): {', '.join(bad)}")
    if key is not None and not queue:
        raise _usage("--key only goes with --queue")
    if queue:
        from hub.cli.errors import queue_from_cli
        from hub.runtime.jobs import fingerprint

        messages = [{"to": number, "text": text, "template": template, "lang": lang, "params": params} for number in to]
        # The same command twice is one send; the same message again on purpose needs its own --key.
        queue_from_cli("whatsapp.messages.send", {"messages": messages},
                       key or f"messages-{fingerprint((m['to'], m['text'], m['template'], m['lang'], m['params']) for m in messages)}", as_json)
        return

    from connectors.core.errors import classify_exception
    from connectors.core.metrics import METRICS
    from hub.core.settings import integration_config
    from hub.monitoring.health import ensure_flusher, stop_flusher
    from hub.runtime.connections import build_whatsapp_connector

    config = integration_config("whatsapp")
    if rate_per_s is not None:
        config = config.model_copy(update={"rate_budget_per_s": rate_per_s})
    sent: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    ensure_flusher()  # the sends' call measurements reach call_metrics (health, the dashboard, the alert rules)
    try:
        try:
            connector = build_whatsapp_connector(config=config)
        except Exception as exc:  # noqa: BLE001 - a missing token or number is reported like any refused send
            error = classify_exception(exc, integration="whatsapp", operation="send")
            failed.extend(_failure(error, number, text, template, exc=exc) for number in to)
        else:
            with connector:
                for number in to:
                    retries_before = METRICS.total("whatsapp", "retries")
                    try:
                        sent.append(_send_one(connector, number, text, template, lang, params))
                    except Exception as exc:  # noqa: BLE001 - one refused recipient must not stop the others
                        error = classify_exception(exc, integration="whatsapp", operation="send")
                        # The send's HTTP retries (the connector's policy); no Prefect task around a CLI send.
                        failed.append(_failure(error, number, text, template, exc=exc,
                                               retry_count=METRICS.total("whatsapp", "retries") - retries_before))
    finally:
        stop_flusher()  # a last flush before the command exits: this run's measurements are written now
    _report(sent, failed, as_json)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _send_one(connector: WhatsAppConnector, to: str, text: str | None, template: str | None, lang: str, params: list[str]) -> dict[str, Any]:
    from hub.systems.whatsapp import send_one

    return send_one(connector, to, text, template, lang, params)


def _failure(error: IntegrationError, to: str, text: str | None, template: str | None, *, exc: BaseException | None = None,
             retry_count: int = 0) -> dict[str, Any]:
    from hub.systems.whatsapp import record_refused

    return record_refused(error, to, text, template, exc=exc, retry_count=retry_count)


def _report(sent: list[dict[str, Any]], failed: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"sent": sent, "failed": failed}))
        return
    for item in sent:
        console.print(f"[green]sent[/green] to {item['to']}: {item['wamid']}")
    for item in failed:
        code = f" [{item['code']}]" if item["code"] else ""
        err_console.print(f"[red]not sent[/red] to {item['to']}: {item['category']}{code}: {item['message']}")
        err_console.print(f"  {item['remedy']} (recorded as integration_errors #{item['error_id']}; `drymix errors list --integration whatsapp`)")

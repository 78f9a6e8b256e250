"""Run flows from the CLI the clean way: a project-local Prefect home, no telemetry, no shutdown noise.

Import this module before Prefect: it sets Prefect's environment defaults (a user's own settings win).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.settings import ROOT

_DEFAULTS = {
    # Without a server Prefect starts a temporary one backed by PREFECT_HOME; keep it in the project.
    "PREFECT_HOME": str(ROOT / "var" / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "GX_ANALYTICS_ENABLED": "false",
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
# Prefect creates its home without parents: on a fresh clone (no var/ yet) its temporary server could
# not open its database and timed out.
Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


class _DropShutdownCancellation(logging.Filter):
    """The temporary server cancels its tasks at exit; those CancelledError tracebacks are not failures."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)


def install_log_filters() -> None:
    """Mask secrets in every log line and drop the temporary server's shutdown noise."""
    from connectors.core.redact import RedactingFilter

    filters: list[logging.Filter] = [_DropShutdownCancellation(), RedactingFilter()]
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "uvicorn.error", "asyncio", "prefect.server"):
        logger = logging.getLogger(name)
        for flt in filters:
            logger.addFilter(flt)
            for handler in logger.handlers:
                handler.addFilter(flt)


def run_flow_quietly(flow: Callable[..., Any], **parameters: Any) -> Any:
    """Call a flow in this process and return its result; the flow's own errors propagate."""
    install_log_filters()
    return flow(**parameters)

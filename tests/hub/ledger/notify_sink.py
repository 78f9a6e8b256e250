"""A local HTTP sink standing in for Slack: escalations are delivered by hub/monitoring/notify.py over real HTTP."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Sink:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(body)

    def texts(self) -> list[str]:
        with self._lock:
            return [str(b.get("text", "")) for b in self.received]


@contextmanager
def slack_sink(tmp_dir: Path) -> Iterator[Sink]:
    """SLACK_WEBHOOK_URL -> a local server; every severity routed to Slack only (MONITORING_FILE)."""
    from hub.core.settings import reset_settings_cache

    sink = Sink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            sink.add(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = tmp_dir / "monitoring-slack-only.toml"
    path.write_text('[routing]\ncritical = ["slack"]\nhigh = ["slack"]\nmedium = ["slack"]\nlow = ["slack"]\ninfo = []\n')
    saved = {k: os.environ.get(k) for k in ("SLACK_WEBHOOK_URL", "MONITORING_FILE")}
    os.environ["SLACK_WEBHOOK_URL"] = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    os.environ["MONITORING_FILE"] = str(path)
    reset_settings_cache()
    try:
        yield sink
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings_cache()
        server.shutdown()
        server.server_close()

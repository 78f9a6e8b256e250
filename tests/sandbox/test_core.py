"""The shared sandbox core: fault switches, control API, transport and real-server adapters."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from sandbox.core import (
    FaultInjector,
    FaultSwitches,
    Headers,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    as_transport,
    corrupt_body,
    parse_fault_assignments,
    running_server,
)


class EchoSimulator(Simulator):
    """Minimal simulator: answers every API request with a JSON echo and counts calls."""

    name = "echo"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handled = 0

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        self.handled += 1
        payload = {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "header": req.headers.get("X-Probe"),
            "body": req.body.decode(),
            "base_url": req.base_url,
            "filler": "x" * 2000,
        }
        return SandboxResponse.json(200, payload)

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        if req.path == "/_sandbox/echo/handled":
            return SandboxResponse.json(200, {"handled": self.handled})
        return None


def _client(sim: Simulator) -> httpx.Client:
    return httpx.Client(transport=as_transport(sim), base_url="http://echo.sandbox")


@pytest.fixture
def server() -> Iterator[tuple[EchoSimulator, str]]:
    sim = EchoSimulator()
    with running_server(sim) as base_url:
        yield sim, base_url


# -- plain types ---------------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_multi_valued() -> None:
    headers = Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("X-CSRF-Token", "Fetch")])
    assert headers.get("x-csrf-token") == "Fetch"
    assert headers.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert "X-Csrf-Token" in headers
    assert headers.get("missing", "default") == "default"


def test_request_base_url_refuses_odd_host_names() -> None:
    assert SandboxRequest("get", "/", host="sap.local:8401").base_url == "http://sap.local:8401"
    assert SandboxRequest("GET", "/", host='evil"><script>').base_url == "http://localhost"
    assert SandboxRequest("get", "/").method == "GET"


def test_parse_fault_assignments_reads_json_values_and_strings() -> None:
    parsed = parse_fault_assignments(
        ["rate_limit_every_n=5", 'retry_after_s="0"', "error_5xx_status=500", "mode=garble"]
    )
    assert parsed == {"rate_limit_every_n": 5, "retry_after_s": "0", "error_5xx_status": 500, "mode": "garble"}
    with pytest.raises(ValueError, match="name=value"):
        parse_fault_assignments(["nonsense"])


def test_fault_switches_validate_values() -> None:
    assert FaultSwitches(retry_after_s="0").retry_after_s == "0"
    with pytest.raises(ValidationError):
        FaultSwitches(rate_limit_probability=1.5)
    with pytest.raises(ValidationError):
        FaultSwitches(error_5xx_status=418)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        FaultSwitches.model_validate({"no_such_switch": 1})
    with pytest.raises(ValidationError):
        FaultSwitches(retry_after_s="1\r\nX-Injected: yes")


def test_corrupt_body_always_breaks_json() -> None:
    body = json.dumps({"d": {"results": [{"a": 1}]}}).encode()
    for mode in ("truncate", "garble"):
        with pytest.raises(json.JSONDecodeError):
            json.loads(corrupt_body(body, mode))


# -- fault decisions ---------------------------------------------------------------------------


def test_next_n_fails_exactly_the_next_n_requests_then_stops() -> None:
    injector = FaultInjector(FaultSwitches(error_5xx_next_n=2, rate_limit_next_n=1))
    kinds = [injector.decide().kind for _ in range(5)]
    assert kinds == ["rate_limit", "error_5xx", "error_5xx", None, None]
    snapshot = injector.snapshot()
    assert snapshot["switches"]["error_5xx_next_n"] == 0
    assert snapshot["stats"] == {
        "api_requests": 5,
        "fired": {
            "expire_tokens": 0,
            "rate_limit": 1,
            "error_5xx": 2,
            "timeout": 0,
            "drop_connection": 0,
            "malformed_json": 0,
            "timeout_after_commit": 0,
        },
    }


def test_every_n_fails_every_nth_request() -> None:
    injector = FaultInjector(FaultSwitches(timeout_every_n=3))
    kinds = [injector.decide().kind for _ in range(9)]
    assert kinds == [None, None, "timeout"] * 3


def test_probabilistic_faults_are_reproducible_with_the_same_seed() -> None:
    def run(seed: int) -> list[str | None]:
        injector = FaultInjector(FaultSwitches(seed=seed, drop_connection_probability=0.3))
        return [injector.decide().kind for _ in range(200)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert 30 <= first.count("drop_connection") <= 90


def test_expire_tokens_wins_until_cleared_and_latency_is_reported() -> None:
    injector = FaultInjector(FaultSwitches(expire_tokens=True, latency_ms=250, rate_limit_next_n=1))
    decision = injector.decide()
    assert decision.kind == "expire_tokens"
    assert decision.latency_s == pytest.approx(0.25)
    injector.update({"expire_tokens": False})
    assert injector.decide().kind == "rate_limit"
    injector.clear()
    assert injector.decide().kind is None


# -- control API -------------------------------------------------------------------------------


def test_control_api_sets_merges_reads_and_clears_faults() -> None:
    sim = EchoSimulator()
    with _client(sim) as client:
        put = client.put("/_sandbox/faults", json={"rate_limit_every_n": 4, "retry_after_s": "0"})
        assert put.status_code == 200
        assert put.json()["switches"]["rate_limit_every_n"] == 4
        post = client.post("/_sandbox/faults", json={"latency_ms": 1})
        assert post.json()["switches"]["rate_limit_every_n"] == 4, "POST merges"
        assert post.json()["switches"]["latency_ms"] == 1
        replaced = client.put("/_sandbox/faults", json={"latency_ms": 2})
        assert replaced.json()["switches"]["rate_limit_every_n"] == 0, "PUT replaces"
        bad = client.put("/_sandbox/faults", json={"rate_limit_probability": 2})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["rate_limit_probability"]
        assert client.put("/_sandbox/faults", content=b"{not json").status_code == 400
        cleared = client.delete("/_sandbox/faults")
        assert cleared.json()["switches"] == FaultSwitches().model_dump()
        index = client.get("/_sandbox").json()
        assert index["simulator"] == "echo"
        assert "GET /_sandbox/faults" in index["routes"]
        assert client.get("/_sandbox/health").json() == {"status": "ok", "simulator": "echo"}
        assert client.get("/_sandbox/echo/handled").json() == {"handled": 0}
        assert client.get("/_sandbox/nope").status_code == 404


def test_faults_never_apply_to_control_routes() -> None:
    sim = EchoSimulator(faults={"error_5xx_every_n": 1, "expire_tokens": True})
    with _client(sim) as client:
        assert client.get("/_sandbox/faults").status_code == 200
        assert client.get("/anything").status_code == 401
        client.delete("/_sandbox/faults")
        assert client.get("/anything").status_code == 200
    assert sim.faults.snapshot()["stats"]["api_requests"] == 2, "control requests are not counted"


# -- transport adapter -------------------------------------------------------------------------


def test_transport_passes_method_path_query_headers_and_body() -> None:
    sim = EchoSimulator()
    with _client(sim) as client:
        resp = client.post(
            "/a/b c",
            params=[("x", "1"), ("x", "2"), ("$filter", "A eq 'b'")],
            headers={"x-probe": "yes"},
            content=b"hello",
        )
    echoed = resp.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/a/b c"
    assert echoed["query"] == [["x", "1"], ["x", "2"], ["$filter", "A eq 'b'"]]
    assert echoed["header"] == "yes"
    assert echoed["body"] == "hello"
    assert echoed["base_url"] == "http://echo.sandbox"


def test_transport_rate_limit_gives_429_with_retry_after_zero() -> None:
    sim = EchoSimulator(faults={"rate_limit_next_n": 1, "retry_after_s": "0"})
    with _client(sim) as client:
        limited = client.get("/x")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "0"
        assert client.get("/x").status_code == 200
    assert sim.handled == 1, "a rate-limited request never reaches the backend"


def test_transport_5xx_status_and_counts() -> None:
    sim = EchoSimulator(faults={"error_5xx_next_n": 2, "error_5xx_status": 500})
    with _client(sim) as client:
        assert [client.get("/x").status_code for _ in range(3)] == [500, 500, 200]


def test_transport_timeout_raises_read_timeout() -> None:
    sim = EchoSimulator(faults={"timeout_next_n": 1})
    with _client(sim) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/x")
        assert client.get("/x").status_code == 200


def test_transport_malformed_json_keeps_status_but_breaks_the_body() -> None:
    sim = EchoSimulator(faults={"malformed_json_next_n": 1, "malformed_json_mode": "garble"})
    with _client(sim) as client:
        resp = client.get("/x")
        assert resp.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            resp.json()
        assert client.get("/x").json()["path"] == "/x"


def test_transport_dropped_connection_fails_while_reading_the_body() -> None:
    sim = EchoSimulator(faults={"drop_connection_next_n": 1})
    with _client(sim) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/x")
        with client.stream("GET", "/x") as ok:
            assert ok.status_code == 200


def test_transport_dropped_connection_in_streaming_mode_delivers_headers_first() -> None:
    sim = EchoSimulator(faults={"drop_connection_next_n": 1})
    with _client(sim) as client, client.stream("GET", "/x") as resp:
        assert resp.status_code == 200
        assert int(resp.headers["content-length"]) > 0
        with pytest.raises(httpx.RemoteProtocolError):
            resp.read()


def test_transport_adds_latency() -> None:
    sim = EchoSimulator(faults={"latency_ms": 120})
    with _client(sim) as client:
        started = time.perf_counter()
        client.get("/x")
        assert time.perf_counter() - started >= 0.11


def test_transport_works_with_async_client_for_every_fault_kind() -> None:
    sim = EchoSimulator()

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=as_transport(sim), base_url="http://echo.sandbox") as client:
            assert (await client.get("/ok")).json()["path"] == "/ok"
            sim.faults.replace(
                {
                    "rate_limit_next_n": 1,
                    "error_5xx_next_n": 1,
                    "timeout_next_n": 1,
                    "drop_connection_next_n": 1,
                    "malformed_json_next_n": 1,
                    "latency_ms": 50,
                }
            )
            assert (await client.get("/x")).status_code == 429
            assert (await client.get("/x")).status_code == 503
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/x")
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/x")
            with pytest.raises(json.JSONDecodeError):
                (await client.get("/x")).json()
            started = time.perf_counter()
            assert (await client.get("/x")).status_code == 200
            assert time.perf_counter() - started >= 0.045

    asyncio.run(scenario())


# -- real server -------------------------------------------------------------------------------


def test_running_server_picks_a_free_port_and_shuts_down(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    resp = httpx.get(f"{base_url}/hello", params={"q": "a b+c"}, headers={"X-Probe": "1"})
    assert resp.status_code == 200
    assert resp.json()["query"] == [["q", "a b+c"]]
    assert resp.json()["base_url"] == base_url


def test_running_server_releases_its_port() -> None:
    with running_server(EchoSimulator()) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        assert httpx.get(f"{base_url}/_sandbox/health").status_code == 200
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/_sandbox/health", timeout=1)


def test_server_rate_limit_with_retry_after(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    httpx.put(f"{base_url}/_sandbox/faults", json={"rate_limit_every_n": 2, "retry_after_s": 3})
    statuses = [httpx.get(f"{base_url}/x") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 429, 200, 429]
    assert statuses[1].headers["retry-after"] == "3"


def test_server_5xx(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    httpx.put(
        f"{base_url}/_sandbox/faults",
        json={"error_5xx_next_n": 1, "error_5xx_status": 503, "error_5xx_retry_after_s": 2},
    )
    resp = httpx.get(f"{base_url}/x")
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "2"
    assert httpx.get(f"{base_url}/x").status_code == 200


def test_server_timeout_makes_the_client_time_out_and_keeps_serving(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    httpx.put(f"{base_url}/_sandbox/faults", json={"timeout_next_n": 1, "timeout_sleep_s": 5})
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{base_url}/x", timeout=0.3)
    assert time.perf_counter() - started < 2
    assert httpx.get(f"{base_url}/x", timeout=2).status_code == 200


def test_server_timeout_answers_after_the_sleep_for_patient_clients(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    httpx.put(f"{base_url}/_sandbox/faults", json={"timeout_next_n": 1, "timeout_sleep_s": 0.4})
    started = time.perf_counter()
    resp = httpx.get(f"{base_url}/x", timeout=5)
    assert resp.status_code == 200
    assert time.perf_counter() - started >= 0.35


def test_server_malformed_json(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    httpx.put(f"{base_url}/_sandbox/faults", json={"malformed_json_next_n": 1})
    resp = httpx.get(f"{base_url}/x")
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    assert httpx.get(f"{base_url}/x").json()["path"] == "/x"


def test_server_drops_the_connection_mid_body(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    httpx.put(f"{base_url}/_sandbox/faults", json={"drop_connection_next_n": 1, "drop_after_fraction": 0.25})
    with httpx.Client(base_url=base_url) as client:
        with client.stream("GET", "/x") as resp:
            assert resp.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                resp.read()
        assert client.get("/x").status_code == 200, "the next request gets a fresh connection"


def test_server_drop_before_any_byte_for_empty_bodies() -> None:
    class Empty(Simulator):
        name = "empty"

        def handle(self, req: SandboxRequest) -> SandboxResponse:
            return SandboxResponse(204)

    with running_server(Empty(faults={"drop_connection_next_n": 1})) as base_url:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{base_url}/x")
        assert httpx.get(f"{base_url}/x").status_code == 204


def test_server_latency(server: tuple[EchoSimulator, str]) -> None:
    _sim, base_url = server
    # A latency far above what a loaded machine adds to a local request, so the two sides never overlap.
    httpx.put(f"{base_url}/_sandbox/faults", json={"latency_ms": 1500})
    started = time.perf_counter()
    httpx.get(f"{base_url}/x", timeout=10)
    assert time.perf_counter() - started >= 1.45
    started = time.perf_counter()
    httpx.get(f"{base_url}/_sandbox/faults", timeout=10)
    assert time.perf_counter() - started < 1.0, "control routes get no latency"


def test_simulator_errors_become_500_not_crashes() -> None:
    class Broken(Simulator):
        name = "broken"

        def handle(self, req: SandboxRequest) -> SandboxResponse:
            raise RuntimeError("bug")

    with _client(Broken()) as client:
        assert client.get("/x").status_code == 500


def test_every_n_counts_from_the_last_change_while_stats_keep_the_total() -> None:
    injector = FaultInjector()
    for _ in range(5):
        injector.decide()
    injector.update({"rate_limit_every_n": 2})
    assert [injector.decide().kind for _ in range(4)] == [None, "rate_limit", None, "rate_limit"]
    assert injector.snapshot()["stats"]["api_requests"] == 9


def test_control_route_errors_become_500_not_crashes() -> None:
    class BrokenControl(EchoSimulator):
        def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
            raise RuntimeError("bug")

    with _client(BrokenControl()) as client:
        assert client.get("/_sandbox/echo/anything").status_code == 500
        assert client.get("/_sandbox/faults").status_code == 200


@pytest.mark.parametrize("system", ["razorpay", "whatsapp", "microsoft365", "google"])
def test_each_http_simulator_serves_from_the_command_line_with_its_fault_switches(system: str) -> None:
    """`python -m sandbox <system> --port N --fault name=value` serves over real HTTP with the switch on."""
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", system, "--port", str(port), "--fault", "latency_ms=5", "--log-level", "warning"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/_sandbox/faults", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"{system} did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert answer.json()["switches"]["latency_ms"] == 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_malformed_fault_switch_on_the_command_line_is_a_usage_error() -> None:
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "razorpay", "--fault", "no-equals-sign"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "fault switch must look like name=value" in done.stderr


def test_faults_can_be_scoped_to_requests_that_contain_a_text() -> None:
    from sandbox.core import FaultInjector

    faults = FaultInjector()
    faults.update({"error_5xx_every_n": 1, "only_where": "Partner ge '"})
    assert faults.decide("/A_BusinessPartner?$filter=Partner lt '2'").kind is None
    assert faults.decide("/A_BusinessPartner?$filter=Partner ge '2'").kind == "error_5xx"
    assert faults.snapshot()["stats"]["fired"]["error_5xx"] == 1

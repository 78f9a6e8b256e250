"""The vendor-shaped OPC UA simulator (sandbox/plant_vendor.py) on its own event loop in a thread, for synchronous
callers (the CLI, the collect flow), and tag maps derived from the shipped profiles."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sandbox.plant_vendor import VendorPlantSimulator

T = TypeVar("T")
PROFILES = Path(__file__).resolve().parents[3] / "config" / "plant"


class ThreadedVendor:
    """``with ThreadedVendor("kepware", tags=100) as server: server.url``."""

    def __init__(self, layout: str, **kwargs: Any) -> None:
        kwargs.setdefault("port", 0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"vendor-{layout}", daemon=True)
        self._thread.start()
        self.sim = VendorPlantSimulator(layout, **kwargs)  # type: ignore[arg-type]
        self.call(self.sim.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def url(self) -> str:
        return self.sim.url

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.sim.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ThreadedVendor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drifted_kepware_map(tmp_path: Path) -> Path:
    """The shipped Kepware map with a tag the server does not have, without the silo materials (so they are
    unmapped), and with a unit that disagrees with the server's EngineeringUnits."""
    text = (PROFILES / "kepware.toml").read_text()
    materials = '''[[tags]]
folder = "kep:Silos"
path = "*/Material"
tag = "Silos/{1}/Material"
kind = "text"
'''
    assert materials in text
    text = text.replace(materials, "")
    text = text.replace('path = "Mixer*/MotorCurrent"\ntag = "Mixers/{1}/MotorCurrentA"\nequipment = "Mixers/{1}"\nunit = "A"',
                        'path = "Mixer*/MotorCurrent"\ntag = "Mixers/{1}/MotorCurrentA"\nequipment = "Mixers/{1}"\nunit = "mA"')
    text += '''
[[tags]]
node_id = "kep:s=Dryer.Dryer1.ExhaustTemp"
tag = "Dryer/ExhaustTemperatureC"
unit = "degC"
'''
    path = tmp_path / "kepware-drifted.toml"
    path.write_text(text)
    return path

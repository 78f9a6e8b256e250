"""GX's import without SciPy's stats and Altair until something uses them (expectations/deferred.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

from expectations.deferred import DeferredModule, defer

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    from expectations.runner import preload, validate_frame
    from tests.expectations.conftest import make_customer_frame

    preload("customers")
    outcome = validate_frame("customers", make_customer_frame(50))
    stand_in = sys.modules["scipy.stats"]
    before = {"stats": type(stand_in).__name__, "altair": type(sys.modules["altair"]).__name__,
              "valid": len(outcome.valid), "scipy_stats_modules": sum(m.startswith("scipy.stats.") for m in sys.modules)}
    # GX's own module-level binding, used as GX uses it.
    from great_expectations.expectations.metrics.column_aggregate_metrics import (
        column_parameterized_distribution_ks_test_p_value as ks,
    )
    statistic = float(ks.stats.kstest([0.1, 0.4, 0.7], "uniform").statistic)
    after = {"loaded": stand_in.loaded, "real": type(sys.modules["scipy.stats"]).__name__,
             "parent": type(sys.modules["scipy"].stats).__name__, "statistic": statistic}
    print(json.dumps({"before": before, "after": after}))
    """
)


def test_gx_validates_without_importing_scipy_stats_or_altair_and_loads_them_on_first_use() -> None:
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, check=True, timeout=300)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["before"] == {"stats": "DeferredModule", "altair": "DeferredModule", "valid": 50, "scipy_stats_modules": 0}
    after = figures["after"]
    assert after["loaded"] is True
    assert after["real"] == "module" and after["parent"] == "module"  # the real module took the stand-in's place
    assert abs(after["statistic"] - 0.3) < 1e-9  # kstest of [0.1, 0.4, 0.7] against U(0, 1): D = 0.3


def test_defer_leaves_imported_and_missing_modules_alone() -> None:
    assert defer(("json",)) == []  # already imported: untouched
    assert sys.modules["json"] is json
    assert defer(("drymix_no_such_module",)) == []
    assert "drymix_no_such_module" not in sys.modules


def test_a_deferred_module_forwards_every_read_to_the_real_one() -> None:
    name = "xml.dom.minidom"
    real = sys.modules.pop(name, None)
    try:
        assert defer((name,)) == [name]
        stand_in = sys.modules[name]
        assert isinstance(stand_in, DeferredModule) and not stand_in.loaded
        parse = stand_in.parseString  # the first read imports it
        assert stand_in.loaded and isinstance(sys.modules[name], types.ModuleType)
        assert not isinstance(sys.modules[name], DeferredModule)
        assert parse("<a/>").documentElement.tagName == "a"
        assert stand_in.Document is sys.modules[name].Document
    finally:
        if real is not None:
            sys.modules[name] = real

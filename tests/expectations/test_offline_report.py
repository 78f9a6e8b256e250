"""The run's validation report reads offline and names the failing rows.

GX's Data Docs pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from CDNs; the runner ships
those files (expectations/assets/) and points the built pages at them. Headless Chromium, with every host name
unresolvable, proves the pages render styled and their scripts run. The report's failed rules show a sample of
failing values with record keys and the `drymix quarantine list` command that finds every refused row.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from expectations import runner
from expectations.offline_assets import ASSETS_DIR, CDN_ASSETS, SITE_ASSETS, remote_resources
from expectations.runner import QuarantineTarget, build_data_docs, validate_frame
from hub.ledger.report_targets import quarantine_target
from tests.expectations.conftest import make_customer_frame
from tests.hub.cli.test_cli import drymix

GX_TEMPLATES = Path(__import__("great_expectations").__file__).parent / "render" / "view" / "templates"
GX_LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
_LOCAL_RESOURCE = re.compile(r'<(?:link|script|img)\b[^>]*?\b(?:src|href)="([^"#?]+)', re.IGNORECASE)


def _bad_customer_run(run_name: str, *, batches: int = 2, rows: int = 40) -> list[pd.DataFrame]:
    """Batches of customers where every row's country is unknown, one id is missing and two share a GSTIN."""
    frames = []
    for batch in range(batches):
        frame = make_customer_frame(rows, start=batch * rows)
        frame["country"] = "XX"
        frame.loc[1, "customer_id"] = None
        frame.loc[3, "gstin"] = frame.loc[0, "gstin"]  # a warning rule: reported, not quarantined
        validate_frame("customers", frame, run_name=run_name)
        frames.append(frame)
    return frames


def test_vendored_assets_are_the_files_gx_templates_load() -> None:
    """Every remote resource of GX's templates has a shipped copy, and the hashes GX pins match the copies."""
    templates = "\n".join(p.read_text(encoding="utf-8") for p in GX_TEMPLATES.glob("*.j2"))
    remote = {url for url in re.findall(r'<(?:link|script|img)\b[^>]*?\b(?:src|href)="(https?://[^"{]+)"', templates)}
    assert remote, "GX's templates moved: nothing to check"
    assert remote <= set(CDN_ASSETS), f"GX loads resources that are not vendored: {sorted(remote - set(CDN_ASSETS))}"
    assert GX_LOGO in templates  # the navbar logo, pointed at GX's own static copy
    for url, path in CDN_ASSETS.items():
        assert (ASSETS_DIR / path).is_file(), url
    pinned = re.findall(r'src="(https://[^"]+)"\s+integrity="sha384-([^"]+)"', templates)
    assert pinned, "GX no longer pins hashes: drop this check"
    for url, digest in pinned:
        vendored = (ASSETS_DIR / CDN_ASSETS[url]).read_bytes()
        assert base64.b64encode(hashlib.sha384(vendored).digest()).decode() == digest, url
    for package in {path.split("/")[0] for path in CDN_ASSETS.values()}:
        assert list((ASSETS_DIR / package).glob("LICENSE*")), f"{package} ships without its licence"


def test_built_site_loads_nothing_from_the_internet(docs_dir: Path) -> None:
    _bad_customer_run("offline-links")
    site = Path(build_data_docs(docs_dir, run_name="offline-links")).parent

    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 4  # index, report, suite page, one page per batch
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert remote_resources(text) == set(), page
        for link in _LOCAL_RESOURCE.findall(text):
            assert (page.parent / link).resolve().is_file(), f"{page.relative_to(site)} links a missing {link}"
    assert "https://" not in (site / "static/styles/data_docs_default_styles.css").read_text(encoding="utf-8")
    assert (site / SITE_ASSETS / "fontawesome-free@6.6.0/webfonts/fa-solid-900.woff2").is_file()
    # A rebuild of the same run keeps the copy and the rewritten links.
    assert Path(build_data_docs(docs_dir, run_name="offline-links")).parent == site
    assert remote_resources((site / "index.html").read_text(encoding="utf-8")) == set()


_PROBE = """<script>
window.addEventListener('load', function () { setTimeout(function () { document.fonts.ready.then(function () {
  var r = {};
  r.jquery = typeof window.jQuery;
  r.bootstrapTable = window.jQuery ? typeof window.jQuery.fn.bootstrapTable : 'undefined';
  r.vegaEmbed = typeof window.vegaEmbed;
  var nav = document.querySelector('.navbar');
  r.navbar = nav ? getComputedStyle(nav).display : null;
  var icon = document.querySelector('[class*="fa-"]');
  r.icon = icon ? getComputedStyle(icon).fontFamily : null;
  r.iconFont = Array.from(document.fonts).some(function (f) { return f.family.indexOf('Font Awesome 6 Free') >= 0 && f.status === 'loaded'; });
  r.images = Array.from(document.images).map(function (i) { return i.complete && i.naturalWidth > 0; });
  r.rows = document.querySelectorAll('table tbody tr').length;
  var fail = document.querySelector('.fail');
  r.failColor = fail ? getComputedStyle(fail).color : null;
  document.body.setAttribute('data-probe', JSON.stringify(r));
}); }, 300); });
</script></body>"""


def _render_offline(page: Path) -> tuple[dict[str, Any], set[str], str]:
    """What the page looks like in headless Chromium that can resolve no host name (no internet): what the
    probe saw, the network requests the page made (Chromium's NetLog), and the console (blocked loads).

    The probe runs in a copy of the page next to it (same relative links): computed styles, loaded fonts,
    scripts and images, as the browser saw them.
    """
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE, 1), encoding="utf-8")
    net_log = page.with_name(f"_netlog_{page.stem}.json")
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={net_log}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found is not None, f"the probe did not run: {result.stdout[:500]}"
    # The page's own requests (a file:// page), not the browser's housekeeping (update checks and the like).
    requests = {
        params["url"]
        for event in json.loads(net_log.read_text(encoding="utf-8"))["events"]
        for params in [event.get("params") or {}]
        if "url" in params and "site=file://" in str(params.get("site_for_cookies"))
    }
    console = "\n".join(line for line in result.stderr.splitlines() if "CONSOLE" in line)
    return json.loads(html.unescape(found.group(1))), requests, console


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed (make test installs it)")
def test_report_and_gx_pages_render_styled_without_network_in_headless_chromium(docs_dir: Path) -> None:
    _bad_customer_run("offline-chromium", batches=1)
    report = Path(build_data_docs(docs_dir, run_name="offline-chromium"))
    site = report.parent
    [batch_page] = sorted((site / "validations").rglob("*.html"))

    for page in (batch_page, site / "index.html", site / "expectations" / "customers.html"):
        seen, requests, console = _render_offline(page)
        where = page.relative_to(site)
        assert seen["navbar"] == "flex", f"{where}: Bootstrap's .navbar style not applied"
        assert seen["icon"] is not None and "Font Awesome 6 Free" in seen["icon"] and seen["iconFont"], where
        assert (seen["jquery"], seen["bootstrapTable"], seen["vegaEmbed"]) == ("function", "function", "function"), where
        assert seen["images"] and all(seen["images"]), f"{where}: an image did not load"
        assert requests == set(), f"{where}: went to the network for {sorted(requests)}"
        assert console == "", f"{where}: blocked or failed loads:\n{console}"
    index_seen, _, _ = _render_offline(site / "index.html")
    assert index_seen["rows"] >= 2, "bootstrap-table built the index's tables (suite and validation rows)"

    report_seen, requests, console = _render_offline(report)
    assert report_seen["failColor"] == "rgb(164, 0, 0)" and requests == set() and console == ""

    # Control: the same page with GX's original CDN links is unstyled offline, so the checks above can fail.
    original = batch_page.read_text(encoding="utf-8")
    up = "../" * (len(batch_page.relative_to(site).parts) - 1)
    for url, path in CDN_ASSETS.items():
        original = original.replace(f'"{up}{SITE_ASSETS}/{path}"', f'"{url}"')
    control = batch_page.with_name("control.html")
    control.write_text(original, encoding="utf-8")
    seen, requests, _ = _render_offline(control)
    assert (seen["jquery"], seen["navbar"], seen["iconFont"]) == ("undefined", "block", False), seen
    assert len(remote_resources(original)) >= 10 and remote_resources(original) <= requests


def _rule_section(report: str, rule: str) -> str:
    start = report.rindex("<section", 0, report.index(f"<code>{rule}</code> on "))
    return report[start : report.index("</section>", start)]


def test_failed_rule_shows_failing_values_with_record_keys_and_the_quarantine_command(db: str, docs_dir: Path) -> None:
    from hub.core.db import get_engine
    from hub.ledger.loading import quarantine_rows, upsert_quarantine

    frames = []
    for batch in range(2):  # 2 x 40 rows, every row refused: 80 > the 50 rows `quarantine list` shows by default
        frame = make_customer_frame(40, start=batch * 40)
        frame["country"] = "XX"
        frame.loc[3, "gstin"] = frame.loc[0, "gstin"]
        outcome = validate_frame("customers", frame, run_name="keys-run")
        with get_engine().begin() as conn:  # as the engine quarantines: keyed by the SAP partner number
            upsert_quarantine(conn, "sap", "customers", quarantine_rows(
                outcome, frame, raw_of=lambda label, f=frame: {"BusinessPartner": f.at[label, "customer_id"]},
                key_of=lambda label, f=frame: f.at[label, "customer_id"],
            ), "keys-run")
        frames.append(frame)
    # As the sync engine builds it (tasks/engine.py `build_report`): the registry says where rows are quarantined.
    report = Path(build_data_docs(docs_dir, run_name="keys-run", quarantine=quarantine_target)).read_text(encoding="utf-8")

    section = _rule_section(report, "expect_column_values_to_be_in_set(country)")
    assert "customers.country.iso3166" in section and "80 row(s) refused" in section
    sample = re.findall(r"<tr><td><code>([^<]+)</code></td><td><code>([^<]+)</code></td></tr>", section)
    assert sample == [(key, "XX") for key in frames[0]["customer_id"].head(runner.REPORT_SAMPLE_SIZE)]
    # Only the rows shown are kept from the batches, not one per batch and rule.
    assert runner._state.runs["keys-run"].sampled[("customers", "expect_column_values_to_be_in_set(country)")] == 10
    assert "10 of 80 shown" in section
    [command] = re.findall(r'<pre class="command">(drymix quarantine list[^<]*)</pre>', section)
    assert command == "drymix quarantine list --integration sap --dataset customers --limit 80"
    assert 'drymix quarantine replay --integration sap --dataset customers</pre>' in section

    # The command, exactly as printed, lists every refused row of the run, the sampled ones included.
    listed = drymix(*shlex.split(html.unescape(command))[1:], "--json")
    assert listed.returncode == 0, listed.stderr
    keys = {json.loads(line)["record_key"] for line in listed.stdout.splitlines() if line.strip()}
    assert keys == {str(k) for f in frames for k in f["customer_id"]}

    # A warning rule reports its rows but sends nobody to the quarantine: they were loaded.
    warning = _rule_section(report, "expect_column_values_to_be_unique(gstin)")
    assert "row(s) flagged" in warning and "rows loaded, not quarantined" in warning
    assert "drymix quarantine" not in warning


def test_rows_without_a_declared_key_are_named_by_batch_and_row(docs_dir: Path) -> None:
    import great_expectations as gx

    gxe = gx.expectations
    suite = gx.ExpectationSuite(name="widgets", expectations=[
        gxe.ExpectColumnValuesToMatchRegex(column="code", regex=r"^[A-Z]{3}\Z"),
        gxe.ExpectTableRowCountToBeBetween(min_value=10),
    ])
    frame = pd.DataFrame({"code": ["ABC", "bad", "ABD", None, "x y"]}, index=[10, 11, 12, 13, 14])
    validate_frame("widgets", frame, suite=suite, run_name="no-key-run")
    report = Path(build_data_docs(docs_dir, run_name="no-key-run", quarantine=quarantine_target)).read_text(encoding="utf-8")

    section = _rule_section(report, "expect_column_values_to_match_regex(code)")
    sample = re.findall(r"<tr><td><code>([^<]+)</code></td><td><code>([^<]+)</code></td></tr>", section)
    # GX does not count a missing value as failing a regex: two rows, named by batch and index label.
    assert sample == [("batch 1, row 11", "bad"), ("batch 1, row 14", "x y")]
    assert "drymix quarantine list --dataset widgets</pre>" in section  # not in the registry: the dataset alone
    table = _rule_section(report, "expect_table_row_count_to_be_between()")
    assert "table-level rule" in table and "<code>5</code>" in table and "drymix quarantine" not in table


def test_a_run_validated_in_several_processes_names_its_rows_by_record_key(docs_dir: Path) -> None:
    """Partitions validate in their own processes and hand their results to the run (tasks/partitions.py): the one
    report still names each failing row by its record key, as a one-process run does."""
    import pickle

    exported = []
    for part in (1, 2):  # each partition's process, under its own run name here
        frame = make_customer_frame(20, start=part * 100)
        frame["country"] = "XX"
        validate_frame("customers", frame, run_name=f"part-{part}")
        exported.append(pickle.loads(pickle.dumps(runner.export_run(f"part-{part}"))))  # as it crosses processes
    for part in exported:
        runner.import_run("parted-run", part)
    report = Path(build_data_docs(docs_dir, run_name="parted-run", quarantine=quarantine_target)).read_text(encoding="utf-8")

    section = _rule_section(report, "expect_column_values_to_be_in_set(country)")
    sample = re.findall(r"<tr><td><code>([^<]+)</code></td><td><code>([^<]+)</code></td></tr>", section)
    first = make_customer_frame(20, start=100)["customer_id"].head(runner.REPORT_SAMPLE_SIZE)
    assert sample == [(key, "XX") for key in first]
    assert "40 row(s) refused" in section

    # An export from before samples travelled (four fields) still imports: its rows are named by batch and row.
    runner.import_run("old-export-run", [item[:4] for item in exported[0]])
    old = Path(build_data_docs(docs_dir, run_name="old-export-run", quarantine=quarantine_target)).read_text(encoding="utf-8")
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td>", _rule_section(old, "expect_column_values_to_be_in_set(country)"))
    assert rows and all(row.startswith("batch 1") for row in rows)


@pytest.mark.parametrize(
    ("validated", "filters", "key"),
    [
        ("customers", ((("sap", "customers"),)), ("customer_id",)),
        ("plant_readings", (("plant_opcua", "plant_readings"),), ("batch_id",)),
        ("lab", (("lab", "lab_results"),), ("specimen_id",)),
        # One suite, two calendars: the rows are quarantined under either integration.
        ("schedules", ((None, "calendar_events"), (None, "schedules")), ("schedule_ref",)),
    ],
)
def test_quarantine_filters_come_from_the_dataset_registry(validated: str, filters: tuple[Any, ...], key: tuple[str, ...]) -> None:
    assert quarantine_target(validated) == QuarantineTarget(key=key, filters=filters)
    assert quarantine_target("widgets") is None


def test_a_failing_resolver_costs_the_report_only_its_filters(docs_dir: Path) -> None:
    def broken(dataset: str) -> QuarantineTarget | None:
        raise RuntimeError("registry entry does not import")

    _bad_customer_run("broken-resolver", batches=1)
    report = Path(build_data_docs(docs_dir, run_name="broken-resolver", quarantine=broken)).read_text(encoding="utf-8")
    section = _rule_section(report, "expect_column_values_to_be_in_set(country)")
    assert "drymix quarantine list --dataset customers</pre>" in section and "batch 1, row 0" in section

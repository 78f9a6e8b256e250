"""How many pages a batch of a read holds: a rerun's, the one asked for, the dataset's, then the integration's."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.core.settings import get_settings, integration_config, reset_settings_cache
from hub.systems.sap import CUSTOMERS, SALES_ORDERS
from tasks.engine import pages_per_batch


@pytest.fixture
def integrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the shipped integrations file, for this process."""
    config = tmp_path / "integrations.toml"
    config.write_text(get_settings().integrations_file.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("INTEGRATIONS_FILE", str(config))
    reset_settings_cache()
    yield config
    monkeypatch.undo()
    reset_settings_cache()


def _edit(config: Path, old: str, new: str) -> None:
    text = config.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    config.write_text(text.replace(old, new), encoding="utf-8")
    reset_settings_cache()


def test_shipped_sizes_partners_twenty_pages_and_sales_orders_ten() -> None:
    sap = integration_config("sap").batch_pages
    assert sap == 20
    assert pages_per_batch(CUSTOMERS, sap) == 20
    assert pages_per_batch(SALES_ORDERS, sap) == 10  # [sap.sales_orders] batch_pages


def test_sales_orders_follow_sap_batch_pages_when_their_own_is_unset(integrations: Path) -> None:
    _edit(integrations, "batch_pages = 10                # pages per batch: a page of 1,000 orders", "# no batch_pages: a page of 1,000 orders")
    assert pages_per_batch(SALES_ORDERS, integration_config("sap").batch_pages) == 20
    _edit(integrations, "batch_pages = 20", "batch_pages = 7")
    sap = integration_config("sap").batch_pages
    assert pages_per_batch(SALES_ORDERS, sap) == 7
    assert pages_per_batch(CUSTOMERS, sap) == 7


def test_a_rerun_keeps_its_recorded_size_and_a_request_beats_the_configuration(integrations: Path) -> None:
    _edit(integrations, "batch_pages = 10                # pages per batch", "batch_pages = 4                # pages per batch")
    assert pages_per_batch(SALES_ORDERS, 20) == 4
    assert pages_per_batch(SALES_ORDERS, 20, requested=50) == 50  # drymix sync --batch-pages 50
    assert pages_per_batch(SALES_ORDERS, 20, requested=50, resume={"batch_pages": 3}) == 3  # the failed unit's size
    assert pages_per_batch(CUSTOMERS, 20, resume={"batch": 2}) == 20  # a unit recorded without a size


def test_a_size_the_dataset_code_fixes_is_kept_whatever_the_configuration() -> None:
    each_page_commits = dataclasses.replace(SALES_ORDERS, batch_pages=1)
    assert pages_per_batch(each_page_commits, 20) == 1


def test_a_sales_order_batch_pages_below_one_is_refused(integrations: Path) -> None:
    from pydantic import ValidationError

    from hub.core.settings import sap_sales_order_options

    _edit(integrations, "batch_pages = 10                # pages per batch", "batch_pages = 0                # pages per batch")
    with pytest.raises(ValidationError, match="batch_pages"):
        sap_sales_order_options()

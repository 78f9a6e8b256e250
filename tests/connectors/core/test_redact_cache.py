from __future__ import annotations

import logging

from connectors.core.cache import TTLCache
from connectors.core.redact import RedactingFilter, redact_mapping, redact_text, redact_url, register_secret


def test_registered_secret_values_are_masked_anywhere() -> None:
    register_secret("s3cr3t-value-xyz")
    assert "s3cr3t-value-xyz" not in redact_text("failed with s3cr3t-value-xyz in body")


def test_fast_path_keeps_plain_values_and_still_masks_secrets_inside_them() -> None:
    # No whitespace, "=", ":" or "@": the text patterns cannot match, only the value net applies.
    assert redact_text("pay_29QQoUBi66xm2f-evt-0001") == "pay_29QQoUBi66xm2f-evt-0001"
    register_secret("Zk9shortsecret")
    assert redact_text("prefixZk9shortsecretsuffix") == "prefix***suffix"
    # A secret registered later is masked too: the ordered list is rebuilt on registration.
    register_secret("Zk9shortsecret-longer")
    assert redact_text("x-Zk9shortsecret-longer-y") == "x-***-y"
    # Each separator still reaches its pattern.
    assert redact_text("Bearer abcdefghijk") == "Bearer ***"
    assert redact_text("token=abc123") == "token=***"
    assert redact_text("https://user:pw123@host/x") == "https://user:***@host/x"


def test_url_credentials_and_secret_params_are_masked() -> None:
    url = redact_url("https://user:pw@host/path?client_secret=abc&$top=10")
    assert "pw" not in url.split("@")[0].split(":", 2)[-1] and "abc" not in url
    assert "$top=10" in url


def test_mapping_keys_that_carry_credentials_are_masked() -> None:
    data = redact_mapping({"headers": {"Authorization": "Basic xyz", "Accept": "json"}, "password": "p", "n": 1})
    assert data == {"headers": {"Authorization": "***", "Accept": "json"}, "password": "***", "n": 1}


def test_logging_filter_masks_tokens() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s sent", ("abcdef123456",), None)
    RedactingFilter().filter(record)
    assert "abcdef123456" not in record.getMessage()


def test_ttl_cache_counts_hits_and_expires() -> None:
    now = [0.0]
    cache: TTLCache[str, str] = TTLCache(ttl_s=10, clock=lambda: now[0])
    assert cache.get("t") is None
    cache.set("t", "v")
    assert cache.get("t") == "v"
    now[0] = 11
    assert cache.get("t") is None
    assert (cache.hits, cache.misses) == (1, 2)
    assert cache.hit_rate == 1 / 3

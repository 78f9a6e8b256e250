from __future__ import annotations

import random

import pytest

from connectors.core.config import RetryPolicy
from connectors.core.errors import AuthenticationFailed, InvalidRequest, RateLimitExceeded, ServerError
from connectors.core.retry import backoff_delay, call_with_retry

POLICY = RetryPolicy(max_retries=3, base_delay_ms=1000, max_delay_ms=60_000, jitter_ratio=0.5)


def test_delay_doubles_per_attempt_within_jitter_bounds() -> None:
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]:
        for _ in range(50):
            delay = backoff_delay(attempt, POLICY)
            assert base <= delay <= base * 1.5


def test_delays_really_vary_between_runs() -> None:
    # Prefect's retry_jitter_factor was reported to be a no-op for task retries; ours must not be.
    delays = {backoff_delay(2, POLICY) for _ in range(20)}
    assert len(delays) > 15


def test_delay_is_capped() -> None:
    policy = RetryPolicy(max_retries=10, base_delay_ms=1000, max_delay_ms=5000, jitter_ratio=0.5)
    assert backoff_delay(10, policy) == 5.0


def test_retry_after_wins_when_longer_and_zero_uses_normal_schedule() -> None:
    rng = random.Random(1)
    assert backoff_delay(1, POLICY, retry_after_s=30, rng=rng) == 30
    zero = backoff_delay(1, POLICY, retry_after_s=0, rng=rng)
    assert 1.0 <= zero <= 1.5  # Retry-After: 0 must not become a tight loop


def test_retry_after_is_honoured_only_up_to_the_policy_cap() -> None:
    assert backoff_delay(1, POLICY, retry_after_s=86_400, rng=random.Random(1)) == 60.0


def test_a_retry_after_longer_than_the_policy_allows_is_deferred_not_slept_on() -> None:
    sleeps: list[float] = []
    attempts = []

    def fn() -> None:
        attempts.append(1)
        raise RateLimitExceeded("429 Too Many Requests", retry_after_s=86_400)

    with pytest.raises(RateLimitExceeded) as raised:
        call_with_retry(fn, POLICY, sleep=sleeps.append)
    assert attempts == [1] and sleeps == []  # no worker sleeps for a day
    assert raised.value.defer_s == 86_400 and "deferred" in raised.value.message

    # Prefect's outer net does not retry it either: the recorded unit waits for its queued rerun.
    from tasks.retry import retry_transient_only

    class State:
        data = raised.value

    assert retry_transient_only(None, None, State()) is False
    State.data = RateLimitExceeded("429", retry_after_s=2)
    assert retry_transient_only(None, None, State()) is True


def test_transient_failures_are_retried_until_success() -> None:
    sleeps: list[float] = []
    calls = iter([ServerError("503"), RateLimitExceeded("429", retry_after_s=2), "ok"])

    def fn() -> str:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert call_with_retry(fn, POLICY, sleep=sleeps.append) == "ok"
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 1.5
    assert sleeps[1] >= 2.0


@pytest.mark.parametrize("error", [AuthenticationFailed("401"), InvalidRequest("400")])
def test_non_transient_failures_are_never_retried(error: Exception) -> None:
    attempts = []

    def fn() -> None:
        attempts.append(1)
        raise error

    with pytest.raises(type(error)):
        call_with_retry(fn, POLICY, sleep=lambda _: None)
    assert len(attempts) == 1


def test_retries_stop_at_the_policy_limit() -> None:
    attempts = []

    def fn() -> None:
        attempts.append(1)
        raise ServerError("500")

    with pytest.raises(ServerError):
        call_with_retry(fn, RetryPolicy(max_retries=2, base_delay_ms=1), sleep=lambda _: None)
    assert len(attempts) == 3


def test_plain_exceptions_are_classified_before_deciding() -> None:
    import httpx

    attempts = []

    def fn() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise httpx.ReadTimeout("slow")
        return "ok"

    assert call_with_retry(fn, POLICY, sleep=lambda _: None) == "ok"

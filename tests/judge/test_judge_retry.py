"""The judge's HTTP retry policy, with literal inputs: which statuses retry, how long to wait, what stops a run."""

from __future__ import annotations

import asyncio
import random

import pytest

from medgspo.judge import JudgeFatalError
from medgspo.judge.api.retry import (
    TransientError,
    backoff_delay,
    is_retryable,
    parse_retry_after,
    provider_message,
    redact,
    status_error,
    within,
)


class Fixed(random.Random):
    """A random source that always returns ``value`` (0.0: the bottom of a jitter range, 1.0: the top)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_parse_retry_after_variants() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "-4"}) == 0.0  # never a negative wait


@pytest.mark.parametrize(("status", "retry"), [(408, True), (409, True), (429, True), (500, True), (599, True)])
def test_retryable_statuses(status: int, retry: bool) -> None:
    assert is_retryable(status) is retry


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422, 418])
def test_client_errors_are_fatal_and_name_the_flag(status: int) -> None:
    error = status_error(status, "nope", {"retry-after": "1"}, endpoint="https://api.example/v1", api_key_env="MY_KEY")
    assert isinstance(error, JudgeFatalError)
    assert str(error).startswith(f"judge API https://api.example/v1 returned HTTP {status}: ")
    assert str(error).endswith("Provider said: nope")
    if status == 401:
        assert "MY_KEY" in str(error)
    if status in (400, 404, 422):
        assert "--judge_model" in str(error)


def test_server_errors_are_transient_with_retry_after() -> None:
    error = status_error(429, "slow down", {"Retry-After": "7"}, endpoint="u", api_key_env="K")
    assert isinstance(error, TransientError)
    assert (error.reason, error.retry_after) == ("HTTP 429: slow down", 7.0)
    assert status_error(503, "busy", None, endpoint="u", api_key_env="K").retry_after is None


def test_backoff_is_exponential_with_equal_jitter_and_capped() -> None:
    limits = {"base_s": 1.0, "max_s": 30.0, "max_retry_after_s": 120.0}
    # attempt n waits between half and all of min(30, 1 * 2**(n-1)): 1, 2, 4, 8, 16, 30, 30
    low = [backoff_delay(n, None, **limits, rng=Fixed(0.0)) for n in range(1, 8)]
    high = [backoff_delay(n, None, **limits, rng=Fixed(1.0)) for n in range(1, 8)]
    assert low == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert high == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_retry_after_wins_with_up_to_ten_percent_jitter_and_a_cap() -> None:
    limits = {"base_s": 1.0, "max_s": 30.0, "max_retry_after_s": 120.0}
    assert backoff_delay(5, 7.0, **limits, rng=Fixed(0.0)) == 7.0
    assert backoff_delay(5, 7.0, **limits, rng=Fixed(1.0)) == pytest.approx(7.7)  # 7 * 1.1
    assert backoff_delay(1, 3600.0, **limits, rng=Fixed(0.5)) == 120.0


def test_redact_masks_the_key_and_key_shaped_strings() -> None:
    key = "sk-test-0123456789abcdef-secret"
    assert redact(f"Invalid key {key} and sk-abcdefgh12345678", key) == "Invalid key *** and sk-***"
    assert redact("short keys are left: abc", "abc") == "short keys are left: abc"  # too short to be a key


def test_provider_message() -> None:
    class StatusError(Exception):
        def __init__(self, body: object, message: str = ""):
            self.body, self.message = body, message

    assert provider_message(StatusError({"error": {"message": "Insufficient Balance"}})) == "Insufficient Balance"
    assert provider_message(StatusError({"message": "flat"})) == "flat"
    assert provider_message(StatusError(None, "from the SDK")) == "from the SDK"
    assert provider_message(StatusError(None)) == "StatusError"


def test_within_enforces_the_deadline() -> None:
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def fast() -> str:
        return "ok"

    assert asyncio.run(within(fast(), 1.0)) == "ok"
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(within(slow(), 0.05))

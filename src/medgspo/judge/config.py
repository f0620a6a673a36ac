"""``JudgeConfig``: the judge's flags and the object the judge runs on (the same in ``gspo``, ``pipeline``, ``eval``,
``judge`` and ``plan``), and the errors that stop a run.

    --judge_backend reference|openai|local  --judge_model deepseek-flash  --judge_base_url URL
    --judge_concurrency 32  --judge_cache FILE.sqlite  --judge_api_key_env DEEPSEEK_API_KEY  ...
    --judge_price_period peak|off-peak  --judge_price_output_per_mtok 1.2  --no_judge_preflight

``TrlParser`` parses the flags straight into :class:`JudgeConfig`; its ``__post_init__`` is the one check, and every
message names the flag. The API key is read from the environment variable named by ``--judge_api_key_env`` when the
client is built; it is never a field, never logged and never saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from medgspo.errors import ConfigError
from medgspo.judge.deepseek import DEFAULT_MODEL
from medgspo.judge.pricing import (
    DEFAULT_PRICE_PERIOD,
    LIST_PRICES,
    PRICE_PERIODS,
    PRICES_READ_ON,
    Prices,
    price_note,
    run_prices,
)
from medgspo.judge.rubric.prompt import DEFAULT_RUBRIC, RUBRICS
from medgspo.judge.rubric.tiers import TIERS
from medgspo.utils.cli import json_object

BACKENDS = ("openai", "local", "reference")
DEEPSEEK_BASE_URL = "https://api.deepseek.com"
LOCAL_BASE_URL = "http://127.0.0.1:8000/v1"
TIER_VALUES = sorted(TIERS.values())


class JudgeFatalError(RuntimeError):
    """An error that retrying cannot fix (bad key, no balance, bad request, missing key): the run must stop.

    The message is meant for the user and never contains the API key.
    """


def _flag(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class JudgeConfig:
    """How the 5-tier judge runs (``reference`` needs no API; ``openai`` is DeepSeek unless a URL is given).

    Prices are USD per million tokens. A price left unset is the model's DeepSeek list price in
    ``judge_price_period`` (:mod:`.deepseek`; peak by default, an upper bound), or 0 for a model with no known list
    price (a local server).
    """

    judge_backend: str = _flag(
        "reference",
        "`reference` (offline heuristic), `openai` (an OpenAI-compatible API, DeepSeek by default) or `local` (a "
        "local server such as vLLM; needs --judge_model).",
        choices=BACKENDS,
    )
    judge_model: str | None = _flag(
        None,
        f"Judge model (default {DEFAULT_MODEL}; DeepSeek serves {' and '.join(LIST_PRICES)}, read {PRICES_READ_ON}).",
    )
    judge_base_url: str | None = _flag(None, "API base URL (default: DeepSeek; `local`: http://127.0.0.1:8000/v1).")
    judge_api_key_env: str = _flag("DEEPSEEK_API_KEY", "Environment variable that holds the API key.")
    judge_concurrency: int = _flag(32, "Judge calls in flight (the provider's cap for the job).")
    judge_cache: str | None = _flag(None, "SQLite verdict cache; reruns pay nothing twice (default: in the output).")
    judge_deadline_s: float = _flag(60.0, "Hard deadline of one call.")
    judge_max_retries: int = _flag(5, "Retries on 429/5xx/timeouts.")
    judge_max_reasks: int = _flag(2, "Times a reply that does not parse is asked again.")
    judge_backoff_base_s: float = _flag(1.0, "First retry delay (doubles each retry, with jitter).")
    judge_backoff_max_s: float = _flag(30.0, "Longest retry delay without a Retry-After.")
    judge_max_retry_after_s: float = _flag(120.0, "Longest Retry-After honoured.")
    judge_max_answer_chars: int = _flag(4000, "Longer answers are cut in the middle before judging.")
    judge_max_tokens: int = _flag(512, "The judge's reply budget.")
    judge_json_mode: bool = _flag(True, "Request response_format=json_object.")
    judge_thinking: bool = _flag(False, "Let the judge model think (DeepSeek's thinking switch; costs tokens).")
    judge_extra_body: dict | str | None = _flag(None, "Extra request fields as JSON, e.g. '{\"top_k\": 1}'.")
    judge_price_input_per_mtok: float | None = _flag(
        None, f"USD per million input tokens (default: DeepSeek's list price, read {PRICES_READ_ON})."
    )
    judge_price_cached_input_per_mtok: float | None = _flag(
        None, "USD per million input tokens served from the provider's prefix cache."
    )
    judge_price_output_per_mtok: float | None = _flag(None, "USD per million output tokens.")
    judge_price_period: str = _flag(
        DEFAULT_PRICE_PERIOD,
        "Which DeepSeek list price estimates cost: `peak` (an upper bound) or `off-peak` (half).",
        choices=PRICE_PERIODS,
    )
    judge_preflight: bool = _flag(
        True,
        "Check the judge with one tiny request before any model loads (key, model name, balance, server); "
        "`--no_judge_preflight` skips it.",
    )
    judge_undecided_score: float | None = _flag(
        None, "`reference` backend: score its abstentions with this tier value."
    )
    judge_rubric: str = _flag(
        DEFAULT_RUBRIC,
        "Rubric version: v2 (scores manipulation, hedges, bare lists and retractions) or v1.",
        choices=RUBRICS,
    )
    judge_unparsed_score: float | None = _flag(
        TIERS["E"], "Score of a reply the judge gave but that never parsed after the re-asks (a tier value)."
    )

    def __post_init__(self) -> None:
        """The one check of these values; each message names the flag to change."""
        self._check_choices()
        for name in ("judge_concurrency", "judge_max_answer_chars", "judge_max_tokens"):
            _at_least(self, name, 1)
        for name in ("judge_max_retries", "judge_max_reasks"):
            _at_least(self, name, 0)
        for name in ("judge_deadline_s", "judge_backoff_max_s", "judge_max_retry_after_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name} must be > 0 seconds (got {getattr(self, name)})")
        for name in ("judge_undecided_score", "judge_unparsed_score"):
            score = getattr(self, name)
            if score is not None and not any(math.isclose(score, v) for v in TIER_VALUES):
                raise ConfigError(f"--{name} must be a tier value {TIER_VALUES}")
        if self.judge_undecided_score is not None and self.judge_backend != "reference":
            raise ConfigError("--judge_undecided_score only applies to --judge_backend reference")
        if isinstance(self.judge_extra_body, str):
            self.judge_extra_body = json_object(self.judge_extra_body, "--judge_extra_body")

    def _check_choices(self) -> None:
        for name, allowed in (
            ("judge_backend", BACKENDS),
            ("judge_price_period", PRICE_PERIODS),
            ("judge_rubric", RUBRICS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        if self.judge_backend == "local" and not self.judge_model:
            raise ConfigError("--judge_backend local needs --judge_model (the name the local server serves)")

    @property
    def model(self) -> str:
        """The judge model actually asked (``--judge_model``, else DeepSeek's default)."""
        return self.judge_model or DEFAULT_MODEL

    @property
    def endpoint(self) -> str:
        """The base URL actually used."""
        if self.judge_base_url:
            return self.judge_base_url
        return LOCAL_BASE_URL if self.judge_backend == "local" else DEEPSEEK_BASE_URL

    @property
    def prices(self) -> Prices:
        """USD per million tokens: the ``--judge_price_*`` flags where set, else the model's list price (else 0).

        >>> JudgeConfig(judge_backend="openai").prices  # deepseek-flash, peak
        Prices(input_per_mtok=0.3, cached_input_per_mtok=0.006, output_per_mtok=1.2)
        """
        return run_prices(self._priced_model, self.judge_price_period, self._given_prices)

    @property
    def price_note(self) -> str:
        """Where :attr:`prices` come from, in words (printed beside every cost estimate)."""
        return price_note(self._priced_model, self.judge_price_period, self._given_prices)

    @property
    def _priced_model(self) -> str | None:
        return None if self.judge_backend == "reference" else self.model

    @property
    def _given_prices(self) -> tuple[float | None, float | None, float | None]:
        return (
            self.judge_price_input_per_mtok,
            self.judge_price_cached_input_per_mtok,
            self.judge_price_output_per_mtok,
        )

    def to_dict(self) -> dict[str, Any]:
        """What a run folder records of the judge (summaries, reports): the settings under the names summaries have
        always used, the model actually asked, no request extras. It holds the key's variable name, never the key.

        >>> record = JudgeConfig().to_dict()
        >>> record["backend"], record["model"], record["cache_path"], record["disable_thinking"]
        ('reference', 'deepseek-flash', None, True)
        """
        values = {RECORD_NAMES.get(f.name, f.name.removeprefix("judge_")): getattr(self, f.name) for f in fields(self)}
        values.pop("extra_body")
        values.pop("thinking")
        return {**values, "model": self.model, "disable_thinking": not self.judge_thinking}


RECORD_NAMES = {"judge_cache": "cache_path", "judge_undecided_score": "reference_undecided_score"}


def _at_least(config: JudgeConfig, name: str, low: int) -> None:
    if getattr(config, name) < low:
        raise ConfigError(f"--{name} must be >= {low} (got {getattr(config, name)})")

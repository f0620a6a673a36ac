"""``JudgeArguments``: the judge's flags, the same in ``gspo``, ``pipeline``, ``eval`` and ``judge``.

    --judge_backend reference|openai|local  --judge_model deepseek-flash  --judge_base_url URL
    --judge_concurrency 32  --judge_cache FILE.sqlite  --judge_api_key_env DEEPSEEK_API_KEY  ...
    --judge_price_period peak|off-peak  --judge_price_output_per_mtok 1.2  --no_judge_preflight

The API key is read from the environment variable named by ``--judge_api_key_env`` when the client is built; it
is never a flag, never logged and never saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from medgspo.errors import ConfigError
from medgspo.judge.config import BACKENDS, RUBRICS, JudgeConfig
from medgspo.judge.deepseek import LIST_PRICES, PRICE_PERIODS, PRICES_READ_ON
from medgspo.judge.tiers import TIERS

_DEFAULTS = JudgeConfig()


@dataclass
class JudgeArguments:
    """How the 5-tier judge runs (``reference`` needs no API; ``openai`` is DeepSeek unless a URL is given)."""

    judge_backend: str = field(
        default="reference",
        metadata={
            "help": "`reference` (offline heuristic), `openai` (an OpenAI-compatible API, DeepSeek by "
            "default) or `local` (a local server such as vLLM; needs --judge_model).",
            "choices": BACKENDS,
        },
    )
    judge_model: str | None = field(
        default=None,
        metadata={
            "help": f"Judge model (default {_DEFAULTS.model}; DeepSeek serves {' and '.join(LIST_PRICES)}, "
            f"read {PRICES_READ_ON})."
        },
    )
    judge_base_url: str | None = field(
        default=None, metadata={"help": "API base URL (default: DeepSeek; `local`: http://127.0.0.1:8000/v1)."}
    )
    judge_api_key_env: str = field(
        default=_DEFAULTS.api_key_env, metadata={"help": "Environment variable that holds the API key."}
    )
    judge_concurrency: int = field(
        default=_DEFAULTS.concurrency, metadata={"help": "Judge calls in flight (the provider's cap for the job)."}
    )
    judge_cache: str | None = field(
        default=None, metadata={"help": "SQLite verdict cache; reruns pay nothing twice (default: in the output)."}
    )
    judge_deadline_s: float = field(default=_DEFAULTS.deadline_s, metadata={"help": "Hard deadline of one call."})
    judge_max_retries: int = field(default=_DEFAULTS.max_retries, metadata={"help": "Retries on 429/5xx/timeouts."})
    judge_max_answer_chars: int = field(
        default=_DEFAULTS.max_answer_chars, metadata={"help": "Longer answers are cut in the middle before judging."}
    )
    judge_json_mode: bool = field(default=True, metadata={"help": "Request response_format=json_object."})
    judge_price_input_per_mtok: float | None = field(
        default=None,
        metadata={"help": f"USD per million input tokens (default: DeepSeek's list price, read {PRICES_READ_ON})."},
    )
    judge_price_cached_input_per_mtok: float | None = field(
        default=None, metadata={"help": "USD per million input tokens served from the provider's prefix cache."}
    )
    judge_price_output_per_mtok: float | None = field(
        default=None, metadata={"help": "USD per million output tokens."}
    )
    judge_price_period: str = field(
        default=_DEFAULTS.price_period,
        metadata={
            "help": "Which DeepSeek list price estimates cost: `peak` (an upper bound) or `off-peak` (half).",
            "choices": PRICE_PERIODS,
        },
    )
    judge_preflight: bool = field(
        default=True,
        metadata={
            "help": "Check the judge with one tiny request before any model loads (key, model name, balance, "
            "server); `--no_judge_preflight` skips it."
        },
    )
    judge_undecided_score: float | None = field(
        default=None, metadata={"help": "`reference` backend: score its abstentions with this tier value."}
    )
    judge_rubric: str = field(
        default=_DEFAULTS.rubric,
        metadata={
            "help": "Rubric version: v2 (scores manipulation, hedges, bare lists and retractions) or v1.",
            "choices": RUBRICS,
        },
    )
    judge_unparsed_score: float | None = field(
        default=_DEFAULTS.unparsed_score,
        metadata={"help": "Score of a reply the judge gave but that never parsed after the re-asks (a tier value)."},
    )

    def check(self) -> None:
        """Values that are wrong before anything runs; each message names the flag."""
        if self.judge_backend not in BACKENDS:
            raise ConfigError(f"--judge_backend must be one of {', '.join(BACKENDS)} (got {self.judge_backend!r})")
        if self.judge_backend == "local" and not self.judge_model:
            raise ConfigError("--judge_backend local needs --judge_model (the name the local server serves)")
        if self.judge_concurrency < 1:
            raise ConfigError(f"--judge_concurrency must be >= 1 (got {self.judge_concurrency})")
        if self.judge_deadline_s <= 0:
            raise ConfigError(f"--judge_deadline_s must be > 0 seconds (got {self.judge_deadline_s})")
        if self.judge_max_retries < 0:
            raise ConfigError(f"--judge_max_retries must be >= 0 (got {self.judge_max_retries})")
        if self.judge_price_period not in PRICE_PERIODS:
            raise ConfigError(f"--judge_price_period must be one of {', '.join(PRICE_PERIODS)}")
        if self.judge_max_answer_chars < 1:
            raise ConfigError(f"--judge_max_answer_chars must be >= 1 (got {self.judge_max_answer_chars})")
        if self.judge_rubric not in RUBRICS:
            raise ConfigError(f"--judge_rubric must be one of {', '.join(RUBRICS)} (got {self.judge_rubric!r})")
        unparsed = self.judge_unparsed_score
        if unparsed is not None and not any(math.isclose(unparsed, v) for v in TIERS.values()):
            raise ConfigError(f"--judge_unparsed_score must be a tier value {sorted(TIERS.values())}")
        score = self.judge_undecided_score
        if score is not None:
            if self.judge_backend != "reference":
                raise ConfigError("--judge_undecided_score only applies to --judge_backend reference")
            if not any(math.isclose(score, v) for v in TIERS.values()):
                raise ConfigError(f"--judge_undecided_score must be a tier value {sorted(TIERS.values())}")

    def to_config(self, default_cache: Path | None = None) -> JudgeConfig:
        """The :class:`JudgeConfig` these flags describe (checked first)."""
        self.check()
        prices = {
            "price_input_per_mtok": self.judge_price_input_per_mtok,
            "price_cached_input_per_mtok": self.judge_price_cached_input_per_mtok,
            "price_output_per_mtok": self.judge_price_output_per_mtok,
        }
        cache = self.judge_cache or (str(default_cache) if default_cache else None)
        return JudgeConfig(
            backend=self.judge_backend,
            base_url=self.judge_base_url,
            model=self.judge_model or _DEFAULTS.model,
            api_key_env=self.judge_api_key_env,
            concurrency=self.judge_concurrency,
            deadline_s=self.judge_deadline_s,
            max_retries=self.judge_max_retries,
            cache_path=cache,
            max_answer_chars=self.judge_max_answer_chars,
            json_mode=self.judge_json_mode,
            price_period=self.judge_price_period,
            reference_undecided_score=self.judge_undecided_score,
            rubric=self.judge_rubric,
            unparsed_score=self.judge_unparsed_score,
            **{k: v for k, v in prices.items() if v is not None},
        )

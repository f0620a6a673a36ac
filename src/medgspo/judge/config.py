"""``JudgeConfig``: how a judge runs (back-end, endpoint, model, limits, prices), and the errors that stop a run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from medgspo.judge.accounting import JudgeStats, Judgment, Prices
from medgspo.judge.deepseek import DEFAULT_MODEL, DEFAULT_PRICE_PERIOD, PRICE_PERIODS, PRICES_READ_ON, list_prices
from medgspo.judge.tiers import TIERS

RUBRICS = ("v1", "v2")  # judge/rubric_<name>.txt; v2 scores manipulation, hedges, bare lists and retractions

BACKENDS = ("openai", "local", "reference")
DEEPSEEK_BASE_URL = "https://api.deepseek.com"
LOCAL_BASE_URL = "http://127.0.0.1:8000/v1"


class JudgeFatalError(RuntimeError):
    """An error that retrying cannot fix (bad key, no balance, bad request, missing key): the run must stop.

    The message is meant for the user and never contains the API key.
    """


@dataclass
class JudgeConfig:
    """How the judge runs. The API key is not a field: it is read from ``api_key_env`` when the client is built.

    Prices are USD per million tokens. A price left at ``None`` is the model's DeepSeek list price in
    ``price_period`` (:mod:`.deepseek`, read on 2026-11-29; peak by default, an upper bound), or 0 for a model with
    no known list price (a local server); set the ``price_*`` fields to override.
    """

    backend: str = "openai"
    base_url: str | None = None  # None: DeepSeek for "openai", http://127.0.0.1:8000/v1 for "local"
    model: str = DEFAULT_MODEL
    api_key_env: str = "DEEPSEEK_API_KEY"
    concurrency: int = 32
    max_retries: int = 5
    deadline_s: float = 60.0
    max_reasks: int = 2
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    cache_path: str | None = None
    price_input_per_mtok: float | None = None
    price_cached_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    price_period: str = DEFAULT_PRICE_PERIOD
    max_answer_chars: int = 4000
    max_tokens: int = 512
    json_mode: bool = True
    disable_thinking: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)
    reference_undecided_score: float | None = None
    rubric: str = "v2"
    unparsed_score: float | None = TIERS["E"]  # a reply given but never parsed (after the re-asks); None: skip it

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"judge backend must be one of {BACKENDS} (got {self.backend!r})")
        for name in ("concurrency", "max_answer_chars", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"judge {name} must be >= 1 (got {getattr(self, name)})")
        for name in ("max_retries", "max_reasks"):
            if getattr(self, name) < 0:
                raise ValueError(f"judge {name} must be >= 0 (got {getattr(self, name)})")
        for name in ("deadline_s", "backoff_max_s", "max_retry_after_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"judge {name} must be > 0 (got {getattr(self, name)})")
        if self.price_period not in PRICE_PERIODS:
            raise ValueError(f"judge price_period must be one of {PRICE_PERIODS} (got {self.price_period!r})")
        for name in ("reference_undecided_score", "unparsed_score"):
            score = getattr(self, name)
            if score is not None and not any(math.isclose(score, v) for v in TIERS.values()):
                raise ValueError(f"judge {name} must be a tier value {sorted(TIERS.values())} or None")
        if self.rubric not in RUBRICS:
            raise ValueError(f"judge rubric must be one of {RUBRICS} (got {self.rubric!r})")

    @property
    def endpoint(self) -> str:
        """The base URL actually used."""
        if self.base_url:
            return self.base_url
        return LOCAL_BASE_URL if self.backend == "local" else DEEPSEEK_BASE_URL

    @property
    def prices(self) -> Prices:
        """USD per million tokens: the ``price_*`` fields where set, else the model's list price (else 0).

        >>> JudgeConfig().prices  # deepseek-flash, peak
        Prices(input_per_mtok=0.3, cached_input_per_mtok=0.006, output_per_mtok=1.2)
        >>> JudgeConfig(price_period="off-peak", price_output_per_mtok=0.5).prices
        Prices(input_per_mtok=0.15, cached_input_per_mtok=0.003, output_per_mtok=0.5)
        """
        listed = self._list_prices() or Prices(0.0, 0.0, 0.0)
        return Prices(
            listed.input_per_mtok if self.price_input_per_mtok is None else self.price_input_per_mtok,
            listed.cached_input_per_mtok
            if self.price_cached_input_per_mtok is None
            else self.price_cached_input_per_mtok,
            listed.output_per_mtok if self.price_output_per_mtok is None else self.price_output_per_mtok,
        )

    @property
    def price_note(self) -> str:
        """Where :attr:`prices` come from, in words (printed beside every cost estimate)."""
        if self.backend == "reference":
            return "no API calls"
        overridden = [self.price_input_per_mtok, self.price_cached_input_per_mtok, self.price_output_per_mtok]
        if all(p is not None for p in overridden):
            return "prices from the --judge_price_* flags"
        if self._list_prices() is None:
            return f"no list price known for {self.model!r}: cost counted as 0; set --judge_price_*_per_mtok"
        flags = " and --judge_price_* flags" if any(p is not None for p in overridden) else ""
        return f"DeepSeek list price of {self.model}, {self.price_period} (read {PRICES_READ_ON}){flags}"

    def _list_prices(self) -> Prices | None:
        return list_prices(self.model, self.price_period) if self.backend != "reference" else None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for saving beside a run (holds the key's variable name, never the key)."""
        return asdict(self)


class Judge(Protocol):
    """What every backend offers."""

    config: JudgeConfig
    stats: JudgeStats
    last_batch: JudgeStats | None

    async def judge_batch(
        self, items: list[Any], *, stats: JudgeStats | None = None, progress: Any = None
    ) -> list[Judgment]: ...

    async def aclose(self) -> None: ...

    def needs_calls(self, items: list[Any]) -> bool: ...

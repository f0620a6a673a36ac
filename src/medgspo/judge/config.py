"""``JudgeConfig``: how a judge runs (back-end, endpoint, model, limits, prices), and the errors that stop a run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from medgspo.judge.accounting import JudgeStats, Judgment, Prices
from medgspo.judge.tiers import TIERS

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

    Prices are USD per million tokens; the defaults are DeepSeek's list prices for ``deepseek-chat``
    (input 0.28, input on a prefix-cache hit 0.028, output 0.42). Check the provider's page and override them.
    """

    backend: str = "openai"
    base_url: str | None = None  # None: DeepSeek for "openai", http://127.0.0.1:8000/v1 for "local"
    model: str = "deepseek-chat"
    api_key_env: str = "DEEPSEEK_API_KEY"
    concurrency: int = 32
    max_retries: int = 5
    deadline_s: float = 60.0
    max_reasks: int = 2
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    cache_path: str | None = None
    price_input_per_mtok: float = 0.28
    price_cached_input_per_mtok: float = 0.028
    price_output_per_mtok: float = 0.42
    max_answer_chars: int = 4000
    max_tokens: int = 512
    json_mode: bool = True
    disable_thinking: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)
    reference_undecided_score: float | None = None

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
        score = self.reference_undecided_score
        if score is not None and not any(math.isclose(score, v) for v in TIERS.values()):
            raise ValueError(f"judge reference_undecided_score must be a tier value {sorted(TIERS.values())} or None")

    @property
    def endpoint(self) -> str:
        """The base URL actually used."""
        if self.base_url:
            return self.base_url
        return LOCAL_BASE_URL if self.backend == "local" else DEEPSEEK_BASE_URL

    @property
    def prices(self) -> Prices:
        return Prices(self.price_input_per_mtok, self.price_cached_input_per_mtok, self.price_output_per_mtok)

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

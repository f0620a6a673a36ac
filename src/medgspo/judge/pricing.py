"""What judge calls cost: USD per million tokens, DeepSeek's list prices, and the prices a run uses.

Every price lives here. The list prices were read on 2026-11-29 from DeepSeek's "Models & Pricing" page (the stored
copy dated 2026-11-15, https://api-docs.deepseek.com/quick_start/pricing); change the table when the page changes.
A run's prices (:func:`run_prices`) are the ``--judge_price_*`` flags where given, else the model's list price in
``--judge_price_period`` (peak by default, an upper bound), else 0 (a model with no known list price: a local server).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prices:
    """USD per million tokens: fresh input, cached input (provider prefix-cache hits) and output."""

    input_per_mtok: float
    cached_input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, cached_prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated USD; cached tokens are part of ``prompt_tokens`` and billed at the cached price.

        >>> round(Prices(0.28, 0.028, 0.42).cost(1_000_000, 500_000, 100_000), 4)  # 0.5*0.28 + 0.5*0.028 + 0.1*0.42
        0.196
        """
        fresh = max(prompt_tokens - cached_prompt_tokens, 0)
        return (
            fresh * self.input_per_mtok
            + cached_prompt_tokens * self.cached_input_per_mtok
            + completion_tokens * self.output_per_mtok
        ) / 1e6


PRICES_READ_ON = "2026-11-29"  # the day the table below was read (page copy dated 2026-11-15)
PRICES_SOURCE = "https://api-docs.deepseek.com/quick_start/pricing"
PRICE_PERIODS = ("peak", "off-peak")
DEFAULT_PRICE_PERIOD = "peak"  # an upper bound: off-peak is exactly half (Beijing time, weekdays 9-12 and 14-18 peak)

# USD per million tokens: (input on a cache miss, input on a cache hit, output), by billing period.
LIST_PRICES: dict[str, dict[str, Prices]] = {
    "deepseek-flash": {"peak": Prices(0.30, 0.006, 1.20), "off-peak": Prices(0.15, 0.003, 0.60)},
    "deepseek-v4-pro": {"peak": Prices(1.32, 0.044, 3.96), "off-peak": Prices(0.66, 0.022, 1.98)},
}
ALIASES = {"deepseek-v4-flash": "deepseek-flash", "deepseek-v4-flash-vision-exp": "deepseek-flash"}


def list_prices(model: str, period: str = DEFAULT_PRICE_PERIOD) -> Prices | None:
    """DeepSeek's list price of ``model`` in ``period`` (read on :data:`PRICES_READ_ON`), or ``None`` when unknown.

    >>> list_prices("deepseek-flash")
    Prices(input_per_mtok=0.3, cached_input_per_mtok=0.006, output_per_mtok=1.2)
    >>> list_prices("deepseek-v4-flash", "off-peak").output_per_mtok, list_prices("gpt-x") is None
    (0.6, True)
    """
    name = model.rsplit("/", 1)[-1].strip().lower()
    name = ALIASES.get(name, name)
    table = LIST_PRICES.get(name)
    return None if table is None else table[period]


def run_prices(model: str | None, period: str, given: tuple[float | None, float | None, float | None]) -> Prices:
    """The prices a run uses: ``given`` (input, cached input, output; ``None`` = not given) over ``model``'s list
    price in ``period`` (no model: no API, all 0).

    >>> run_prices("deepseek-flash", "off-peak", (None, None, 0.5))
    Prices(input_per_mtok=0.15, cached_input_per_mtok=0.003, output_per_mtok=0.5)
    """
    listed = (list_prices(model, period) if model else None) or Prices(0.0, 0.0, 0.0)
    listed_values = (listed.input_per_mtok, listed.cached_input_per_mtok, listed.output_per_mtok)
    return Prices(*(value if price is None else price for value, price in zip(listed_values, given, strict=True)))


def price_note(model: str | None, period: str, given: tuple[float | None, float | None, float | None]) -> str:
    """Where :func:`run_prices` came from, in words (printed beside every cost estimate)."""
    if model is None:
        return "no API calls"
    if all(p is not None for p in given):
        return "prices from the --judge_price_* flags"
    if list_prices(model, period) is None:
        return f"no list price known for {model!r}: cost counted as 0; set --judge_price_*_per_mtok"
    flags = " and --judge_price_* flags" if any(p is not None for p in given) else ""
    return f"DeepSeek list price of {model}, {period} (read {PRICES_READ_ON}){flags}"

"""DeepSeek as it is now: the served model names, the retired names and the thinking switch (its list prices are
:mod:`medgspo.judge.pricing`).

Everything here was read on 2026-11-29 from DeepSeek's "Models & Pricing" page (the stored copy dated 2026-11-15,
https://api-docs.deepseek.com/quick_start/pricing), the thinking-mode guide and the update notes; change the table
when the page changes. The two served names are ``deepseek-flash`` (DeepSeek-V4.1-Flash-1017; the legacy name
``deepseek-v4-flash`` is still accepted, served by V4.1 Flash and billed at the Flash price) and ``deepseek-v4-pro``
(DeepSeek-V4-Pro-0813, with its own prices: the announced routing of Pro to V4.1 Flash from 2026-09-14 was withdrawn,
and the 2026-11-15 page still lists Pro separately). ``deepseek-chat`` and ``deepseek-reasoner`` were discontinued
on 2026-07-24 15:59 UTC; since then a request naming them is rejected with HTTP 400.

V4 models think by default; a judge does not need to, so every request to a DeepSeek model (recognised by its host
*or* by its name, since a proxy or a local gateway may sit in between) carries ``"thinking": {"type": "disabled"}``.
"""

from __future__ import annotations

from urllib.parse import urlparse

from medgspo.judge.pricing import LIST_PRICES

DEFAULT_MODEL = "deepseek-flash"

RETIRED = {"deepseek-chat": "deepseek-flash", "deepseek-reasoner": "deepseek-flash"}
RETIRED_ON = "2026-07-24 15:59 UTC"
THINKING_OFF = {"thinking": {"type": "disabled"}}


def is_deepseek_model(model: str) -> bool:
    """Whether ``model`` names a DeepSeek model, whoever serves it (``deepseek-flash``, ``deepseek/deepseek-v4-pro``,
    ``deepseek-ai/DeepSeek-V3.1``).

    >>> is_deepseek_model("deepseek-flash"), is_deepseek_model("deepseek-ai/DeepSeek-V3.1"), is_deepseek_model("qwen")
    (True, True, False)
    """
    return model.rsplit("/", 1)[-1].strip().lower().startswith("deepseek")


def is_deepseek_host(base_url: str) -> bool:
    """Whether ``base_url`` is DeepSeek's own API.

    >>> is_deepseek_host("https://api.deepseek.com/v1"), is_deepseek_host("http://127.0.0.1:8000/v1")
    (True, False)
    """
    host = (urlparse(base_url).hostname or "").lower()
    return host == "deepseek.com" or host.endswith(".deepseek.com")


def retired_replacement(model: str) -> str | None:
    """The current name to use instead of a retired DeepSeek name, or ``None`` when ``model`` is not retired.

    >>> retired_replacement("deepseek-chat"), retired_replacement("deepseek-flash")
    ('deepseek-flash', None)
    """
    return RETIRED.get(model.strip().lower())


def retired_message(model: str) -> str:
    """The one line that tells the user a name was retired and what to use instead."""
    new = retired_replacement(model) or DEFAULT_MODEL
    return (
        f"judge model {model!r} was retired by DeepSeek on {RETIRED_ON} (requests naming it are rejected); use "
        f"--judge_model {new} (DeepSeek's current names: {', '.join(LIST_PRICES)})"
    )

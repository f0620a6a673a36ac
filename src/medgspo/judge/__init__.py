"""The judge stage: the 5-tier Chinese medical rubric, a pure verdict parser and the judges that apply them.
Backends ``openai``/``local`` (an async HTTP client with retries, cache and cost) and ``reference`` (offline).

Three layers, each testable alone: the rubric prompt (``rubric_v1.txt`` + :mod:`.prompt`), :func:`parse_score`
(:mod:`.parse`, tiers in :mod:`.tiers`), and a judge that owns retries, deadlines, concurrency, cache and cost
(:mod:`.base` for the batch path shared by every backend, :mod:`.retry` for the HTTP retry policy, :mod:`.client`
for the OpenAI-compatible client, with :mod:`.cache` and :mod:`.accounting`). Its flags are
:class:`~medgspo.judge.config.JudgeConfig` (``--judge_backend`` ...) and ``medgspo judge`` is :mod:`.cli`.
DeepSeek's served names, list prices and thinking switch are :mod:`.deepseek`; every command checks an API judge
first with :func:`~medgspo.judge.preflight.preflight`; ``medgspo judge calibrate`` (:mod:`.calibrate`, metrics in
:mod:`.calibration`) measures a judge against labelled verdicts. Backends:

* ``openai``: any OpenAI-compatible API through the official ``openai`` SDK (DeepSeek ``deepseek-flash`` by
  default);
* ``local``: the same client pointed at a local server (vLLM, SGLang, Ollama), no API key needed;
* ``reference``: an offline, deterministic lexical heuristic (:mod:`.reference`), for runs with no API.

    judge = make_judge(JudgeConfig(judge_backend="openai", judge_cache="judge_cache.sqlite"))
    judgments = await judge.judge_batch([{"question": q, "reference": r, "completion": c}])

A failed judgment has ``score=None`` (TRL skips it); it is never turned into 0.0, which is a real tier.
"""

from __future__ import annotations

from medgspo.judge.api.accounting import JudgeStats, Judgment, summary_lines
from medgspo.judge.api.base import BaseJudge, Judge
from medgspo.judge.api.client import OpenAIJudge
from medgspo.judge.backends import make_judge
from medgspo.judge.config import BACKENDS, DEEPSEEK_BASE_URL, LOCAL_BASE_URL, JudgeConfig, JudgeFatalError
from medgspo.judge.pricing import Prices
from medgspo.judge.reference.heuristic import ReferenceJudge
from medgspo.judge.rubric.parse import Verdict, parse_score, parse_verdict
from medgspo.judge.rubric.prompt import JudgeItem, build_messages, load_rubric, render_candidate
from medgspo.judge.rubric.tiers import MALFORMED_SCORE, TIER_NAMES, TIERS, label_for

__all__ = [
    "BACKENDS",
    "DEEPSEEK_BASE_URL",
    "LOCAL_BASE_URL",
    "MALFORMED_SCORE",
    "TIERS",
    "TIER_NAMES",
    "BaseJudge",
    "Judge",
    "JudgeConfig",
    "JudgeFatalError",
    "JudgeItem",
    "JudgeStats",
    "Judgment",
    "OpenAIJudge",
    "Prices",
    "ReferenceJudge",
    "Verdict",
    "build_messages",
    "label_for",
    "load_rubric",
    "make_judge",
    "parse_score",
    "parse_verdict",
    "render_candidate",
    "summary_lines",
]

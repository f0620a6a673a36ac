"""The judge for a backend name: ``openai`` and ``local`` (the API client) or ``reference`` (the offline heuristic).

judge = make_judge(JudgeConfig(judge_backend="openai", judge_cache="runs/judge_cache.sqlite"))
"""

from __future__ import annotations

from medgspo.judge.api.base import Judge
from medgspo.judge.api.client import OpenAIJudge
from medgspo.judge.config import JudgeConfig
from medgspo.judge.reference.heuristic import ReferenceJudge


def make_judge(config: JudgeConfig | None = None, *, api_key: str | None = None) -> Judge:
    """Build the judge for ``config.judge_backend``; ``api_key`` overrides the environment variable (tests, notebooks).

    >>> type(make_judge(JudgeConfig(judge_backend="reference"))).__name__
    'ReferenceJudge'
    """
    config = config or JudgeConfig()
    if config.judge_backend == "reference":
        return ReferenceJudge(config)
    return OpenAIJudge(config, api_key=api_key)

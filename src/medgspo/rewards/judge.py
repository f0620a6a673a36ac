"""The judge reward for TRL's ``GRPOTrainer`` (GSPO): the 5-tier LLM judge over the text after ``</think>``.

It follows TRL's reward signature ``f(prompts, completions, completion_ids, **columns) -> list[float | None]``;
the RL dataset's ``question`` and ``reference`` columns arrive as keyword lists, one entry per completion, and so
do the optional ``key_terms`` and ``ruled_out`` columns (lists of strings; empty for records without them), which
the offline reference judge scores against (:mod:`medgspo.judge.reference.key_terms`).

    judge = judge_reward(JudgeConfig(judge_backend="openai", judge_cache="runs/judge_cache.sqlite"))
    trainer = GRPOTrainer(..., reward_funcs=[judge, format_reward], args=GRPOConfig(reward_weights=[1.0, 0.2]))

:func:`judge_reward` returns an ``async`` callable: TRL awaits it on its own event loop, and the whole batch is
judged concurrently inside that one call. A failed judgment is ``None`` (TRL turns it into NaN and leaves it out
of this reward), never 0.0.

Abstentions are not a hiding place. With ``multi_objective_aggregation="normalize_then_sum"`` a ``None`` sits at its
group's mean, so a policy that cannot earn a good verdict learns to write answers the reference judge abstains on
(an earlier tiny run collapsed onto one such answer). ``abstain_score`` (training default
:data:`ABSTAIN_SCORE` = -1.0, the judge's floor, ``--abstain_score``) replaces the
``None`` of an abstention: it then earns nothing from the judge, only what the format and guard rewards give.
A failed judgment (network, unparseable reply) stays ``None``. Per batch it logs, through TRL's ``log_metric``, the per-tier counts
(``judge/tier_A`` ... ``judge/tier_E``), ``judge/failure_rate``, cache-hit rate, calls, retries, tokens, latency
and cost; through ``log_extra`` it adds ``judge_label``/``judge_error`` columns to the completions table. The
run-level totals stay in ``reward.stats``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medgspo.data.chat_format import completion_text
from medgspo.judge import Judge, JudgeConfig, JudgeItem, JudgeStats, make_judge

logger = logging.getLogger(__name__)


ABSTAIN_SCORE = -1.0  # what an abstention of the judge scores in training (``--abstain_score``)


@dataclass
class JudgeRewardArguments:
    """The flag of the ``judge`` reward (the judge itself is :class:`~medgspo.judge.config.JudgeConfig`)."""

    abstain_score: float | None = field(
        default=ABSTAIN_SCORE,
        metadata={
            "help": "Judge reward of an answer the offline reference judge abstains on (default -1.0, its floor: "
            "only the format and guard rewards can lift it). null keeps None, which sits at its group's mean: a "
            "hiding place a weak policy learns to aim for. Evaluation never uses it."
        },
    )


def is_abstention(judgment: Any) -> bool:
    """The offline reference judge declined to decide (not a failure), as :class:`~medgspo.judge.JudgeStats`
    counts it."""
    return judgment.score is None and judgment.error is not None and judgment.source == "reference"


class JudgeReward:
    """An async TRL reward function backed by a judge; ``stats`` holds the run's totals. ``abstain_score`` (when
    not ``None``) is the reward of an answer the judge abstains on."""

    def __init__(self, judge: Judge, name: str = "judge_reward", abstain_score: float | None = None):
        self.judge = judge
        self.abstain_score = abstain_score
        self.__name__ = name

    @property
    def stats(self) -> JudgeStats:
        """Run-level accounting (calls, cache hits, failures, tokens, latency) since the reward was built."""
        return self.judge.stats

    async def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[Any] | None = None,
        *,
        question: list[str] | None = None,
        reference: list[str] | None = None,
        key_terms: list[list[str] | None] | None = None,
        ruled_out: list[list[str] | None] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if question is None or reference is None:
            raise ValueError(
                "judge_reward needs the dataset columns 'question' and 'reference' (see ChatFormat.rl_example)"
            )
        none = [None] * len(completions)
        items = [
            JudgeItem(q, r, completion=completion_text(c), key_terms=tuple(k or ()), ruled_out=tuple(o or ()))
            for q, r, c, k, o in zip(
                question, reference, completions, key_terms or none, ruled_out or none, strict=True
            )
        ]
        batch = JudgeStats()
        judgments = await self.judge.judge_batch(items, stats=batch)
        self._log(batch, judgments, log_metric, log_extra)
        if self.abstain_score is None:
            return [j.score for j in judgments]
        return [self.abstain_score if is_abstention(j) else j.score for j in judgments]

    def _log(self, batch: JudgeStats, judgments: list[Any], log_metric: Any, log_extra: Any) -> None:
        metrics = batch.metrics(self.judge.config.prices)
        if log_metric is not None:
            for name, value in metrics.items():
                log_metric(name, value)
        if log_extra is not None:
            log_extra("judge_label", [j.label for j in judgments])
            log_extra("judge_error", [j.error for j in judgments])
        if batch.failures:
            logger.warning(
                "Judge failed on %d of %d completions this batch (scored None): %s",
                batch.failures,
                batch.judgments,
                dict(batch.failure_reasons),
            )
        logger.debug("Judge batch: %s", metrics)


def judge_reward(
    config: JudgeConfig | None = None,
    *,
    judge: Judge | None = None,
    name: str = "judge_reward",
    abstain_score: float | None = None,
) -> JudgeReward:
    """The judge reward for ``GRPOTrainer``: built from ``config`` (default: the flags' defaults, the offline
    reference judge), or wrapping an existing ``judge``; ``abstain_score`` as in :class:`JudgeReward`."""
    return JudgeReward(judge if judge is not None else make_judge(config), name=name, abstain_score=abstain_score)

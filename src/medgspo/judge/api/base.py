"""What every judge backend shares: turning a batch of items into unique jobs, the verdict cache, the accounting.

:class:`BaseJudge.judge_batch` is the one batch path of every backend (built by :func:`medgspo.judge.make_judge`):

1. a completion with no closed ``</think>``, a malformed think/answer layout or an empty answer scores
   :data:`~medgspo.judge.rubric.tiers.MALFORMED_SCORE` (-1.0) by rule, without a call;
2. identical answers in a batch (same cache key) become one :class:`Job`, judged once;
3. jobs the persistent cache (:mod:`.cache`) already holds are answered from it;
4. the rest go to the backend's :meth:`BaseJudge._judge_new` (HTTP calls in :mod:`.client`, the offline heuristic
   in :mod:`.reference`), which stores each success with :meth:`BaseJudge._remember` as soon as it arrives;
5. per-batch counts are merged into the run-level :attr:`BaseJudge.stats` (:mod:`.accounting`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from medgspo.judge.api.accounting import JudgeStats, Judgment
from medgspo.judge.api.cache import JudgeCache, cache_key
from medgspo.judge.config import JudgeConfig
from medgspo.judge.rubric.prompt import JudgeItem, load_rubric, render_candidate
from medgspo.judge.rubric.tiers import MALFORMED_SCORE, label_for

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Job:
    """One unique thing to judge: the texts the judge sees and their cache key."""

    question: str
    reference: str
    candidate: str
    key: str


class BaseJudge(ABC):
    """Batch bookkeeping shared by all backends: rule-scored items, in-batch de-duplication, cache, accounting."""

    backend = "base"
    uses_cache: ClassVar[bool] = True  # a backend that answers in microseconds has nothing to save

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.concurrency = config.judge_concurrency  # calls in flight; GSPO lowers it to its process's share
        self.rubric = load_rubric(config.judge_rubric)
        self.stats = JudgeStats()
        self.last_batch: JudgeStats | None = None
        self.cache = JudgeCache(config.judge_cache) if self.uses_cache and config.judge_cache else None

    @property
    def judge_id(self) -> str:
        """What the verdicts depend on besides the prompt (the model name)."""
        return self.config.model

    async def judge_batch(
        self, items: list[Any], *, stats: JudgeStats | None = None, progress: Progress | None = None
    ) -> list[Judgment]:
        """Judge ``items`` (dicts or :class:`JudgeItem`) concurrently; one :class:`Judgment` per item, in order.

        ``stats`` (optional) receives this batch's counts as well as the run-level :attr:`stats`; ``progress``
        is called with the number of items finished each time some finish.
        """
        start = time.perf_counter()
        batch = JudgeStats()
        results, groups, jobs = self._plan(items, batch)
        if progress and any(results):
            progress(sum(r is not None for r in results))

        def done(key: str) -> None:
            if progress:
                progress(len(groups[key]))

        try:
            verdicts = await self._judge_jobs(list(jobs.values()), batch, done)
            for key, indices in groups.items():
                results[indices[0]] = verdicts[key]
                batch.record(verdicts[key])
                for i in indices[1:]:
                    results[i] = replace(verdicts[key], cached=True)
                    batch.record(results[i], duplicate=True)
        finally:
            batch.wall_s = time.perf_counter() - start
            for target in (self.stats, stats):
                if target is not None:
                    target.merge(batch)
            self.last_batch = batch
        logger.debug("Judged %d items: %s", len(items), dict(batch.tiers))
        return results  # type: ignore[return-value]  # every slot is filled above

    def needs_calls(self, items: list[Any]) -> bool:
        """Whether judging ``items`` would ask the backend anything: some answer is neither scored by rule nor in
        the cache (a fully cached rerun then skips the preflight request too)."""
        _, _, jobs = self._plan(items, JudgeStats())
        if not jobs:
            return False
        if self.cache is None:
            return True
        return len(self.cache.get_many(jobs)) < len(jobs)

    def _plan(
        self, items: list[Any], batch: JudgeStats
    ) -> tuple[list[Judgment | None], dict[str, list[int]], dict[str, Job]]:
        """Score items with no answer at once (-1.0); group the rest by cache key (identical answers judged once)."""
        results: list[Judgment | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        jobs: dict[str, Job] = {}
        for i, raw in enumerate(items):
            item = JudgeItem.from_mapping(raw)
            answer, rule = item.final_answer()
            if rule is not None:
                results[i] = Judgment(MALFORMED_SCORE, label_for(MALFORMED_SCORE), reason=rule, source="rule")
                batch.record(results[i])
                continue
            job = self._job(item, answer)
            groups.setdefault(job.key, []).append(i)
            jobs.setdefault(job.key, job)
        return results, groups, jobs

    def _job(self, item: JudgeItem, answer: str) -> Job:
        candidate = render_candidate(answer, self.config.judge_max_answer_chars)
        key = cache_key(self.judge_id, self.rubric.version, item.question.strip(), item.reference.strip(), candidate)
        return Job(item.question, item.reference, candidate, key)

    async def _judge_jobs(
        self, jobs: list[Job], batch: JudgeStats, done: Callable[[str], None]
    ) -> dict[str, Judgment]:
        """Answer the jobs from the cache where it can, then ask the backend for the rest."""
        verdicts = self.cache.get_many(j.key for j in jobs) if self.cache is not None else {}
        for key in verdicts:
            done(key)
        fresh = [job for job in jobs if job.key not in verdicts]
        if fresh:
            verdicts |= await self._judge_new(fresh, batch, done)
        return verdicts

    @abstractmethod
    async def _judge_new(self, jobs: list[Job], batch: JudgeStats, done: Callable[[str], None]) -> dict[str, Judgment]:
        """Judge the jobs the cache could not answer (calling ``done(job.key)`` as each finishes)."""

    def _remember(self, job: Job, judgment: Judgment) -> None:
        """Store a successful verdict in the cache at once, so a killed run keeps it."""
        if self.cache is not None and judgment.score is not None:
            self.cache.put(job.key, judgment, model=self.judge_id, prompt_version=self.rubric.version)

    async def aclose(self) -> None:
        """Release network connections and files."""
        await self._close_http()
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    async def _close_http(self) -> None:  # noqa: B027  (a default no-op; the HTTP backend overrides it)
        """Release the connections bound to the current event loop."""

    def judge_batch_sync(self, items: list[Any]) -> list[Judgment]:
        """:meth:`judge_batch` from synchronous code (evaluation scripts); not from inside a running loop."""

        async def run() -> list[Judgment]:
            try:
                return await self.judge_batch(items)
            finally:
                await self._close_http()

        return asyncio.run(run())


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

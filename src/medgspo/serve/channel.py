"""The asyncio side of one request to the batcher: submit its jobs (one per choice), then await what they send.

    channel = JobChannel(batcher, jobs, stream=True)     # QueueFull: refuse with 503 (all jobs or none are queued)
    async for index, item in channel.items(is_gone):      # per choice: logprob lists and str pieces, then its result
        ...
    channel.close()                                       # cancels the jobs that have not ended (client went away)

A request asks for ``n`` choices (and ``/v1/completions`` may send several prompts): each is a job of its own in the
batcher, and their items arrive tagged with the choice's index. The batcher calls back on its own thread; the
callbacks only hand each value to this request's ``asyncio.Queue`` through ``loop.call_soon_threadsafe``.
``is_gone()`` is asked every ``poll_s`` seconds, so a client that disconnects while it waits (in the queue, or for a
non-streamed answer) frees its places too, not only one whose stream write fails. When one choice fails, the
request fails: its error is raised and the other choices are cancelled by :meth:`close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from medgspo.serve.batcher import Batcher, Job
from medgspo.serve.engine import GenerationResult

logger = logging.getLogger(__name__)


class ClientGone(ConnectionError):
    """The client disconnected before its answer was complete."""


class _Outcome:
    def __init__(self, value: GenerationResult | BaseException) -> None:
        self.value = value


class JobChannel:
    """The submitted jobs of one request and the queue their items arrive in."""

    def __init__(self, batcher: Batcher, jobs: list[Job], *, stream: bool = False, poll_s: float = 0.5) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self.poll_s = poll_s
        self.jobs = jobs
        for index, job in enumerate(jobs):
            put = partial(_put, loop, self._queue, index)
            job.on_done = lambda outcome, put=put: put(_Outcome(outcome))
            if stream:
                job.on_text = put
                job.on_logprobs = put if job.logprobs is not None else None
        batcher.submit_all(jobs)

    async def items(self, is_gone: Callable[[], bool] = lambda: False) -> AsyncIterator[tuple[int, Any]]:
        """``(choice index, item)``: logprob lists and text pieces (when streaming), then each choice's result;
        raises a choice's error, or :class:`ClientGone`."""
        loop = asyncio.get_running_loop()
        checked = loop.time()
        open_choices = len(self.jobs)
        while open_choices:
            try:
                item = self._queue.get_nowait() if not self._queue.empty() else await self._next()
            except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
                item = None
            if loop.time() - checked >= self.poll_s:  # also while pieces flow that send nothing (held back)
                checked = loop.time()
                if is_gone():
                    raise ClientGone("the client disconnected")
            if item is None:
                continue
            index, value = item
            if isinstance(value, _Outcome):
                if isinstance(value.value, BaseException):
                    raise value.value
                open_choices -= 1
                value = value.value
            yield index, value

    async def _next(self):
        return await asyncio.wait_for(self._queue.get(), self.poll_s)

    async def results(self, is_gone: Callable[[], bool] = lambda: False) -> list[GenerationResult]:
        """Every choice's whole completion, in index order (non-streamed requests)."""
        results: dict[int, GenerationResult] = {}
        async for index, item in self.items(is_gone):
            if isinstance(item, GenerationResult):
                results[index] = item
        return [results[i] for i in range(len(self.jobs))]

    def close(self) -> None:
        """Cancel the jobs that have not ended (their batch slots or queue places are freed at the next step)."""
        for job in self.jobs:
            if not job.done:
                job.cancel()


def _put(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int, value: Any) -> None:
    loop.call_soon_threadsafe(queue.put_nowait, (index, value))

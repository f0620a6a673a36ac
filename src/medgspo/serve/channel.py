"""The asyncio side of one request to the batcher: submit it, then await its text pieces and its result.

    channel = JobChannel(batcher, prompt_ids, options, stop=(), stream=True)   # QueueFull: refuse with 503
    async for item in channel.items(is_gone):       # str pieces, then the GenerationResult
        ...
    channel.close()                                 # cancels the job if it has not ended (the client went away)

The batcher calls back on its own thread; the callbacks only hand each value to this request's ``asyncio.Queue``
through ``loop.call_soon_threadsafe``. ``is_gone()`` is asked every ``poll_s`` seconds, so a client that disconnects
while it waits (in the queue, or for a non-streamed answer) frees its place too, not only one whose stream write
fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.batcher import Batcher, Job
from medgspo.serve.engine import GenerationResult

logger = logging.getLogger(__name__)


class ClientGone(ConnectionError):
    """The client disconnected before its answer was complete."""


class _Outcome:
    def __init__(self, value: GenerationResult | BaseException) -> None:
        self.value = value


class JobChannel:
    """One submitted job and the queue its pieces arrive in."""

    def __init__(
        self,
        batcher: Batcher,
        prompt_ids: list[int],
        options: SamplingOptions,
        *,
        stop: tuple[str, ...] = (),
        opens_thinking: bool = True,
        stream: bool = False,
        poll_s: float = 0.5,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        put = partial(loop.call_soon_threadsafe, self._queue.put_nowait)
        self.poll_s = poll_s
        self.job = Job(
            prompt_ids,
            options,
            stop,
            on_text=put if stream else None,
            on_done=lambda outcome: put(_Outcome(outcome)),
            opens_thinking=opens_thinking,
        )
        batcher.submit(self.job)

    async def items(self, is_gone: Callable[[], bool] = lambda: False) -> AsyncIterator[str | GenerationResult]:
        """Text pieces (when streaming), then the result; raises the batcher's error, or :class:`ClientGone`."""
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
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
            if isinstance(item, _Outcome):
                if isinstance(item.value, BaseException):
                    raise item.value
                yield item.value
                return
            yield item

    async def _next(self):
        return await asyncio.wait_for(self._queue.get(), self.poll_s)

    async def result(self, is_gone: Callable[[], bool] = lambda: False) -> GenerationResult:
        """The whole completion (non-streamed requests)."""
        async for item in self.items(is_gone):
            if isinstance(item, GenerationResult):
                return item
        raise RuntimeError("the batcher ended a request without a result")

    def close(self) -> None:
        """Cancel the job unless it has ended (its batch slot or queue place is freed at the next step)."""
        if not self.job.done:
            self.job.cancel()

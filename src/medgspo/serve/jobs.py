"""What the batcher of ``medgspo serve`` schedules: a request's :class:`Job`, the :class:`Row` it becomes while it
runs, the counters ``/health`` shows (:class:`Stats`), and :class:`QueueFull` for a request that finds no room.

A row owns what is private to its request: its incremental decoder, its stop matcher, its random stream (its own
``seed``), the counts its penalties read, the logprobs it reports and, when its sampling fails, its own error: one
request's failure never leaves this row.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.detokenize import IncrementalDecoder, StopMatcher
from medgspo.serve.engine import GenerationResult
from medgspo.serve.sampling import LogitRules, TokenLogprob


class QueueFull(Exception):
    """Every batch slot and queue place is taken; ``retry_after`` is a suggested wait in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One request for the batcher: the prompt's token ids, its sampling options and stop strings, and callbacks."""

    prompt_ids: list[int]
    options: SamplingOptions
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None  # each final piece of text (stop strings never included)
    on_done: Callable[[GenerationResult | BaseException], None] | None = None  # exactly once
    opens_thinking: bool = True
    rules: LogitRules = LogitRules()  # presence / frequency penalties and logit bias
    logprobs: int | None = None  # report each generated token's logprob and this many top alternatives
    prompt_logprobs: int | None = None  # also each prompt token's (``echo`` with ``logprobs`` on /v1/completions)
    on_logprobs: Callable[[list[TokenLogprob]], None] | None = None  # the entries of the next ``on_text`` piece
    cancelled: bool = field(default=False, init=False)
    done: bool = field(default=False, init=False)

    def cancel(self) -> None:
        """Stop generating (thread-safe); ``on_done`` then gets a result with ``finish_reason="cancelled"``."""
        self.cancelled = True


@dataclass
class Stats:
    """Counters since start; ``decoded_rows / decode_steps`` is the mean batch size of the decode steps."""

    completed: int = 0
    cancelled: int = 0
    rejected: int = 0
    failed: int = 0
    prefills: int = 0
    prefill_chunks: int = 0
    decode_steps: int = 0
    decoded_rows: int = 0
    largest_batch: int = 0
    seconds_per_request: float = 0.0  # moving average of admission-to-end time, for Retry-After


FAILED = -1  # the "token" of a row whose sampling failed: it leaves the batch with its own error


class Row:
    """A running job: its decoder, stop matcher, random stream and tokens so far."""

    def __init__(self, job: Job, decode: Callable[[list[int]], str], generator: Any) -> None:
        self.job = job
        self.text = IncrementalDecoder(decode)
        self.stops = StopMatcher(job.stop)
        self.generator = generator
        self.started = time.monotonic()
        self.error: BaseException | None = None  # why sampling failed for this row alone
        self.counts: Counter[int] = Counter()  # generated tokens, for the penalties
        self.logprobs: list[TokenLogprob] = []  # one per generated token when the job asks for logprobs
        self.unsent = 0  # logprobs not yet handed to ``on_logprobs`` (their text is still held back)
        self.prompt_logprobs: list[TokenLogprob | None] | None = None  # the first is None: nothing predicts it

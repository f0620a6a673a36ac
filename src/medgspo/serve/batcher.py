"""The continuous batcher of ``medgspo serve``: one thread owns the model and decodes all running requests together.

    batcher = Batcher(engine, max_batch_size=16, max_queue=64).start()
    job = batcher.submit(Job(prompt_ids, options, stop=("。",), on_text=print, on_done=print))  # or QueueFull
    job.cancel()                # the client went away: its row leaves the batch at the next step
    batcher.health()            # queue depth, batch size, counters
    batcher.close()

Each turn of the loop is one forward pass (:mod:`medgspo.serve.kvcache`): a *prefill* of the requests that arrived
since the last turn, whose rows then join the running batch, one *chunk* of a long prompt's prefill
(:mod:`medgspo.serve.prefill`; chunks and decode steps alternate, so a long prompt never stalls the batch), or one
*decode* step for every running row. Each row has its own ``max_tokens``, sampling settings, penalties, seed, stop
strings and logprobs (:mod:`medgspo.serve.choose`, :mod:`medgspo.serve.detokenize`), and leaves the batch as soon as
it ends (end-of-sequence token, a stop string, ``max_tokens``, or cancelled) without waiting for the longest. ``on_text`` and ``on_done`` are called on the
batcher's thread; they must only hand the value over (``loop.call_soon_threadsafe``). Tests drive :meth:`step` by
hand instead of calling :meth:`start`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from medgspo.serve import kvcache
from medgspo.serve.choose import choose_tokens
from medgspo.serve.engine import ChatEngine, GenerationResult
from medgspo.serve.jobs import FAILED, Job, QueueFull, Row, Stats
from medgspo.serve.prefill import DEFAULT_CHUNK, ChunkedPrompt, needs_chunks

logger = logging.getLogger(__name__)


class Batcher:
    """Runs jobs on one model in a continuously refilled batch of at most ``max_batch_size`` rows."""

    def __init__(
        self, engine: ChatEngine, max_batch_size: int = 16, max_queue: int = 64, prefill_chunk: int = DEFAULT_CHUNK
    ) -> None:
        import torch

        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.stats = Stats()
        self._waiting: deque[Job] = deque()
        self._admitting: list[Job] = []
        self._rows: list[Row] = []
        self._chunked: deque[ChunkedPrompt] = deque()  # admitted long prompts, prefilled a chunk per turn
        self._chunk_turn = False  # a chunk and a decode step take turns
        self._batch: kvcache.Batch | None = None
        self._pending: Any = None  # (rows,) the token each row feeds next
        self._joinable: bool | None = None  # known after the first prefill (kvcache.can_join)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._outbox: list[tuple[Job, GenerationResult | BaseException]] = []  # on_done calls, made after a step
        self._generator = torch.Generator()
        self._generator.seed()
        self._eos = engine.eos_token_ids()
        self._pad = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else 0

    # ---- the request side (any thread) -------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """Queue ``job``; :class:`QueueFull` when ``max_batch_size`` run and ``max_queue`` wait already."""
        return self.submit_all([job])[0]

    def submit_all(self, jobs: list[Job]) -> list[Job]:
        """Queue all ``jobs`` (the choices of one request) or none: :class:`QueueFull` when they do not all fit."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            in_use = len(self._waiting) + len(self._admitting) + len(self._rows) + len(self._chunked)
            if in_use + len(jobs) > self.max_batch_size + self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(self.retry_after())
            self._waiting.extend(jobs)
            self._cond.notify()
        return jobs

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one request's time here (1 to 60)."""
        return max(1, min(60, math.ceil(self.stats.seconds_per_request)))

    def health(self) -> dict[str, Any]:
        """Queue depth, current batch size, limits and counters (what ``GET /health`` shows)."""
        stats = self.stats
        mean = stats.decoded_rows / stats.decode_steps if stats.decode_steps else 0.0
        return {
            "queue": len(self._waiting),
            "batch_size": len(self._rows),
            "prefilling": len(self._chunked),
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
            "largest_batch": stats.largest_batch,
            "mean_batch_size": round(mean, 2),
            "requests": {
                "completed": stats.completed,
                "cancelled": stats.cancelled,
                "rejected": stats.rejected,
                "failed": stats.failed,
            },
            "steps": {"prefill": stats.prefills, "prefill_chunks": stats.prefill_chunks, "decode": stats.decode_steps},
        }

    # ---- the model side (the batcher's thread) -------------------------------------------------------------------
    def start(self) -> Batcher:
        """Run :meth:`step` on a daemon thread whenever there is work."""
        self._thread = threading.Thread(target=self._loop, name="medgspo-batcher", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread; jobs still waiting or running end with an error."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._fail_all(RuntimeError("the server is shutting down"), include_waiting=True)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._rows and not self._chunked:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self.step()
            except Exception as exc:  # a failed forward pass fails its requests, not the server
                logger.exception(
                    "Generation step failed; failing %d request(s)", len(self._rows) + len(self._admitting)
                )
                self._fail_all(exc)

    def step(self) -> bool:
        """One forward pass: prefill newly admitted jobs, else a chunk of a long prompt and a decode step of every
        row in turn. False: idle."""
        import torch

        try:
            with torch.inference_mode():
                self._drop_cancelled()
                admitted = self._admit()
                can_chunk = self._chunked and (self._joinable is not False or not self._rows)
                if admitted:
                    self._prefill(admitted)
                elif can_chunk and (self._chunk_turn or not self._rows):
                    self._chunk_turn = False
                    self._advance_chunk()
                elif self._rows:
                    self._chunk_turn = True
                    self._decode()
                else:
                    return False
            return True
        finally:
            self._deliver()  # after the finished rows have left, so /health agrees with what clients saw

    def _admit(self) -> list[Job]:
        """Move waiting jobs into the batch's free places: short prompts to be prefilled now (returned), long ones
        (or those whose prompt logprobs are asked for) to the chunked prefill."""
        with self._cond:
            room = self.max_batch_size - len(self._rows) - len(self._chunked)
            if (self._rows or self._chunked) and self._joinable is False:
                room = 0  # this model's cache cannot be joined: new rows wait until the batch is empty
            while room > 0 and self._waiting:
                job = self._waiting.popleft()
                if job.cancelled:
                    self._finish_cancelled(job)
                    continue
                if needs_chunks(job.prompt_ids, job.prompt_logprobs, self.prefill_chunk):
                    for row in self._new_rows([job]):
                        self._chunked.append(ChunkedPrompt(row, self.prefill_chunk))
                else:
                    self._admitting.append(job)
                room -= 1
            return list(self._admitting)

    def _prefill(self, jobs: list[Job]) -> None:
        rows = self._new_rows(jobs)  # a job whose row cannot be set up fails alone, before the forward pass
        with self._cond:
            self._admitting = [row.job for row in rows]
        if not rows:
            return
        batch = kvcache.prefill(self.engine.model, [row.job.prompt_ids for row in rows], self._pad)
        self.stats.prefills += 1
        with self._cond:
            self._admitting.clear()
        self._start(rows, batch)

    def _advance_chunk(self) -> None:
        """One chunk of the oldest long prompt; a failure fails that request alone; a finished prompt starts."""
        part = self._chunked[0]
        try:
            part.advance(self.engine.model, self._pad)
        except Exception as exc:
            with self._cond:
                self._chunked.popleft()
            self._fail_one(part.row.job, exc)
            return
        self.stats.prefill_chunks += 1
        if part.done:
            with self._cond:
                self._chunked.popleft()
            self._start([part.row], part.batch)

    def _start(self, rows: list[Row], batch: kvcache.Batch) -> None:
        """Rows whose prompt is in ``batch``: their first token, then they join the running batch."""
        if self._joinable is None:
            self._joinable = kvcache.can_join(batch.cache)
            logger.info("Continuous batching: new requests %s.", "join running batches" if self._joinable else "wait")
        tokens = choose_tokens(batch.logits, rows, self._generator)
        stay = self._advance(rows, tokens.tolist())
        if not stay:
            return
        if len(stay) < len(rows):
            batch = kvcache.keep(batch, stay)
        pending = tokens[stay]
        if self._batch is not None and self._rows:
            batch, pending = kvcache.join(self._batch, batch), _cat(self._pending, pending)
        self._batch, self._pending = batch, pending
        with self._cond:
            self._rows += [rows[i] for i in stay]
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._rows))

    def _decode(self) -> None:
        self._batch = kvcache.decode(self.engine.model, self._batch, self._pending)
        self.stats.decode_steps += 1
        self.stats.decoded_rows += len(self._rows)
        tokens = choose_tokens(self._batch.logits, self._rows, self._generator)
        self._leave(self._advance(self._rows, tokens.tolist()), tokens)

    def _leave(self, stay: list[int], tokens: Any) -> None:
        """Keep only the rows ``stay``; ``tokens`` are the rows' next tokens."""
        if len(stay) == len(self._rows):
            self._pending = tokens
            return
        with self._cond:
            self._rows = [self._rows[i] for i in stay]
        if stay:
            self._batch, self._pending = kvcache.keep(self._batch, stay), tokens[stay]
        else:
            self._batch, self._pending = None, None

    def _drop_cancelled(self) -> None:
        with self._cond:
            gone = [job for job in self._waiting if job.cancelled]
            if gone:
                self._waiting = deque(job for job in self._waiting if not job.cancelled)
            parts = [part for part in self._chunked if part.row.job.cancelled]
            if parts:
                self._chunked = deque(part for part in self._chunked if not part.row.job.cancelled)
        for job in gone:
            self._finish_cancelled(job)
        for part in parts:
            self._finish(part.row, "cancelled")
        if any(row.job.cancelled for row in self._rows):
            stay = [i for i, row in enumerate(self._rows) if not row.job.cancelled]
            for row in self._rows:
                if row.job.cancelled:
                    self._finish(row, "cancelled")
            self._leave(stay, self._pending)

    # ---- tokens -----------------------------------------------------------------------------------------------------
    def _new_rows(self, jobs: list[Job]) -> list[Row]:
        """A row per job; a job whose row cannot be made (its seed, its settings) ends with that error alone."""
        rows = []
        for job in jobs:
            try:
                rows.append(self._new_row(job))
            except Exception as exc:
                self._fail_one(job, exc)
        return rows

    def _fail_one(self, job: Job, exc: BaseException) -> None:
        logger.warning("A request failed alone and left the batch: %s", exc)
        self.stats.failed += 1
        self._done(job, exc)

    def _new_row(self, job: Job) -> Row:
        import torch

        generator = None
        if job.options.seed is not None:
            generator = torch.Generator().manual_seed(job.options.seed)
        return Row(job, self.engine.decode, generator)

    def _advance(self, rows: list[Row], tokens: list[int]) -> list[int]:
        """Append each row's token, stream its text, end finished rows; the indices of the rows that go on."""
        stay = []
        for index, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            if token == FAILED:
                self._fail_one(row.job, row.error or RuntimeError("sampling failed"))
                continue
            row.counts[token] += 1
            if token in self._eos:
                row.text.ids.append(token)  # counted in completion_tokens, never decoded
                self._finish(row, "stop")
                continue
            self._emit(row, row.stops.feed(row.text.add(token)))
            if row.stops.hit:
                self._finish(row, "stop")
            elif len(row.text.ids) >= row.job.options.max_new_tokens:
                self._finish(row, "length")
            else:
                stay.append(index)
        return stay

    def _emit(self, row: Row, piece: str, last: bool = False) -> None:
        """Hand a final piece of text to the client, after the logprobs of the tokens that made it."""
        job = row.job
        if (piece or last) and job.on_logprobs is not None and row.unsent < len(row.logprobs):
            entries, row.unsent = row.logprobs[row.unsent :], len(row.logprobs)
            _call(job.on_logprobs, entries)
        if piece and job.on_text is not None:
            _call(job.on_text, piece)

    def _finish(self, row: Row, reason: str) -> None:
        if reason != "cancelled":
            tail = row.stops.feed(row.text.flush()) + row.stops.flush() if not row.stops.hit else ""
            self._emit(row, tail, last=True)
        job = row.job
        ids = list(row.text.ids)
        result = GenerationResult(row.stops.text, len(job.prompt_ids), len(ids), reason, job.opens_thinking, ids)
        if job.logprobs is not None:
            result.logprobs = list(row.logprobs)
        result.prompt_logprobs = row.prompt_logprobs
        elapsed = time.monotonic() - row.started
        stats = self.stats
        if reason == "cancelled":
            stats.cancelled += 1
        else:
            stats.completed += 1
            weight = 0.2 if stats.completed > 1 else 1.0
            stats.seconds_per_request += weight * (elapsed - stats.seconds_per_request)
        self._done(job, result)

    def _finish_cancelled(self, job: Job) -> None:
        self.stats.cancelled += 1
        self._done(job, GenerationResult("", len(job.prompt_ids), 0, "cancelled", job.opens_thinking))

    def _done(self, job: Job, outcome: GenerationResult | BaseException) -> None:
        job.done = True
        self._outbox.append((job, outcome))

    def _deliver(self) -> None:
        outbox, self._outbox = self._outbox, []
        for job, outcome in outbox:
            if job.on_done is not None:
                _call(job.on_done, outcome)

    def _fail_all(self, exc: BaseException, include_waiting: bool = False) -> None:
        with self._cond:
            jobs = [row.job for row in self._rows] + self._admitting + [part.row.job for part in self._chunked]
            self._chunked.clear()
            if include_waiting:
                jobs += list(self._waiting)
                self._waiting.clear()
            self._rows, self._admitting = [], []
        self._batch, self._pending = None, None
        for job in jobs:
            if not job.done:
                self.stats.failed += 1
                self._done(job, exc)
        self._deliver()


def _cat(first: Any, second: Any) -> Any:
    import torch

    return torch.cat([first, second])


def _call(callback: Callable[[Any], None], value: Any) -> None:
    """Run a client callback; a client that is gone (closed event loop) must not stop the batch."""
    try:
        callback(value)
    except Exception:
        logger.debug("A request callback failed (client gone?)", exc_info=True)

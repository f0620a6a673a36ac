"""Chunked prefill: a long prompt goes through the model a chunk at a time, between the batch's decode steps.

    part = ChunkedPrompt(row, chunk=512)
    while not part.done:
        part.advance(model, pad_id)      # one forward pass over the next 512 prompt tokens (kvcache.extend)
    part.batch                           # a one-row batch, ready to join the running one

A prompt of 4,000 tokens prefilled in one forward pass holds the batcher's thread for all of it, and every running
stream and every short request waits that long; vLLM's chunked prefill splits it so the batch keeps decoding in
between. The batcher alternates: one chunk, one decode step. A prompt whose logprobs were asked for
(``/v1/completions`` with ``echo`` and ``logprobs``) takes this path whatever its length, since it needs the logits
at every position, and chunks bound their memory (``chunk x vocabulary`` floats).
"""

from __future__ import annotations

from typing import Any

from medgspo.serve import kvcache
from medgspo.serve.jobs import Row
from medgspo.serve.sampling import token_logprobs

DEFAULT_CHUNK = 512  # prompt tokens per forward pass (``medgspo serve --prefill_chunk``)


class ChunkedPrompt:
    """One row's prompt, prefilled ``chunk`` tokens per :meth:`advance`; its prompt logprobs when the job asks."""

    def __init__(self, row: Row, chunk: int = DEFAULT_CHUNK) -> None:
        self.row = row
        self.chunk = chunk
        self.fed = 0
        self.batch: kvcache.Batch | None = None
        if row.job.prompt_logprobs is not None:
            row.prompt_logprobs = [None]  # nothing predicts the first prompt token

    @property
    def done(self) -> bool:
        return self.fed >= len(self.row.job.prompt_ids)

    def advance(self, model: Any, pad_id: int) -> None:
        """Feed the next chunk of the prompt."""
        prompt = self.row.job.prompt_ids
        ids = prompt[self.fed : self.fed + self.chunk]
        scoring = self.row.job.prompt_logprobs is not None
        if self.batch is None:
            self.batch = kvcache.prefill(model, [ids], pad_id, all_logits=scoring)
        else:
            self.batch = kvcache.extend(model, self.batch, ids, all_logits=scoring)
        start, self.fed = self.fed, self.fed + len(ids)
        if scoring:
            self._score(start)

    def _score(self, start: int) -> None:
        """Logprobs of the prompt tokens this chunk predicts: position ``start + j`` predicts token ``start + j + 1``."""
        targets = self.row.job.prompt_ids[start + 1 : self.fed + 1]
        logits = self.batch.prompt_logits[0, : len(targets)]
        self.row.prompt_logprobs += token_logprobs(logits, targets, self.row.job.prompt_logprobs)
        self.batch.prompt_logits = None  # (chunk, vocab) floats: not kept past this chunk


def needs_chunks(prompt_ids: list[int], prompt_logprobs: int | None, chunk: int) -> bool:
    """Whether a prompt is prefilled alone in chunks: longer than one chunk, or its logprobs are asked for.

    >>> needs_chunks([1] * 600, None, 512), needs_chunks([1] * 10, None, 512), needs_chunks([1] * 10, 0, 512)
    (True, False, True)
    """
    return len(prompt_ids) > chunk or prompt_logprobs is not None

"""The next token of every running row of the batcher, each by its own request's rules (torch; no model).

    tokens = choose_tokens(logits, rows, generator)     # (rows,) token ids; FAILED where a row's sampling failed

For each row: its logit rules first (penalties over what it generated, ``logit_bias``), then greedy or its own
temperature / top-k / top-p with its own random stream (:mod:`medgspo.serve.sampling`). A row that asks for
logprobs gets the chosen token's log-probability under the model's raw distribution, with its top alternatives,
appended to ``row.logprobs``. When the batch's choice fails, each row is chosen alone, and a row that still fails
gets :data:`~medgspo.serve.jobs.FAILED` and keeps its error: it leaves the batch alone, the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from medgspo.serve.jobs import FAILED, Row
from medgspo.serve.sampling import RowSettings, apply_rules, next_tokens, token_logprobs

logger = logging.getLogger(__name__)


def choose_tokens(logits: Any, rows: list[Row], generator: Any) -> Any:
    """One token per row (``logits``: (rows, vocab)); ``generator`` serves the rows without a seed of their own."""
    import torch

    try:
        return _choose(logits, rows, generator)
    except Exception:
        tokens = []
        for i, row in enumerate(rows):
            try:
                tokens.append(int(_choose(logits[i : i + 1], [row], generator)[0]))
            except Exception as exc:
                row.error = exc
                tokens.append(FAILED)
        return torch.tensor(tokens, device=logits.device)


def _choose(logits: Any, rows: list[Row], generator: Any) -> Any:
    import torch

    options = [row.job.options for row in rows]
    adjusted = apply_rules(logits, [row.job.rules for row in rows], [row.counts for row in rows])
    if all(o.temperature == 0 for o in options):
        tokens = adjusted.argmax(dim=-1)
    else:
        uniforms = [
            float(torch.rand((), generator=row.generator or generator)) if o.temperature > 0 else 0.0
            for row, o in zip(rows, options, strict=True)
        ]
        settings = RowSettings.stack(options, logits.device)
        tokens = next_tokens(adjusted, settings, torch.tensor(uniforms, device=logits.device))
    _record_logprobs(logits, rows, tokens)
    return tokens


def _record_logprobs(logits: Any, rows: list[Row], tokens: Any) -> None:
    wanted = [i for i, row in enumerate(rows) if row.job.logprobs is not None]
    if not wanted:
        return
    top_n = max(rows[i].job.logprobs for i in wanted)
    entries = token_logprobs(logits[wanted], tokens[wanted].tolist(), top_n)
    for i, entry in zip(wanted, entries, strict=True):
        rows[i].logprobs.append(dataclasses.replace(entry, top=entry.top[: rows[i].job.logprobs]))

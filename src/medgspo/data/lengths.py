"""Token lengths of records as a trainer sees them: counting a whole SFT conversation, shortening a reasoning."""

from __future__ import annotations

from typing import Any

from medgspo.data.chat_format import ChatFormat


def token_counter(tokenizer: Any, chat_format: ChatFormat):
    """Count the tokens of a record's full SFT conversation as the trainer will see it."""

    def count(record: dict[str, Any]) -> int:
        ex = chat_format.sft_example(record)
        ids = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    return count


def cot_truncator(tokenizer: Any):
    """Shorten a record's reasoning by ``excess`` tokens (plus a small margin), keeping its answer."""

    def truncate(record: dict[str, Any], excess: int) -> dict[str, Any]:
        ids = tokenizer(record["Complex_CoT"], add_special_tokens=False)["input_ids"]
        keep = max(0, len(ids) - excess - 8)
        return {**record, "Complex_CoT": tokenizer.decode(ids[:keep]).strip()}

    return truncate

"""The one chat format shared by SFT, GSPO, evaluation, chat and serving.

A record of the medical-o1 schema (``Question``, ``Complex_CoT``, ``Response``) becomes:

* an SFT example: ``prompt`` = the user turn, ``completion`` = one assistant turn whose content is
  ``<think>\\n{Complex_CoT}\\n</think>\\n\\n{Response}`` (TRL's conversational prompt-completion format, so the loss
  falls on the assistant turn only);
* an RL example: ``prompt`` = the user turn, plus ``question`` and ``reference`` columns that the judge reads
  (and the record's optional ``key_terms``/``ruled_out``, see :mod:`medgspo.data.records`).

A generated completion is split back into ``(thinking, answer, well_formed)`` by :func:`split_completion`. Qwen3.5
chat templates end the generation prompt with ``<think>\\n``, so completions usually start *inside* the thinking
block and carry no opening tag.

The format is saved as ``chat_format.json`` next to every checkpoint (:meth:`ChatFormat.save`) so inference uses
exactly what training used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from medgspo.data.records import TERM_FIELDS

logger = logging.getLogger(__name__)

FORMAT_FILE = "chat_format.json"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Special tokens that may survive decoding when `skip_special_tokens=False`.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")


class Split(NamedTuple):
    """A completion split into its reasoning and its final answer."""

    thinking: str
    answer: str
    well_formed: bool


def split_completion(text: str) -> Split:
    """Split a model completion into ``(thinking, answer, well_formed)``.

    ``well_formed`` means: exactly one ``</think>``, at most one ``<think>`` and only before it, and a non-empty
    answer. With several ``</think>`` the answer is the text after the last one (the judge never reads reasoning).
    With no ``</think>`` everything is thinking and the answer is empty.

    >>> split_completion("我先想一想。\\n</think>\\n\\n诊断为肺炎。")
    Split(thinking='我先想一想。', answer='诊断为肺炎。', well_formed=True)
    >>> split_completion("<think>\\n只有思考")
    Split(thinking='只有思考', answer='', well_formed=False)
    """
    for marker in _END_MARKERS:
        text = text.replace(marker, "")
    n_close = text.count(THINK_CLOSE)
    if n_close == 0:
        return Split(_strip_tags(text), "", False)
    head, _, answer = text.rpartition(THINK_CLOSE)
    answer = answer.strip()
    opens_ok = THINK_OPEN not in head or (head.lstrip().startswith(THINK_OPEN) and head.count(THINK_OPEN) == 1)
    well_formed = n_close == 1 and opens_ok and bool(answer) and THINK_OPEN not in answer
    return Split(_strip_tags(head), answer, well_formed)


def shorten(text: str, max_chars: int | None) -> str:
    """The first ``max_chars`` characters of ``text``, cut back to the last clause end when one lies in the second
    half (``None``: all of it).

    >>> shorten("我先梳理关键发现：老年男性，典型缺血性胸痛3小时", 16)
    '我先梳理关键发现：老年男性，'
    >>> shorten("短", 16), shorten("长文本", None)
    ('短', '长文本')
    """
    if max_chars is None or len(text) <= max_chars:
        return text
    head = text[:max_chars]
    end = max(head.rfind(p) for p in "，。；：,;:")
    return head[: end + 1] if end >= max_chars // 2 else head


def _strip_tags(text: str) -> str:
    return text.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()


def completion_text(completion: Any) -> str:
    """Text of a TRL completion: a plain string or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


@dataclass
class ChatFormat:
    """How questions become prompts and how answers are laid out; saved beside every checkpoint."""

    name: str = "medgspo-think-v1"
    system_prompt: str | None = None
    enable_thinking: bool = True
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    max_think_chars: int | None = None  # SFT examples keep at most this much reasoning (None: all of it)

    @classmethod
    def from_arguments(cls, format_args: Any) -> ChatFormat:
        """The format ``--system_prompt`` and ``--enable_thinking`` describe (:class:`~medgspo.data.arguments.FormatArguments`)."""
        return cls(
            system_prompt=format_args.system_prompt,
            enable_thinking=format_args.enable_thinking,
            max_think_chars=getattr(format_args, "max_think_chars", None),
        )

    # ---- building examples -------------------------------------------------------------------------------------
    def messages(self, question: str) -> list[dict[str, str]]:
        """The prompt messages for one question (system turn first when configured)."""
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": question.strip()})
        return msgs

    def assistant_content(self, thinking: str, answer: str) -> str:
        """``<think>\\n{thinking}\\n</think>\\n\\n{answer}``."""
        return f"{THINK_OPEN}\n{thinking.strip()}\n{THINK_CLOSE}\n\n{answer.strip()}"

    def sft_example(self, record: dict[str, str]) -> dict[str, Any]:
        """A conversational prompt-completion example for TRL's ``SFTTrainer``."""
        content = self.assistant_content(shorten(record["Complex_CoT"], self.max_think_chars), record["Response"])
        return {"prompt": self.messages(record["Question"]), "completion": [{"role": "assistant", "content": content}]}

    def rl_example(self, record: dict[str, Any]) -> dict[str, Any]:
        """A prompt for TRL's ``GRPOTrainer`` with the judge's ``question`` and ``reference`` columns, and the
        record's optional ``key_terms`` and ``ruled_out`` (an empty list when it has none, so every row of a
        dataset has the same columns).

        >>> ChatFormat().rl_example({"Question": "问？", "Complex_CoT": "想", "Response": "答。"})["key_terms"]
        []
        """
        return {
            "prompt": self.messages(record["Question"]),
            "question": record["Question"].strip(),
            "reference": record["Response"].strip(),
            **{name: list(record.get(name) or []) for name in TERM_FIELDS},
        }

    def chat_template_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``tokenizer.apply_chat_template`` (``enable_thinking`` and friends)."""
        return {"enable_thinking": self.enable_thinking, **self.template_kwargs}

    def render_prompt(self, tokenizer: Any, question: str) -> str:
        """The generation prompt text for one question, as the model sees it."""
        return tokenizer.apply_chat_template(
            self.messages(question), tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs()
        )

    def split(self, text: str) -> Split:
        """Split a completion with this format's tags."""
        return split_completion(text)

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``chat_format.json`` into ``directory`` and return its path."""
        path = Path(directory) / FORMAT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ChatFormat:
        """Read the format saved beside a checkpoint; fall back to the default (with a warning) if none is there."""
        path = Path(directory) / FORMAT_FILE
        if not path.is_file():
            logger.warning("No %s in %s; using the default chat format.", FORMAT_FILE, directory)
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
